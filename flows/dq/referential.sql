-- Child rows whose reference has no parent row. Params: stage, source, table, column, parent, parent_column.
SELECT COUNT(*) AS count
FROM {{ delta(stage, source, table) }} c
LEFT ANTI JOIN {{ delta(stage, source, parent) }} p ON c.{{ column | ident }} = p.{{ parent_column | default(column) | ident }}
WHERE c.{{ column | ident }} IS NOT NULL
