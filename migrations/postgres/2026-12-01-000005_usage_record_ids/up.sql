-- Every usage record carries the id the gateway gave the request when it served it, so a batch
-- written twice (a retry after a lost commit acknowledgement, a replayed spool file) is stored
-- once: inserts say ON CONFLICT (record_id) DO NOTHING. Rows written before this migration keep
-- NULL (a unique index allows any number of NULLs); they are never written again.
-- The unique index comes in the next migration, built CONCURRENTLY (a large table stays
-- writable for the replicas still running while it is built).
ALTER TABLE usage_records ADD COLUMN record_id UUID;
