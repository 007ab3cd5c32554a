CREATE INDEX usage_records_created ON usage_records (created_at);
DROP TABLE usage_daily_users;
DROP TABLE usage_daily_service;
