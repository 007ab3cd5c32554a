-- Every usage record carries the id the gateway gave the request when it served it, so a batch
-- written twice (a retry after a lost commit acknowledgement, a replayed spool file) is stored
-- once: inserts say ON CONFLICT (record_id) DO NOTHING. Rows written before this migration keep
-- NULL (a unique index allows any number of NULLs); they are never written again.
ALTER TABLE usage_records ADD COLUMN record_id UUID;
CREATE UNIQUE INDEX usage_records_record_id ON usage_records (record_id);
