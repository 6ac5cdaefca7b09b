-- Rows of an SCD2 dimension that end before they start, or start before the previous range of their key
-- ends (an overlap). Ranges are [valid_from, valid_to). Params: stage, source, table, key.
SELECT COUNT(*) AS count FROM (
  SELECT valid_from, valid_to,
         LAG(valid_to) OVER (PARTITION BY {{ key | ident }} ORDER BY valid_from, valid_to) AS previous_end
  FROM {{ delta(stage, source, table) }}
)
WHERE valid_from > valid_to OR previous_end > valid_from
