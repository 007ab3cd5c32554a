-- Who authenticates each user: 'local' (this service), an OIDC issuer URL, or NULL for
-- users stored before this was recorded (claimed by an issuer only with the same email).
ALTER TABLE users ADD COLUMN auth_source TEXT;
