"""The local SQL preview: DuckDB runs the serverless views over the lake's Delta tables."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from conftest import TEST_SALT
from oea_core import LakePaths, Salt
from oea_core.clever import CleverModule
from oea_core.clever.generator import generate_clever_export
from oea_core.cli import main
from oea_core.sql_preview import SqlPreview, SqlPreviewError


@pytest.fixture(scope="module")
def clever_lake(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preview")
    export = generate_clever_export(tmp / "export", students=12, teachers=2, staff=1, days=3, quirks=False)
    lake = LakePaths.from_setting(tmp / "lake")
    module = CleverModule(lake, spark=spark, salt=Salt(TEST_SALT, "test"))
    module.land(export.root)
    module.ingest()
    rows = read_report(export.root, "daily-participation")
    return lake, rows, export.root


def read_report(root, report: str) -> list[dict]:
    """Every row of a report, read with the csv module, with its role from the file name."""
    rows = []
    for path in sorted((root / report).glob("*.csv")):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows.extend(dict(r, role=path.stem.rsplit("-", 1)[1]) for r in csv.DictReader(handle))
    return rows


def test_views_return_what_the_export_holds_by_school(clever_lake):
    lake, rows, _ = clever_lake
    preview = SqlPreview(lake)
    assert "sdb_dev_s2p_clever.dbo.daily_participation_pseudo" in preview.names()
    _columns, result = preview.query("SELECT school_name, count(*), sum(num_logins) FROM "
                                    "sdb_dev_s2p_clever.dbo.daily_participation_pseudo GROUP BY 1 ORDER BY 1")
    expected_days = Counter(r["school_name"] for r in rows)
    expected_logins = Counter()
    for r in rows:
        expected_logins[r["school_name"]] += int(r["num_logins"])
    assert result == [(s, expected_days[s], expected_logins[s]) for s in sorted(expected_days)]
    assert len(result) > 1


def test_columns_have_the_types_the_serverless_view_declares(clever_lake):
    lake, _, _ = clever_lake
    preview = SqlPreview(lake, ["clever"])
    view = preview.resolve("daily_participation_pseudo")
    described = {r[0]: r[1] for r in preview.con.sql(f"DESCRIBE {view}").fetchall()}
    assert described["date"] == "DATE" and described["num_logins"] == "INTEGER"
    assert described["active"] == "BOOLEAN" and described["sis_id_pseudonym"] == "VARCHAR"
    # pseudonymized views carry no raw ids; lookups (np) do, in their own database
    _, raw_ids = preview.query("SELECT count(*) FROM sdb_dev_s2np_clever.dbo.daily_participation_lookup "
                               "WHERE sis_id IS NOT NULL")
    assert raw_ids[0][0] > 0
    assert "sis_id" not in described


def test_unknown_and_ambiguous_views_and_bad_queries_say_what_to_do(clever_lake, tmp_path):
    lake, _, _ = clever_lake
    preview = SqlPreview(lake, ["clever"])
    with pytest.raises(SqlPreviewError, match="'nope' is not a view; views: sdb_dev_s2np_clever"):
        preview.resolve("nope")
    assert preview.resolve("sdb_dev_s2p_clever.dbo.resource_usage_pseudo").endswith('."resource_usage_pseudo"')
    with pytest.raises(SqlPreviewError, match="(?s)the query failed: .*SELEC.*\nquery: SELEC 1"):
        preview.query("SELEC 1")
    empty = SqlPreview(LakePaths.from_setting(tmp_path / "empty"))
    with pytest.raises(SqlPreviewError, match="none: run `oea run`"):
        empty.resolve("daily_participation_pseudo")


def test_oea_sql_writes_csv_and_a_terminal_table(clever_lake, capsys):
    lake, rows, _ = clever_lake
    assert main(["--lake", lake.root, "sql", "--view", "daily_participation_pseudo", "--csv"]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(out) == len(rows)
    assert {r["date"] for r in out} == {r["date"] for r in rows}
    assert main(["--lake", lake.root, "sql", ("SELECT count(DISTINCT school_name) AS schools "
                 "FROM daily_participation_pseudo")]) == 0
    shown = capsys.readouterr().out
    assert "schools" in shown and str(len({r["school_name"] for r in rows})) in shown
    assert main(["--lake", lake.root, "sql"]) == 1
    assert "takes one of" in capsys.readouterr().err


def test_usage_summary_queries_match_the_export_and_parse_as_tsql(clever_lake):
    import sqlfluff

    from oea_core.clever.usage import USAGE_QUERIES, usage_summary

    lake, rows, _ = clever_lake
    summary = usage_summary(SqlPreview(lake, ["clever"]))
    students = [r for r in rows if r["role"] == "students"]
    by_day = {}
    for r in students:
        seen, active = by_day.setdefault(r["date"], (set(), set()))
        seen.add(r["clever_user_id"])
        if r["active"] == "true":
            active.add(r["clever_user_id"])
    assert [(str(d), s, a) for d, s, a in summary["students_by_day"][1]] == [
        (d, len(seen), len(active)) for d, (seen, active) in sorted(by_day.items())]
    usage = read_report(clever_lake[2], "resource-usage")
    accesses = Counter()
    for r in usage:
        accesses[(r["resource_type"], r["resource_name"])] += int(r["num_access"])
    top = summary["top_resources"][1]
    assert {(t, n): a for t, n, a, _ in top} == dict(accesses)
    assert [a for _, _, a, _ in top] == sorted((a for _, _, a, _ in top), reverse=True)
    for query in USAGE_QUERIES.values():
        sqlfluff.parse(query, dialect="tsql")
        assert "lookup" not in query  # the report reads pseudonymized views only
