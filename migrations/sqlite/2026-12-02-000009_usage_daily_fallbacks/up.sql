-- The operators' figures (fallbacks, provider mix, active users over the last days) read the
-- daily totals instead of every request of the window: usage_daily counts fallbacks too, and
-- a window over every user reads it by day.
ALTER TABLE usage_daily ADD COLUMN fallbacks BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_daily_day ON usage_daily (day);

-- The records stored so far, in one aggregate pass (times are UTC text: the first ten
-- characters are the date).
UPDATE usage_daily SET fallbacks = f.n
FROM (
    SELECT user_id, substr(created_at, 1, 10) AS day, provider, credential, COUNT(*) AS n
    FROM usage_records WHERE fallback
    GROUP BY 1, 2, 3, 4
) AS f
WHERE usage_daily.user_id = f.user_id AND usage_daily.day = f.day
  AND usage_daily.provider = f.provider AND usage_daily.credential = f.credential;
