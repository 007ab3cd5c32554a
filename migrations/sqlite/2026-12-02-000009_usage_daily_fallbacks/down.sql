DROP INDEX usage_daily_day;
ALTER TABLE usage_daily DROP COLUMN fallbacks;
