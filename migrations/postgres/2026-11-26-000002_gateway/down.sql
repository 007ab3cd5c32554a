DROP TABLE usage_records;
DROP TABLE user_settings;
