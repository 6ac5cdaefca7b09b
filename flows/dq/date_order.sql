-- Rows whose start date is after their end date (a null end is open). Params: stage, source, table,
-- start_column, end_column.
SELECT COUNT(*) AS count FROM {{ delta(stage, source, table) }}
WHERE {{ end_column | ident }} IS NOT NULL AND {{ start_column | ident }} > {{ end_column | ident }}
