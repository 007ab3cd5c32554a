ALTER TABLE users DROP COLUMN auth_source;
