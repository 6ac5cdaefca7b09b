-- Key values held by more than one row. Params: stage, source, table, keys (a list of columns).
SELECT COUNT(*) AS count FROM (
  SELECT {% for k in keys %}`{{ k }}`{{ ", " if not loop.last }}{% endfor %}
  FROM {{ delta(stage, source, table) }}
  GROUP BY {% for k in keys %}`{{ k }}`{{ ", " if not loop.last }}{% endfor %}
  HAVING COUNT(*) > 1
)
