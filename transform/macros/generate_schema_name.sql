{# Every model in the target's schema (`transformed`) exactly: dbt's default would append a custom schema. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ target.schema }}
{%- endmacro %}
