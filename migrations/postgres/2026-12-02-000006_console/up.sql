-- The web console: an operator role apart from tiers, disabled accounts, server-side sessions
-- and single-use sign-in links. Only SHA-256 hashes of session ids and link secrets are stored.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'operator'));
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;

CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    -- The gateway token the session was opened with: revoking it ends the session.
    token_id      UUID REFERENCES gateway_tokens (id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_user_id ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

CREATE TABLE login_links (
    id_hash     TEXT PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX login_links_user_id ON login_links (user_id);
