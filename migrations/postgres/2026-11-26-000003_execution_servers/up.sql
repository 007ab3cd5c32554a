-- Users' execution servers: the legacy table's shape. Secret fields of connection_config are
-- stored sealed ({"$sealed": "<Fernet token>"}), never in clear.
CREATE TABLE execution_servers (
    id                 UUID PRIMARY KEY,
    user_id            VARCHAR(255) NOT NULL,
    name               VARCHAR(255) NOT NULL,
    server_type        VARCHAR(50) NOT NULL CHECK (server_type IN ('ssh', 'local', 'docker', 'kubernetes')),
    connection_config  JSONB NOT NULL DEFAULT '{}'::jsonb,
    workspace_path     VARCHAR(1024),
    is_default         BOOLEAN NOT NULL DEFAULT FALSE,
    is_active          BOOLEAN NOT NULL DEFAULT TRUE,
    last_tested_at     TIMESTAMPTZ,
    test_status        VARCHAR(50),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT execution_servers_user_name UNIQUE (user_id, name)
);
-- At most one default per user, held by the database.
CREATE UNIQUE INDEX execution_servers_one_default ON execution_servers (user_id) WHERE is_default;
