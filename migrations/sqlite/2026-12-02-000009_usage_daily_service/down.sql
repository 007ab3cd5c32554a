DROP TABLE usage_daily_users;
DROP TABLE usage_daily_service;
