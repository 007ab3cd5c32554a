CREATE TABLE execution_servers (
    id                 TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    name               TEXT NOT NULL,
    server_type        TEXT NOT NULL CHECK (server_type IN ('ssh', 'local', 'docker', 'kubernetes')),
    connection_config  TEXT NOT NULL DEFAULT '{}',
    workspace_path     TEXT,
    is_default         BOOLEAN NOT NULL DEFAULT 0,
    is_active          BOOLEAN NOT NULL DEFAULT 1,
    last_tested_at     TEXT,
    test_status        TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    CONSTRAINT execution_servers_user_name UNIQUE (user_id, name)
);
CREATE UNIQUE INDEX execution_servers_one_default ON execution_servers (user_id) WHERE is_default;
