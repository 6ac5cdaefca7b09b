"""The local SQL preview: DuckDB runs the serverless views over the lake's Delta tables."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from oea_core import LakePaths, Salt
from oea_core.clever import CleverModule
from oea_core.clever.generator import generate_clever_export
from oea_core.cli import main
from oea_core.sql.preview import SqlPreview, SqlPreviewError
from oea_testing import TEST_SALT


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


def test_sized_string_views_read_every_byte_of_long_multibyte_text(tmp_path):
    """VARCHAR(64), VARCHAR(MAX) and a column with no value (VARCHAR(256)) preview as DuckDB VARCHAR, whole."""
    import hashlib

    import pyarrow as pa
    from deltalake import write_deltalake

    from oea_core.sql.views import view_defs

    lake = LakePaths.from_setting(tmp_path / "lake")
    write_deltalake(lake.table("stage2p", "clever", "daily_participation_pseudo"), pa.table({
        "sis_id_pseudonym": pa.array([hashlib.sha256(b"1").hexdigest(), None]),
        "school_name": pa.array(["é" * 5000, "Lincoln"]),  # 10,000 bytes: past VARCHAR(8000)
        "note": pa.array([None, None], pa.string()),
    }))
    (view,) = view_defs(lake, "clever", [("stage2p", "daily_participation_pseudo")])
    assert view.columns == (("sis_id_pseudonym", "VARCHAR(64)"), ("school_name", "VARCHAR(MAX)"),
                            ("note", "VARCHAR(256)"))
    preview = SqlPreview(lake, ["clever"])
    assert preview.names() == ["sdb_dev_s2p_clever.dbo.daily_participation_pseudo"]
    described = preview.con.sql(f"DESCRIBE {preview.resolve('daily_participation_pseudo')}").fetchall()
    assert {row[0]: row[1] for row in described} == dict.fromkeys(["sis_id_pseudonym", "school_name", "note"],
                                                                  "VARCHAR")
    _, rows = preview.query("SELECT strlen(school_name), length(school_name), count(note) FROM "
                            "daily_participation_pseudo GROUP BY ALL ORDER BY 1 DESC")
    assert rows == [(10_000, 5_000, 0), (7, 7, 0)]


def test_unknown_and_ambiguous_views_and_bad_queries_say_what_to_do(clever_lake, tmp_path):
    lake, _, _ = clever_lake
    preview = SqlPreview(lake, ["clever"])
    with pytest.raises(SqlPreviewError, match="'nope' is not a view; views: sdb_dev_s2np_clever"):
        preview.resolve("nope")
    assert preview.resolve("sdb_dev_s2p_clever.dbo.resource_usage_pseudo").endswith('."resource_usage_pseudo"')
    syntax = '^the query failed: Parser Error: syntax error at or near "SELEC"; query: SELEC 1$'
    with pytest.raises(SqlPreviewError, match=syntax):
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


SECRET = "preview-secret-7f3a9c1e2b"  # stands in for the lake's salt; must never reach the output
REFUSED = "the SQL preview refused {}"
NO_FILES = "the query failed: Permission Error: Cannot access "

# (statement, what the one-line refusal says); {salt}, {parquet}, {csv}, {lake}, {out}: real paths
HOSTILE = [
    ("SELECT content FROM read_text('{salt}')", NO_FILES),
    ("SELECT * FROM read_blob('{salt}')", NO_FILES),
    ("SELECT * FROM read_csv('{salt}', header = false)", NO_FILES),
    ("SELECT * FROM read_json_auto('{salt}')", NO_FILES),
    ("SELECT * FROM (SELECT 1) JOIN read_text('{salt}') ON true", NO_FILES),
    ("SELECT * FROM read_parquet('{parquet}')", NO_FILES),
    ("SELECT count(*) FROM parquet_scan('{lake}/**/*.parquet')", NO_FILES),
    ("FROM '{csv}'", NO_FILES),
    ("SELECT * FROM glob('{lake}/**')", NO_FILES),
    ("SELECT content FROM read_text('.tmp/note.txt')", NO_FILES),  # DuckDB's default spill folder
    ("SELECT * FROM read_csv('https://example.invalid/x.csv')", NO_FILES),
    ("COPY (SELECT 1) TO '{out}'", REFUSED.format("a COPY statement")),
    ("COPY daily_participation_pseudo TO '{out}' (FORMAT csv)", REFUSED.format("a COPY statement")),
    ("EXPORT DATABASE '{out}'", REFUSED.format("an EXPORT statement")),
    ("ATTACH '{out}' AS stolen", REFUSED.format("an ATTACH statement")),
    ("SELECT 1; SELECT content FROM read_text('{salt}')", REFUSED.format("2 statements")),
    ("SET enable_external_access = true", REFUSED.format("a SET statement")),
    ("SET lock_configuration = false", REFUSED.format("a SET statement")),
    ("RESET lock_configuration", REFUSED.format("a SET statement")),
    ("PRAGMA enable_profiling", REFUSED.format("a PRAGMA statement")),
    ("CALL pragma_version()", REFUSED.format("a CALL statement")),
    ("INSTALL httpfs", REFUSED.format("a LOAD statement")),
    ("LOAD httpfs", REFUSED.format("a LOAD statement")),
    ("UPDATE EXTENSIONS", REFUSED.format("a statement of a type")),
    ("CREATE TABLE memory.main.copied AS SELECT * FROM daily_participation_pseudo",
     REFUSED.format("a CREATE statement")),
    ("INSERT INTO sdb_dev_s2p_clever.dbo.daily_participation_pseudo SELECT * FROM daily_participation_pseudo",
     REFUSED.format("an INSERT statement")),
    ("DROP VIEW daily_participation_pseudo", REFUSED.format("a DROP statement")),
    ("PIVOT daily_participation_pseudo ON school_name", REFUSED.format("a statement DuckDB runs as several")),
    ("  ;  ", REFUSED.format("an empty query")),
]


@pytest.fixture(scope="module")
def hostile_paths(clever_lake, tmp_path_factory) -> dict[str, str]:
    """Real files an attacker would aim at: the lake's salt file, a table's Parquet file, a landed CSV."""
    lake, _, export = clever_lake
    os.makedirs(os.path.dirname(lake.secret_file), exist_ok=True)
    if not os.path.exists(lake.secret_file):
        with os.fdopen(os.open(lake.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(SECRET + "\n")
    parquet = next(p for p in Path(lake.root).rglob("*.parquet") if "_delta_log" not in p.parts)
    out = tmp_path_factory.mktemp("stolen") / "out"
    return {"salt": lake.secret_file, "parquet": str(parquet), "csv": str(next(Path(export).rglob("*.csv"))),
            "lake": lake.root, "out": str(out)}


@pytest.fixture
def spill_note(tmp_path, monkeypatch):
    """A secret in ./.tmp, the folder DuckDB reads even with external access off unless moved."""
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "note.txt").write_text(SECRET)
    monkeypatch.chdir(tmp_path)


def _secrets(clever_lake) -> list[str]:
    with open(clever_lake[0].secret_file, encoding="utf-8") as handle:
        return [SECRET, TEST_SALT, handle.read().strip()]


@pytest.mark.parametrize(("statement", "says"), HOSTILE, ids=[h[0][:40] for h in HOSTILE])
def test_hostile_statements_are_refused_in_one_line_without_secrets(clever_lake, hostile_paths, spill_note,
                                                                    statement, says):
    preview = SqlPreview(clever_lake[0], ["clever"])
    with pytest.raises(SqlPreviewError) as raised:
        preview.query(statement.format(**hostile_paths))
    message = str(raised.value)
    assert message.startswith(says) and "\n" not in message
    assert "it runs one read-only query over the views" in message or "reads only its views" in message
    assert not any(secret in message for secret in _secrets(clever_lake))
    assert not os.path.exists(hostile_paths["out"])
    _, rows = preview.query("SELECT count(*) FROM daily_participation_pseudo")  # nothing dropped or changed
    assert rows[0][0] == len(clever_lake[1])


CLI_HOSTILE = [h[0] for h in HOSTILE if h[0].startswith(
    ("SELECT content FROM read_text('{salt}", "FROM '", "COPY (", "ATTACH", "SELECT 1;", "SET ", "RESET",
     "PRAGMA", "INSTALL"))]


@pytest.mark.parametrize("statement", CLI_HOSTILE)
def test_oea_sql_refuses_hostile_statements_in_one_line(clever_lake, hostile_paths, capsys, statement):
    code = main(["--lake", clever_lake[0].root, "sql", statement.format(**hostile_paths)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("oea: error: ") and err.count("\n") == 1
    assert not any(secret in out + err for secret in _secrets(clever_lake))
    assert not os.path.exists(hostile_paths["out"])


def test_oea_sql_cannot_print_the_salt_file_from_a_fresh_process(clever_lake, hostile_paths):
    query = f"SELECT content FROM read_text('{hostile_paths['salt']}')"
    command = [sys.executable, "-m", "oea_core.cli", "--lake", clever_lake[0].root, "sql", query, "--csv"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("oea: error: the query failed: Permission Error")
    assert result.stderr.count("\n") == 1
    assert not any(secret in result.stderr for secret in _secrets(clever_lake))


def test_views_read_with_external_access_off_and_the_configuration_locked(clever_lake):
    import duckdb

    lake, rows, _ = clever_lake
    preview = SqlPreview(lake, ["clever"])
    _, settings = preview.query("SELECT current_setting('enable_external_access'), "
                                "current_setting('lock_configuration')")
    assert settings == [(False, True)]
    expected = [(len(rows), sum(int(r["num_logins"]) for r in rows))]
    for name in ("daily_participation_pseudo", "sdb_dev_s2p_clever.dbo.daily_participation_pseudo"):
        assert preview.query(f"SELECT count(*), sum(num_logins) FROM {name}")[1] == expected
    assert preview.query("WITH d AS (SELECT num_logins FROM daily_participation_pseudo) "
                         "SELECT count(*), sum(num_logins) FROM d")[1] == expected
    assert preview.query("FROM daily_participation_pseudo SELECT count(*), sum(num_logins);")[1] == expected
    assert preview.query("VALUES (1, 'a')")[1] == [(1, "a")]
    assert "num_logins" in {r[0] for r in preview.query("DESCRIBE daily_participation_pseudo")[1]}
    # the lock holds even for code that goes around the statement check, straight to the connection
    for statement in ("SET enable_external_access = true", "RESET lock_configuration",
                      "SET allowed_directories = ['/']"):
        with pytest.raises(duckdb.Error, match="locked|disabled"):
            preview.con.execute(statement)


def test_oea_sql_runs_ordinary_queries_by_either_name(clever_lake, capsys):
    lake, rows, _ = clever_lake
    for name in ("daily_participation_pseudo", "sdb_dev_s2p_clever.dbo.daily_participation_pseudo"):
        assert main(["--lake", lake.root, "sql", f"SELECT count(*) AS n FROM {name}", "--csv"]) == 0
        assert capsys.readouterr().out == f"n\n{len(rows)}\n"
    query = "WITH d AS (FROM daily_participation_pseudo) SELECT count(*) AS n FROM d"
    assert main(["--lake", lake.root, "sql", query]) == 0
    assert str(len(rows)) in capsys.readouterr().out
