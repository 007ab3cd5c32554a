-- Daily totals per user, UTC day, provider and credential kind, kept with usage_records: the
-- batch that inserts records adds the ones it actually inserted (not those skipped as already
-- stored) here, in the same transaction. The console's usage page reads at most a few hundred
-- of these rows instead of aggregating every request of the last 30 days.
CREATE TABLE usage_daily (
    user_id        TEXT NOT NULL,
    -- The UTC date, YYYY-MM-DD.
    day            TEXT NOT NULL,
    provider       TEXT NOT NULL,
    credential     TEXT NOT NULL CHECK (credential IN ('user', 'system')),
    requests       BIGINT NOT NULL DEFAULT 0,
    errors         BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, provider, credential)
) WITHOUT ROWID;

-- The records stored so far. Times are stored as UTC text (YYYY-MM-DD HH:MM:SS[.f]+00:00):
-- the first ten characters are the UTC date.
INSERT INTO usage_daily (user_id, day, provider, credential, requests, errors, input_tokens, output_tokens)
SELECT user_id, substr(created_at, 1, 10), provider, credential,
       COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
       COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)
FROM usage_records
GROUP BY 1, 2, 3, 4;
