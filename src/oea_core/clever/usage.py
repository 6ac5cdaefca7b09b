"""The Clever usage summary: the queries a Power BI report runs over the serverless views.

Each query uses only the ``sdb_<workspace>_s2p_clever`` views (pseudonymized), in SQL that
serverless SQL (T-SQL) and the local DuckDB preview both accept, so the same text can back a
Power BI DirectQuery table and the local summary notebook.
"""

from __future__ import annotations

DP = "daily_participation_pseudo"
RU = "resource_usage_pseudo"

USAGE_QUERIES: dict[str, str] = {
    # one row per day: distinct students (by Clever user id: a sis_id may be blank) and those active
    "students_by_day": (
        f"SELECT [date], COUNT(DISTINCT clever_user_id_pseudonym) AS students, "
        f"COUNT(DISTINCT CASE WHEN active = 1 THEN clever_user_id_pseudonym END) AS active_students "
        f"FROM {DP} WHERE role = 'students' GROUP BY [date] ORDER BY [date]"),
    # logins and resources accessed by school and day (students)
    "logins_by_school_day": (
        f"SELECT school_name, [date], SUM(num_logins) AS logins, SUM(num_resources_accessed) AS resources_accessed "
        f"FROM {DP} WHERE role = 'students' GROUP BY school_name, [date] ORDER BY school_name, [date]"),
    # days with at least one login per student, by school
    "active_days_by_school": (
        f"SELECT school_name, COUNT(*) AS student_days, SUM(CASE WHEN num_logins > 0 THEN 1 ELSE 0 END) "
        f"AS active_student_days FROM {DP} WHERE role = 'students' GROUP BY school_name ORDER BY school_name"),
    # top apps and resources by accesses (every role), with distinct users
    "top_resources": (
        f"SELECT resource_type, resource_name, SUM(num_access) AS accesses, "
        f"COUNT(DISTINCT clever_user_id_pseudonym) AS users FROM {RU} "
        f"GROUP BY resource_type, resource_name ORDER BY accesses DESC, resource_name"),
}


def duckdb_sql(query: str) -> str:
    """The T-SQL text for DuckDB: ``[name]`` quoting becomes ``"name"``, ``active = 1`` a boolean test."""
    return query.replace("[", '"').replace("]", '"').replace("active = 1", "active")


def usage_summary(preview) -> dict[str, tuple[list[str], list[tuple]]]:
    """Run every usage query on a :class:`oea_core.sql.preview.SqlPreview`; ``{name: (columns, rows)}``."""
    return {name: preview.query(duckdb_sql(query)) for name, query in USAGE_QUERIES.items()}
