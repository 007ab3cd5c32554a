-- Same schema as migrations/postgres, in SQLite's types: UUIDs as canonical text,
-- timestamps as RFC 3339 text, JSON as text.
CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    tier        TEXT NOT NULL CHECK (tier IN ('trial', 'free', 'starter', 'professional', 'enterprise')),
    created_at  TEXT NOT NULL
);

CREATE TABLE gateway_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    expires_at    TEXT,
    revoked_at    TEXT
);
CREATE INDEX gateway_tokens_user_id ON gateway_tokens (user_id);

CREATE TABLE user_provider_keys (
    id                 TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    provider           TEXT NOT NULL,
    api_key_encrypted  TEXT NOT NULL,
    key_preview        TEXT NOT NULL DEFAULT '****',
    enabled            BOOLEAN NOT NULL DEFAULT 1,
    metadata           TEXT NOT NULL DEFAULT '{}',
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    CONSTRAINT user_provider_keys_user_provider UNIQUE (user_id, provider)
);
