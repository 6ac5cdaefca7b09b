"""oea publish postgres against a real PostgreSQL (the postgres fixture), real dbt and a star schema built once
by the gold layer (delta-rs engine): dev gets the tables unchanged and typed, dbt builds and tests, prod is
replaced atomically and read by a read-only role, reruns change nothing, and no password shows anywhere."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from psycopg import conninfo

from oea_core import LakePaths, PublishError, publish_postgres
from oea_core.cli import main
from oea_core.delta import delta_store
from oea_core.flow import FlowRun, load_flow
from oea_core.lake.cloud import open_cloud
from oea_core.lake.storage import CONNECTION_STRING, lake_filesystem
from oea_core.publish.columns import pg_column, pg_columns
from oea_core.publish.run import lake_tables
from oea_core.publish.server import find_dbt
from oea_testing.gold_data import EdFiState, write_partial, write_state  # the gold tests' stage2p tables

STAR_TABLES = ("dim_date", "dim_school", "dim_section", "dim_student", "fact_attendance", "fact_digital_activity",
               "fact_enrollment")
MODELS = {"schools", "students", "school_week_attendance", "student_week_digital_engagement"}
REPO = Path(__file__).resolve().parents[2]
T1 = dt.datetime(2024, 1, 1, 6, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def star(small_gold) -> Path:
    """A lake with the gold layer's star schema (and the stage2p tables it came from), built once (the
    session's small_gold, tests/conftest.py): read only, tests copy it."""
    return small_gold.root


@pytest.fixture
def lake(star, tmp_path) -> LakePaths:
    """A copy of the star's lake for one test, which may change it."""
    shutil.copytree(star, tmp_path / "lake")
    return LakePaths.from_setting(tmp_path / "lake")


@pytest.fixture
def pg(postgres, monkeypatch, request):
    """The server's DSN (no password: it is in PGPASSWORD), and a dev and a prod database of this test's own."""
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    monkeypatch.delenv("OEA_PG_READER_PASSWORD", raising=False)
    name = request.node.name.removeprefix("test_")[:20]
    return postgres.dsn(), f"dev_{name}", f"prod_{name}"


