-- Keys of an SCD2 dimension with more than one current row, plus rows whose is_current is not
-- "valid_to is 9999-12-31" (a key deleted at its source has none). Params: stage, source, table, key.
SELECT
  (SELECT COUNT(*) FROM (
     SELECT {{ key | ident }} FROM {{ delta(stage, source, table) }} WHERE is_current
     GROUP BY {{ key | ident }} HAVING COUNT(*) > 1))
  + (SELECT COUNT(*) FROM {{ delta(stage, source, table) }}
     WHERE is_current IS NULL OR is_current <> (valid_to = DATE '9999-12-31')) AS count
