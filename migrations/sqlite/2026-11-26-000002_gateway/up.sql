CREATE TABLE user_settings (
    user_id          TEXT PRIMARY KEY NOT NULL,
    fallback_policy  TEXT NOT NULL CHECK (fallback_policy IN ('user_only', 'user_then_system')),
    updated_at       TEXT NOT NULL
);

CREATE TABLE usage_records (
    id             INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id        TEXT NOT NULL,
    provider       TEXT NOT NULL,
    model          TEXT NOT NULL,
    credential     TEXT NOT NULL CHECK (credential IN ('user', 'system')),
    status         INTEGER NOT NULL,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    latency_ms     BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);
CREATE INDEX usage_records_user_created ON usage_records (user_id, created_at);
