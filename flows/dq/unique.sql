-- Key values held by more than one row. Params: stage, source, table, keys (a list of columns).
SELECT COUNT(*) AS count FROM (
  SELECT {{ keys | idents }}
  FROM {{ delta(stage, source, table) }}
  GROUP BY {{ keys | idents }}
  HAVING COUNT(*) > 1
)
