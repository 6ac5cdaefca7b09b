-- Fails when the table has fewer than min_rows rows. Params: stage, source, table, min_rows (default 1).
SELECT CASE WHEN COUNT(*) >= {{ min_rows | default(1) | number }} THEN 0 ELSE 1 END AS count
FROM {{ delta(stage, source, table) }}
