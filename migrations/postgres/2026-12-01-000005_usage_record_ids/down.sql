DROP INDEX usage_records_record_id;
ALTER TABLE usage_records DROP COLUMN record_id;
