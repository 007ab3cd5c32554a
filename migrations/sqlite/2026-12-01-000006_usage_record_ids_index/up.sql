-- SQLite built the index in 2026-12-01-000005 (one writer: nothing to keep writable).
SELECT 1;
