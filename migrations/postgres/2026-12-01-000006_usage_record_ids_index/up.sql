-- Built without blocking inserts (usage_records can be large; old replicas keep writing during a
-- rolling update). CONCURRENTLY cannot run in a transaction: see metadata.toml. A build that
-- failed half-way leaves an INVALID index; drop it and restart (docs/operations.md).
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS usage_records_record_id ON usage_records (record_id);
