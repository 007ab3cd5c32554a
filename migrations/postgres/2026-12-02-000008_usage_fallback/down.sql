DROP INDEX usage_records_created;
ALTER TABLE usage_records DROP COLUMN fallback;
