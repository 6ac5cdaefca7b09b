-- Rows whose key is null. Params: stage, source, table, column.
SELECT COUNT(*) AS count FROM {{ delta(stage, source, table) }} WHERE {{ column | ident }} IS NULL
