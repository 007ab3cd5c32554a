-- Local users (embedded mode; with Keycloak, a snapshot created on first sight).
CREATE TABLE users (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    tier        TEXT NOT NULL CHECK (tier IN ('trial', 'free', 'starter', 'professional', 'enterprise')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Gateway tokens: only a SHA-256 of the token is stored, plus a visible prefix.
CREATE TABLE gateway_tokens (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX gateway_tokens_user_id ON gateway_tokens (user_id);

-- Users' provider keys: the legacy table's shape, plus key_preview so listing never decrypts.
-- user_id stays VARCHAR as in the legacy service (it may hold a Keycloak subject).
CREATE TABLE user_provider_keys (
    id                 UUID PRIMARY KEY,
    user_id            VARCHAR(255) NOT NULL,
    provider           VARCHAR(50) NOT NULL,
    api_key_encrypted  TEXT NOT NULL,
    key_preview        VARCHAR(32) NOT NULL DEFAULT '****',
    enabled            BOOLEAN NOT NULL DEFAULT TRUE,
    metadata           JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_provider_keys_user_provider UNIQUE (user_id, provider)
);
