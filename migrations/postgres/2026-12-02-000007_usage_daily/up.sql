-- Daily totals per user, UTC day, provider and credential kind, kept with usage_records: the
-- batch that inserts records adds the ones it actually inserted (not those skipped as already
-- stored) here, in the same transaction. The console's usage page reads at most a few hundred
-- of these rows instead of aggregating every request of the last 30 days.
CREATE TABLE usage_daily (
    user_id        VARCHAR(255) NOT NULL,
    day            DATE NOT NULL,
    provider       VARCHAR(50) NOT NULL,
    credential     TEXT NOT NULL CHECK (credential IN ('user', 'system')),
    requests       BIGINT NOT NULL DEFAULT 0,
    errors         BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, provider, credential)
);

-- The records stored so far.
INSERT INTO usage_daily (user_id, day, provider, credential, requests, errors, input_tokens, output_tokens)
SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, provider, credential,
       COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
       COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)
FROM usage_records
GROUP BY 1, 2, 3, 4;
