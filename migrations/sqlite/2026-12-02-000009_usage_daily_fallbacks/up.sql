-- The operators' figures (fallbacks, provider mix, active users over the last days) read the
-- daily totals instead of every request of the window: usage_daily counts fallbacks too, and
-- a window over every user reads it by day.
ALTER TABLE usage_daily ADD COLUMN fallbacks BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_daily_day ON usage_daily (day);

-- The records stored so far (times are UTC text: the first ten characters are the date).
UPDATE usage_daily SET fallbacks = (
    SELECT COUNT(*) FROM usage_records r
    WHERE r.fallback
      AND r.user_id = usage_daily.user_id
      AND substr(r.created_at, 1, 10) = usage_daily.day
      AND r.provider = usage_daily.provider
      AND r.credential = usage_daily.credential
);
