"""The Data Vault: hash keys over pseudonyms, no raw identifier, insert-only satellites, idempotent batches."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest
from pyspark.sql import functions as F

from oea_core.delta import DeltaRsStore
from oea_core.gold import VAULT_CHECKS, build_vault, hash_key, run_checks
from oea_core.gold.model import VAULT_TABLES
from oea_testing.gold_data import RAW_STUDENTS, EdFiState, pseudo, student, write_state

T1, T2, T3 = (dt.datetime(2024, 1, day, 6, tzinfo=dt.timezone.utc) for day in (1, 2, 3))


@pytest.fixture
def rs(spark):
    return DeltaRsStore(spark)


def vault(store, lake, table):
    return store.read(lake.table("stage3p", "vault", table))


def versions(store, lake):
    return {t: store.version(lake.table("stage3p", "vault", t)) for t in VAULT_TABLES}


def test_hub_keys_are_sha256_of_normalized_pseudonyms_and_no_raw_id_reaches_the_vault(spark, rs, small_gold,
                                                                                       vault_lake):
    # small_gold's vault build: write_state(EdFiState()), build_vault(b1, load_ts=T1); the lake right after it
    lake, result = vault_lake, small_gold.vault
    assert result.checks and not any(result.checks.values())
    hub_student = vault(rs, lake, "hub_student")
    hub = {r.studentUniqueId_pseudonym: r for r in hub_student.collect()}
    assert set(hub) == {pseudo(raw) for raw in RAW_STUDENTS}
    for pseudonym, row in hub.items():
        assert row.student_hk == hashlib.sha256(pseudonym.upper().encode()).hexdigest() == hash_key(pseudonym)
        assert row.record_source == "stage2p/edfi/students"
    assert hub_student.where(F.col("load_ts") == F.lit(T1)).count() == 3
    link = vault(rs, lake, "link_enrollment").collect()
    assert {r.enrollment_hk for r in link} == {hash_key(pseudo("S-1002"), 101, dt.date(2023, 8, 21)),
                                                hash_key(pseudo("S-1002"), 102, dt.date(2024, 1, 16)),
                                                hash_key(pseudo("S-1001"), 101, dt.date(2023, 8, 21)),
                                                hash_key(pseudo("S-1003"), 102, dt.date(2023, 8, 21))}
    for table in VAULT_TABLES:
        for row in vault(rs, lake, table).collect():
            text = " ".join(str(value) for value in row)
            assert not any(raw in text for raw in RAW_STUDENTS), (table, row)

    # the checks run on the lake's tables: a link to a student the hub lacks, a school key twice
    def append(table, row, **changes):
        path = lake.table("stage3p", "vault", table)
        rs.write(spark.createDataFrame([row.asDict() | changes], rs.schema(path)), path)

    append("link_enrollment", link[0], enrollment_hk="e" * 64, student_hk="f" * 64)
    append("hub_school", vault(rs, lake, "hub_school").collect()[0])
    failed = {name: count for name, count in run_checks(rs, lake, VAULT_CHECKS).items() if count}
    assert failed == {"link_enrollment_hub_student_orphans": 1, "hub_school_keys_unique": 1}


def test_satellites_insert_only_on_a_hashdiff_change_and_a_rerun_or_unchanged_batch_writes_nothing(spark, rs, lake):
    state = EdFiState()
    write_state(spark, rs, lake, state)
    build_vault(lake, "b1", load_ts=T1, store=rs, checks=False)
    changed = state.but(students=(student("S-1001", "Male"), student("S-1002", "Male")))  # S-1003 deleted
    write_state(spark, rs, lake, changed)
    before = versions(rs, lake)
    result = build_vault(lake, "b2", load_ts=T2, store=rs)
    after = versions(rs, lake)
    assert {t for t in VAULT_TABLES if before[t] != after[t]} == {"sat_student_demographics"}
    new = {(r.student_hk, r.birthSexDescriptor, r.is_deleted) for r in vault(rs, lake, "sat_student_demographics")
           .where(F.col("load_ts") == F.lit(T2)).collect()}
    assert new == {(hash_key(pseudo("S-1001")), "Male", False), (hash_key(pseudo("S-1003")), None, True)}
    assert result.tables["sat_student_demographics"].rows == 2
    # b2's checks passed, so its input versions were recorded: a rerun, or a batch with no new input, does nothing
    rerun, unchanged = (build_vault(lake, b, load_ts=T3, store=rs) for b in ("b2", "b3"))
    assert rerun.up_to_date and unchanged.up_to_date and not rerun.tables and unchanged.rows == 0
    assert versions(rs, lake) == after
    os.remove(lake.state_path("gold", "vault_inputs.json"))  # without the record, the batch's app id skips it
    assert build_vault(lake, "b2", load_ts=T3, store=rs).tables["sat_student_demographics"].skipped
    write_state(spark, rs, lake, changed.but(students=(student("S-1001", "Female"), student("S-1002", "Male"))))
    again = build_vault(lake, "b4", load_ts=T3, store=rs)  # an input changed: built, and recorded again
    assert not again.up_to_date and again.tables["sat_student_demographics"].rows == 1
    assert build_vault(lake, "b5", load_ts=T3, store=rs).up_to_date
