-- Per-user gateway settings.
CREATE TABLE user_settings (
    user_id          VARCHAR(255) PRIMARY KEY,
    fallback_policy  TEXT NOT NULL CHECK (fallback_policy IN ('user_only', 'user_then_system')),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per gateway request, written in batches off the hot path.
CREATE TABLE usage_records (
    id             BIGSERIAL PRIMARY KEY,
    user_id        VARCHAR(255) NOT NULL,
    provider       VARCHAR(50) NOT NULL,
    model          TEXT NOT NULL,
    credential     TEXT NOT NULL CHECK (credential IN ('user', 'system')),
    status         INTEGER NOT NULL,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    latency_ms     BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_user_created ON usage_records (user_id, created_at);