def query(dsn: str, database: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(conninfo.make_conninfo(dsn, dbname=database)) as conn:
        return conn.execute(sql, params).fetchall()


def oids(dsn: str, database: str, schema: str) -> dict[str, tuple[int, str]]:
    """Each table of ``schema``: its OID and its newest row's xmin (a write changes one or the other)."""
    rows = query(dsn, database, "SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = "
                 "c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'", (schema,))
    return {name: (oid, str(query(dsn, database, f'SELECT max(xmin::text::bigint) FROM {schema}."{name}"')[0][0]))
            for name, oid in rows}


def append(lake: LakePaths, table: str, **changes: object) -> None:
    """A new Delta version of a star table: its first row again, with ``changes``."""
    path = lake.table("stage3p", "star", table)
    first = DeltaTable(path).to_pyarrow_table().slice(0, 1)
    for column, value in changes.items():
        index = first.schema.get_field_index(column)
        first = first.set_column(index, first.schema.field(index), pa.array([value], first.schema.field(index).type))
    write_deltalake(path, first, mode="append")


def test_dev_gets_every_star_table_unchanged_and_typed_and_prod_gets_the_tested_models(lake, pg):
    dsn, dev, prod = pg
    result = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, tables=["stage2p/clever/daily_participation_pseudo"])
    assert set(result.loaded) == {*STAR_TABLES, "clever_daily_participation_pseudo"}
    assert result.dbt is not None and result.dbt.counts["model"] == len(MODELS) and result.dbt.counts["test"] >= 30
    assert result.prod_tables == len(MODELS)
    assert result.summary().startswith(f"publish postgres: 8 tables loaded ({sum(result.loaded.values()):,} rows) "
                                       f"into {dev}.source, 0 unchanged; dbt build: ")
    for name, path in [(t, lake.table("stage3p", "star", t)) for t in STAR_TABLES] + [
            ("clever_daily_participation_pseudo", lake.table("stage2p", "clever", "daily_participation_pseudo"))]:
        delta = DeltaTable(path).to_pyarrow_table()
        columns = [r[0] for r in query(dsn, dev, "SELECT column_name FROM information_schema.columns WHERE "
                                       "table_schema = 'source' AND table_name = %s ORDER BY ordinal_position", (name,))]
        assert columns == delta.column_names, name
        rows = query(dsn, dev, f'SELECT * FROM source."{name}"')
        assert sorted(rows, key=repr) == sorted((tuple(r.values()) for r in delta.to_pylist()), key=repr), name
        assert result.loaded[name] == delta.num_rows
    types = dict(query(dsn, dev, "SELECT table_name || '.' || column_name, data_type || coalesce('(' || "
                       "numeric_precision || ',' || numeric_scale || ')', '') FROM information_schema.columns WHERE "
                       "table_schema = 'source'"))
    assert {k: types[k] for k in ("dim_student.student_key", "dim_date.date_key", "dim_date.date",
                                  "dim_student.is_current", "dim_section.availableCredits",
                                  "fact_attendance.year", "dim_school.nameOfInstitution")} == {
        "dim_student.student_key": "bigint(64,0)", "dim_date.date_key": "integer(32,0)", "dim_date.date": "date",
        "dim_student.is_current": "boolean", "dim_section.availableCredits": "numeric(9,3)",
        "fact_attendance.year": "integer(32,0)", "dim_school.nameOfInstitution": "text"}
    versions = dict(query(dsn, dev, "SELECT table_name, delta_version FROM source._oea_published"))
    assert versions == {name: 0 for name in result.loaded}
    # prod holds only the models, and the reports add up
    assert {r[0] for r in query(dsn, prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'transformed'")} \
        == MODELS
    assert query(dsn, prod, "SELECT school_id, school_name, enrolled_students, absence_events, students_absent, "
                 "absence_rate FROM transformed.school_week_attendance WHERE week_start = '2023-09-04' ORDER BY 1") \
        == [(101, "Lincoln Elementary", 2, 1, 1, Decimal("0.5000")), (102, "Adams Middle", 1, 0, 0, Decimal(0))]
    assert query(dsn, prod, "SELECT week_start, school_id, active_days, logins, resource_accesses, distinct_resources "
                 "FROM transformed.student_week_digital_engagement") == [(dt.date(2023, 9, 4), 101, 1, 2, 4, 1)]
    assert not query(dsn, prod, "SELECT 1 FROM pg_namespace WHERE nspname = 'source'")  # never copied to prod


def test_a_table_written_by_spark_delta_with_every_kind_of_column_lands_typed(lake, pg, spark):
    from pyspark.sql import types as T

    dsn, dev, prod = pg
    schema = T.StructType([
        T.StructField("id", T.LongType()), T.StructField("small", T.ShortType()), T.StructField("ratio", T.FloatType()),
        T.StructField("score", T.DoubleType()), T.StructField("amount", T.DecimalType(12, 4)),
        T.StructField("at", T.TimestampType()), T.StructField("at_local", T.TimestampNTZType()),
        T.StructField("blob", T.BinaryType()), T.StructField("tags", T.ArrayType(T.StringType())),
        T.StructField("info", T.StructType([T.StructField("a", T.IntegerType())])),
        T.StructField("note", T.StringType())])
    at = dt.datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)
    rows = [(1, 2, 0.5, 1.25, Decimal("12.3456"), at, dt.datetime(2024, 3, 1, 8, 0), b"\x00\x01", ["a", "b"], (7,),
             "x"), (2, None, None, None, None, None, None, None, None, None, "")]
    delta_store(spark, "spark-delta").write(spark.createDataFrame(rows, schema),
                                            lake.table("stage2p", "clever", "typed_pseudo"), mode="overwrite")
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, tables=["stage2p/clever/typed_pseudo"])
    types = query(dsn, dev, "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = "
                  "'source' AND table_name = 'clever_typed_pseudo' ORDER BY ordinal_position")
    assert types == [("id", "int8"), ("small", "int2"), ("ratio", "float4"), ("score", "float8"),
                     ("amount", "numeric"), ("at", "timestamptz"), ("at_local", "timestamp"), ("blob", "bytea"),
                     ("tags", "jsonb"), ("info", "jsonb"), ("note", "text")]
    got = query(dsn, dev, "SELECT * FROM source.clever_typed_pseudo ORDER BY id")
    assert got == [(1, 2, 0.5, 1.25, Decimal("12.3456"), at, dt.datetime(2024, 3, 1, 8, 0), b"\x00\x01", ["a", "b"],
                    {"a": 7}, "x"), (2, None, None, None, None, None, None, None, None, None, "")]


