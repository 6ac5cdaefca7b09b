-- Dates outside [min, max]. Params: stage, source, table, column, min, max (YYYY-MM-DD).
SELECT COUNT(*) AS count FROM {{ delta(stage, source, table) }}
WHERE {{ column | ident }} < {{ min | date }} OR {{ column | ident }} > {{ max | date }}
