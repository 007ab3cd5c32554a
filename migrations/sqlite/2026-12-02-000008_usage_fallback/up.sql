-- A usage record says whether it was served on the platform's key after the user's own key
-- failed (the fallback of policy user_then_system), so the fallback count is a figure of the
-- data, not of one replica's counters. Rows written before this migration say FALSE.
ALTER TABLE usage_records ADD COLUMN fallback BOOLEAN NOT NULL DEFAULT 0;
-- The service-wide figures read a time window over every user.
CREATE INDEX usage_records_created ON usage_records (created_at);
