DROP INDEX CONCURRENTLY IF EXISTS usage_records_record_id;
