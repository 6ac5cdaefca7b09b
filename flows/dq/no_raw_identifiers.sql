-- Values in a pseudonym column of a p table that are not pseudonyms, or that equal a raw identifier
-- from the lookup table. Params: stage (a p stage), source, table, column; lookup_stage, lookup, raw (optional).
SELECT SUM(n) AS count FROM (
  SELECT COUNT(*) AS n FROM {{ delta(stage, source, table) }}
  WHERE {{ column | ident }} IS NOT NULL AND NOT {{ column | ident }} RLIKE '^[0-9a-f]{64}$'
{% if lookup is defined %}
  UNION ALL
  SELECT COUNT(*) AS n FROM {{ delta(stage, source, table) }} p
  JOIN {{ delta(lookup_stage | default("stage2np"), source, lookup) }} l ON p.{{ column | ident }} = l.{{ raw | ident }}
{% endif %}
)
