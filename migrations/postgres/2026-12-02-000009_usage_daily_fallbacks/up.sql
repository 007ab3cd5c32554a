-- The operators' figures (fallbacks, provider mix, active users over the last days) read the
-- daily totals instead of every request of the window: usage_daily counts fallbacks too, and
-- a window over every user reads it by day.
ALTER TABLE usage_daily ADD COLUMN fallbacks BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_daily_day ON usage_daily (day);

-- The records stored so far.
UPDATE usage_daily d SET fallbacks = f.n
FROM (
    SELECT user_id, (created_at AT TIME ZONE 'UTC')::date AS day, provider, credential,
           COUNT(*) AS n
    FROM usage_records WHERE fallback
    GROUP BY 1, 2, 3, 4
) f
WHERE d.user_id = f.user_id AND d.day = f.day AND d.provider = f.provider
  AND d.credential = f.credential;