def test_the_reader_role_reads_prod_and_cannot_write_create_or_reach_dev(lake, pg, postgres, monkeypatch):
    dsn, dev, prod = pg
    monkeypatch.setenv("OEA_PG_READER_PASSWORD", "reader-Pa55word-for-tests")
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, reader_timeout="45s")
    reader = f"host={postgres.host} port={postgres.port} user=oea_reader password=reader-Pa55word-for-tests"
    with psycopg.connect(f"{reader} dbname={prod}", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM transformed.schools").fetchone() == (3,)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("45s",)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        conn.execute("SET default_transaction_read_only = off")  # the role may lift that: privileges still hold
        for statement in ("INSERT INTO transformed.schools (school_key) VALUES (99)",
                          "UPDATE transformed.schools SET school_name = 'x'", "DELETE FROM transformed.schools",
                          "CREATE TABLE transformed.mine (x int)", "CREATE TABLE public.mine (x int)",
                          "CREATE TEMP TABLE mine (x int)", "TRUNCATE transformed.schools"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    postgres.psql("CREATE TABLE transformed.added_later AS SELECT 1 AS x", prod)  # by the publishing user
    with psycopg.connect(f"{reader} dbname={prod}") as conn:  # default privileges cover it
        assert conn.execute("SELECT x FROM transformed.added_later").fetchall() == [(1,)]
    with psycopg.connect(f"{reader} dbname={dev}", autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema source"):
        conn.execute("SELECT count(*) FROM source.dim_student")
    # without a password it is a group role again: grant it to the applications' users
    monkeypatch.delenv("OEA_PG_READER_PASSWORD")
    append(lake, "dim_date", date_key=19000101)
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert query(dsn, prod, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'oea_reader'") == [(False,)]


def test_a_failing_dbt_test_stops_before_prod_names_the_test_and_the_next_publish_retries(lake, pg):
    dsn, dev, prod = pg
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    before = oids(dsn, prod, "transformed")
    append(lake, "fact_enrollment")  # the same enrollment_hk twice
    for _ in range(2):  # the failed build is not recorded: the next publish runs dbt again
        with pytest.raises(PublishError, match=r"dbt build in dev_\S+ failed, so prod was not touched: "
                           r"test\.oea_transform\.source_unique_star_fact_enrollment_enrollment_hk\.\w+: fail") as err:
            publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
        assert [n.split(".")[2] for n in err.value.nodes] == ["source_unique_star_fact_enrollment_enrollment_hk"]
        assert oids(dsn, prod, "transformed") == before
    assert query(dsn, dev, "SELECT count(*) FROM source.fact_enrollment") == [(5,)]


def test_a_changed_dbt_project_publishes_again_and_its_failing_accepted_values_test_is_named(lake, pg, tmp_path):
    dsn, dev, prod = pg
    project = tmp_path / "transform"
    shutil.copytree(REPO / "transform", project)
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, project_dir=str(project))
    before = oids(dsn, prod, "transformed")
    sources = project / "models" / "sources.yml"
    sources.write_text(sources.read_text().replace('values: ["participation", "resource_usage"]',
                                                   'values: ["participation"]'))
    with pytest.raises(PublishError, match=r"failed, so prod was not touched: test\.oea_transform\."
                       r"source_accepted_values_star_fact_digital_activity_activity_type__participation\.\w+: fail"):
        publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, project_dir=str(project))
    assert oids(dsn, prod, "transformed") == before


def test_only_changed_tables_are_reloaded_and_a_publish_with_nothing_new_changes_nothing(lake, pg, postgres,
                                                                                          monkeypatch, tmp_path):
    dsn, dev, prod = pg
    monkeypatch.delenv("PGPASSWORD")  # the password from a password file this time, for dbt and pg_dump too
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{postgres.host}:{postgres.port}:*:{postgres.user}:{postgres.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    dev_tables, prod_tables = oids(dsn, dev, "source"), oids(dsn, prod, "transformed")
    dev_models = oids(dsn, dev, "transformed")
    again = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert again.up_to_date and not again.loaded and again.dbt is None
    assert again.summary() == (f"publish postgres: nothing new since the last publish (7 tables unchanged); {dev} "
                               f"and {prod} untouched")
    assert (oids(dsn, dev, "source"), oids(dsn, dev, "transformed"), oids(dsn, prod, "transformed")) == (
        dev_tables, dev_models, prod_tables)
    append(lake, "dim_section", section_key=42, section_hk="f" * 64)
    changed = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert set(changed.loaded) == {"dim_section"} and changed.loaded["dim_section"] == 2
    after = oids(dsn, dev, "source")
    assert {name for name in after if after[name] != dev_tables.get(name)} == {"dim_section", "_oea_published",
                                                                               "_oea_prod_published"}
    assert not set(oids(dsn, prod, "transformed").values()) & set(prod_tables.values())  # replaced, all of it
    assert dict(query(dsn, dev, "SELECT table_name, delta_version FROM source._oea_published"))["dim_section"] == 1


def test_a_star_rebuilt_from_scratch_or_another_lake_at_the_same_versions_is_published_again(lake, pg, tmp_path):
    dsn, dev, prod = pg
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    path = lake.table("stage3p", "star", "dim_section")
    rows = DeltaTable(path).to_pyarrow_table()
    assert DeltaTable(path).version() == 0
    shutil.rmtree(path)  # rebuilt from scratch: version 0 again, one row more
    extra = rows.slice(0, 1).set_column(rows.schema.get_field_index("section_key"), "section_key",
                                        pa.array([42], rows.schema.field("section_key").type))
    write_deltalake(path, pa.concat_tables([rows, extra]))
    assert DeltaTable(path).version() == 0
    rebuilt = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert not rebuilt.up_to_date and set(rebuilt.loaded) == {"dim_section"}, "not 'unchanged (version 0)'"
    assert query(dsn, dev, "SELECT count(*) FROM source.dim_section") == [(rows.num_rows + 1,)]
    other = tmp_path / "other-lake"  # a second lake, its tables at the very same versions
    shutil.copytree(str(lake.root), other)
    second = publish_postgres(LakePaths.from_setting(other), dsn, dev_db=dev, prod_db=prod)
    assert not second.up_to_date and len(second.loaded) == 7


def write_star_checks(lake: LakePaths, passed: bool, failed: dict[str, int]) -> None:
    """The record the gold layer writes after each build_star (its tests cover the writing)."""
    path = Path(lake.state_path("gold", "star_checks.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"batch_id": "b2", "passed": passed, "failed": failed}))


def test_a_star_whose_last_build_failed_its_checks_is_refused_naming_them_before_the_server(lake, pg):
    dsn, dev, prod = pg
    write_star_checks(lake, False, {"fact_enrollment_orphan_student": 2, "dim_student_unique_key": 1})
    with pytest.raises(PublishError, match=r"^the star schema of .* failed its checks when it was last built "
                       r"\(batch b2: dim_student_unique_key 1, fact_enrollment_orphan_student 2\): fix the data, "
                       r"rebuild the star \(build_star\), then publish again; .* untouched$"):
        publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert not query(dsn, "postgres", "SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (dev, prod))


@pytest.mark.slow
def test_the_gold_flow_and_publish_follow_an_export_from_three_resources_to_all_of_them(pg, spark, tmp_path,
                                                                                        capsys):
    dsn, dev, prod = pg
    lake = LakePaths.from_setting(tmp_path / "lake")
    store = delta_store(spark, "delta-rs")
    write_partial(spark, store, lake, EdFiState())  # students, schools, enrollments: OEA's own Ed-Fi test set
    flow = load_flow(REPO / "flows" / "gold_flow.yaml")
    steps = FlowRun(flow, lake, batch_id="b1").run()["steps"]
    assert steps["build_vault"]["note"].endswith(
        "; not built (source table missing): hub_section (stage2p/edfi/sections, "
        "stage2p/edfi/student_section_associations), link_section_enrollment (stage2p/edfi/student_section_"
        "associations)")
    assert "not built (source table missing): dim_section (stage2p/edfi/sections), fact_attendance (stage2p/edfi/" \
           "student_school_attendance_events), fact_digital_activity (" in steps["build_star"]["note"]
    partial = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    skipped = {"school_week_attendance": ("fact_attendance",),
               "student_week_digital_engagement": ("fact_digital_activity",)}
    assert partial.skipped == skipped and partial.prod_tables == 2
    assert partial.summary().endswith("; skipped (source table missing): school_week_attendance (fact_attendance), "
                                      "student_week_digital_engagement (fact_digital_activity)")
    assert {r[0] for r in query(dsn, prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'transformed'")} \
        == {"schools", "students"}
    assert query(dsn, prod, "SELECT count(*) FROM transformed.students") == [(4,)]
    assert main(["--lake", str(lake.root), "publish", "postgres", "--dsn", dsn, "--dev-database", dev,
                 "--prod-database", prod]) == 0  # nothing new: still named
    assert "skipped (source table missing): school_week_attendance (fact_attendance)" in capsys.readouterr().out

    write_state(spark, store, lake, EdFiState())  # a later batch brings sections, attendance and Clever
    steps = FlowRun(flow, lake, batch_id="b2").run()["steps"]
    assert all("not built" not in steps[s]["note"] for s in ("build_vault", "build_star")), steps
    full = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert full.skipped == {} and full.prod_tables == len(MODELS) and "skipped" not in full.summary()
    assert query(dsn, prod, "SELECT count(*) FROM transformed.student_week_digital_engagement") == [(1,)]
    star, aside = Path(lake.path("stage3p", "star")), tmp_path / "aside"
    aside.mkdir()
    shutil.move(star / "fact_digital_activity", aside / "fact_digital_activity")  # Clever gone again: its model too
    no_clever = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert no_clever.skipped == {"student_week_digital_engagement": ("fact_digital_activity",)}
    assert {r[0] for r in query(dsn, prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'transformed'")} \
        == MODELS - {"student_week_digital_engagement"}


def test_columns_postgresql_would_cut_to_the_same_name_are_refused_before_loading(lake, pg):
    dsn, dev, prod = pg
    stem = "x" * 63  # PostgreSQL keeps a name's first 63 bytes
    write_deltalake(lake.table("stage2p", "clever", "wide_pseudo"),
                    pa.table({"id": [1], f"{stem}_first": [1], f"{stem}_second": [2]}))
    with pytest.raises(PublishError, match=rf"^stage2p/clever/wide_pseudo: columns '{stem}_first' and '{stem}_second' "
                       rf"would both be '{stem}' in PostgreSQL, which keeps the first 63 bytes of a name: rename "
                       r"them in the lake so that their first 63 bytes differ; nothing was loaded$"):
        publish_postgres(lake, dsn, dev_db=dev, prod_db=prod, tables=["stage2p/clever/wide_pseudo"])
    assert not query(dsn, "postgres", "SELECT datname FROM pg_database WHERE datname = %s", (dev,))


def test_a_name_is_cut_to_63_bytes_at_a_character_boundary_and_one_long_name_alone_is_kept():
    cut = "é" * 31  # 62 bytes: the 32nd é would end at byte 64
    with pytest.raises(PublishError, match=rf"would both be '{cut}' in PostgreSQL"):
        pg_columns(pa.schema([("é" * 32 + "a", pa.int32()), ("é" * 32 + "b", pa.int32())]), "stage3p/star/t")
    assert [c.name for c in pg_columns(pa.schema([("y" * 70, pa.int32()), ("Y" * 70, pa.int32())]), "t")] == [
        "y" * 70, "Y" * 70]  # a quoted name keeps its case: no collision


def test_readers_of_prod_see_the_old_or_the_new_schema_never_half_of_it(lake, pg, postgres):
    dsn, dev, prod = pg
    publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    append(lake, "dim_school", school_key=77, school_hk="e" * 64, schoolId=103, nameOfInstitution="New School")
    append(lake, "dim_student", student_key=88, student_hk="d" * 64, studentUniqueId_pseudonym="p" * 64)
    seen, failures, done = set(), [], threading.Event()

    def read() -> None:
        with psycopg.connect(conninfo.make_conninfo(dsn, dbname=prod, password=postgres.password),
                             autocommit=True) as conn:
            while not done.is_set():
                try:
                    seen.add(conn.execute("SELECT (SELECT count(*) FROM transformed.schools), "
                                          "(SELECT count(*) FROM transformed.students)").fetchone())
                except psycopg.Error as exc:
                    failures.append(exc)
                time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    finally:
        done.set()
        reader.join()
    assert not failures and (3, 4) in seen and seen <= {(3, 4), (4, 5)}, (failures, seen)
    assert query(dsn, prod, "SELECT (SELECT count(*) FROM transformed.schools), "
                 "(SELECT count(*) FROM transformed.students)") == [(4, 5)]


def test_no_password_shows_in_output_logs_errors_or_dbt_files(lake, pg, postgres, monkeypatch, capsys, caplog):
    dsn, dev, prod = pg
    monkeypatch.delenv("PGPASSWORD")
    secret_dsn = f"{dsn} password={postgres.password}"
    caplog.set_level(logging.DEBUG, logger="oea")  # dbt's own output is logged at DEBUG
    first = publish_postgres(lake, secret_dsn, dev_db=dev, prod_db=prod).summary()
    assert main(["--lake", str(lake.root), "publish", "postgres", "--dsn", secret_dsn, "--dev-database", dev,
                 "--prod-database", prod]) == 0
    out, err = capsys.readouterr()
    assert out == f"publish postgres: nothing new since the last publish (7 tables unchanged); {dev} and {prod} " \
                  "untouched\n"
    append(lake, "fact_enrollment")
    assert main(["--lake", str(lake.root), "publish", "postgres", "--dsn", secret_dsn, "--dev-database", dev,
                 "--prod-database", prod]) == 1
    failed = capsys.readouterr()
    assert "source_unique_star_fact_enrollment_enrollment_hk" in failed.err
    unreachable = secret_dsn.replace(f"port={postgres.port}", "port=1")
    assert main(["--lake", str(lake.root), "publish", "postgres", "--dsn", unreachable]) == 1
    refused = capsys.readouterr().err
    assert refused.startswith("oea: error: cannot connect to PostgreSQL database 'postgres' (")
    dbt_files = "".join(p.read_text(errors="replace") for p in Path(str(lake.root), ".oea", "dbt").rglob("*")
                        if p.is_file() and p.suffix in (".log", ".json", ".sql"))
    for text in (first, out, err, failed.out, failed.err, refused, caplog.text, dbt_files):
        assert postgres.password not in text
    assert "dbt:" in caplog.text  # dbt's output was there to leak


def test_a_flow_python_step_publishes_the_lake_it_runs_on(lake, pg, tmp_path, capsys):
    dsn, dev, prod = pg
    flow = tmp_path / "publish.yaml"
    flow.write_text(f"""pipeline: {{name: publish}}
stages:
  - name: publish
    groups:
      - name: postgres
        steps:
          - name: publish_postgres
            kind: python
            callable: oea_core.publish:publish_postgres
            parameters: {{dsn: "{dsn}", dev_db: {dev}, prod_db: {prod}}}
""", encoding="utf-8")
    assert main(["--lake", str(lake.root), "flow", "run", str(flow), "--batch-id", "p1"]) == 0, capsys.readouterr().err
    assert "publish batch p1: success (1 success)" in capsys.readouterr().out
    assert query(dsn, prod, "SELECT count(*) FROM transformed.schools") == [(3,)]


def test_tables_from_identifying_stages_or_missing_tables_are_refused_before_any_work(lake):
    with pytest.raises(PublishError, match=r"table 'stage2np/clever/daily_participation' is not <stage>/<source>/"
                       r"<table> of a pseudonymized stage \(stage2p, stage3p\).*never published"):
        lake_tables(lake, ("stage2np/clever/daily_participation",))
    with pytest.raises(PublishError, match=r"table stage2p/clever/nope is not a Delta table in .*: check the name"):
        lake_tables(lake, ("stage2p/clever/nope",))
    assert [t.name for t in lake_tables(lake, ("stage2p/edfi/schools",))] == [*STAR_TABLES, "edfi_schools"]


def test_a_lake_without_a_star_or_a_missing_dbt_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(PublishError, match=r"has no star schema .*: build it first \(build_vault then build_star"):
        lake_tables(LakePaths.from_setting(tmp_path / "empty"), ())
    monkeypatch.setenv("OEA_DBT", str(tmp_path / "no-dbt"))
    with pytest.raises(PublishError, match=r"OEA_DBT=.*no-dbt is not an executable dbt: fix OEA_DBT or unset it"):
        find_dbt()
    monkeypatch.delenv("OEA_DBT")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PublishError, match=r"dbt is not installed .*: run scripts/setup.sh"):
        find_dbt()


def test_a_folder_that_is_not_a_dbt_project_is_refused_before_the_lake_or_the_server_is_read(tmp_path):
    empty = LakePaths.from_setting(tmp_path / "empty")  # no star, and no server on port 1: neither is reached
    with pytest.raises(PublishError, match=r"not-dbt is not a dbt project \(no dbt_project.yml\): give --project-dir"):
        publish_postgres(empty, "host=127.0.0.1 port=1 user=nobody", project_dir=str(tmp_path / "not-dbt"))
    assert not (tmp_path / "empty").exists()


def test_a_cloud_lake_publishes_the_star_it_pulls_from_the_account(star, pg, azurite, monkeypatch, tmp_path):
    dsn, dev, prod = pg
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    writer = LakePaths.from_setting(azurite.lake_url())  # the machine that built the star pushes it
    fs = lake_filesystem(writer, check=False)
    if fs.exists("stage3p/star"):
        fs.rm("stage3p/star", recursive=True)
    shutil.copytree(star / "stage3p" / "star", Path(str(writer.root)) / "stage3p" / "star")
    open_cloud(writer).folder("stage3p", "star").push()
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / "another-machine"))  # an empty working copy
    lake = LakePaths.from_setting(azurite.lake_url())
    result = publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    assert set(result.loaded) == set(STAR_TABLES) and result.prod_tables == len(MODELS)
    assert query(dsn, dev, "SELECT count(*) FROM source.dim_date") == [(732,)]
    assert str(lake.root).startswith(str(tmp_path / "another-machine"))
    record = {"batch_id": "b2", "passed": False, "failed": {"fact_attendance_orphan_student": 1}}
    fs.pipe_file("oea-framework/gold/star_checks.json", json.dumps(record).encode())  # the star's builder's record
    with pytest.raises(PublishError, match=r"failed its checks when it was last built \(batch b2: "
                       r"fact_attendance_orphan_student 1\)"):
        publish_postgres(lake, dsn, dev_db=dev, prod_db=prod)
    fs.rm("oea-framework/gold/star_checks.json")
    assert publish_postgres(lake, dsn, dev_db=dev, prod_db=prod).up_to_date  # no record: no failure recorded


def test_a_user_without_createdb_or_createrole_is_told_what_to_grant_and_prod_stays_empty(lake, pg, postgres,
                                                                                          monkeypatch):
    dsn, dev, prod = pg
    postgres.psql("CREATE ROLE oea_limited LOGIN PASSWORD 'limited-Pa55word'")
    limited = f"host={postgres.host} port={postgres.port} user=oea_limited"
    monkeypatch.setenv("PGPASSWORD", "limited-Pa55word")
    with pytest.raises(PublishError, match=rf"database '{dev}' does not exist and user 'oea_limited' may not create "
                       r"it: create it .* or let the user create databases \(ALTER ROLE oea_limited CREATEDB\)$"):
        publish_postgres(lake, limited, dev_db=dev, prod_db=prod)
    for database in (dev, prod):
        postgres.psql(f"CREATE DATABASE {database} OWNER oea_limited")
    with pytest.raises(PublishError, match=r"user 'oea_limited' may not create or change the role oea_reader: grant "
                       r"it CREATEROLE \(ALTER ROLE oea_limited CREATEROLE\)"):
        publish_postgres(lake, limited, dev_db=dev, prod_db=prod)
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    assert query(dsn, dev, "SELECT count(*) FROM transformed.schools") == [(3,)]  # dbt ran in dev
    assert not query(dsn, prod, "SELECT 1 FROM pg_namespace WHERE nspname = 'transformed'")


@pytest.mark.parametrize(("arrow", "ddl", "values", "expected"), [
    (pa.int8(), "smallint", [-3, None], [-3, None]),
    (pa.uint32(), "bigint", [4_000_000_000], [4_000_000_000]),
    (pa.uint64(), "numeric(20,0)", [2**64 - 1], [Decimal(2**64 - 1)]),
    (pa.float16(), "real", None, None),
    (pa.decimal128(9, 3), "numeric(9,3)", [Decimal("1.500")], [Decimal("1.500")]),
    (pa.large_string(), "text", ["é"], ["é"]),
    (pa.string_view(), "text", ["polars"], ["polars"]),
    (pa.dictionary(pa.int8(), pa.string()), "text", None, None),
    (pa.timestamp("ns", "UTC"), "timestamptz", [dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc)],
     [dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc)]),
    (pa.timestamp("us"), "timestamp", [dt.datetime(2024, 1, 1)], [dt.datetime(2024, 1, 1)]),
    (pa.date64(), "date", [dt.date(2024, 2, 29)], [dt.date(2024, 2, 29)]),
    (pa.large_binary(), "bytea", [b"\x00"], [b"\x00"]),
    (pa.null(), "text", [None], [None]),
    (pa.map_(pa.string(), pa.int32()), "jsonb", None, None),
])
def test_each_arrow_type_has_a_postgresql_type_and_values_a_binary_copy_takes(arrow, ddl, values, expected):
    column = pg_column("c", arrow, "stage3p/star/t")
    assert column.ddl == ddl
    if values is not None:
        assert column.values(pa.array(values, arrow)) == expected


def test_a_dictionary_column_is_decoded_and_a_type_without_a_counterpart_is_named():
    column = pg_column("c", pa.dictionary(pa.int8(), pa.string()), "stage3p/star/t")
    assert column.values(pa.array(["a", None, "a"]).dictionary_encode()) == ["a", None, "a"]
    with pytest.raises(PublishError, match=r"column 'c' of stage3p/star/t has Arrow type month_day_nano_interval, "
                       r"which has no PostgreSQL type here; cast it in the lake"):
        pg_column("c", pa.month_day_nano_interval(), "stage3p/star/t")
