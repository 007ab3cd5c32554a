ALTER TABLE usage_records DROP COLUMN record_id;
