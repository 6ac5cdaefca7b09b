"""The gold layer over what exists: an export without sections or attendance builds what it can and names the
rest; a failed check commits nothing and is recorded for publishing; a deterministic failure is not retried."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from oea_core.errors import DataQualityError
from oea_core.flow import FlowError, FlowRun, load_flow
from oea_core.gold import VAULT_CHECKS, build_star, build_vault, run_checks
from oea_core.gold.model import STAR_TABLES, VAULT_TABLES
from oea_core.sql.view_sets import view_set_script
from oea_testing.gold_data import EdFiState, school, write_partial, write_state

T1, T2, T3 = (dt.datetime(2024, 1, day, 6, tzinfo=dt.timezone.utc) for day in (1, 2, 3))
EDFI = "stage2p/edfi/"


def versions(store, lake, area, tables):
    return {t: store.version(lake.table("stage3p", area, t)) for t in tables}


def record(lake):
    return json.loads(Path(lake.state_path("gold", "star_checks.json")).read_text())


def test_the_gold_layer_follows_what_exists_and_a_failed_check_commits_nothing(spark, store, lake):
    good = EdFiState()
    nameless = good.but(schools=(good.schools[0], school(102, "Adams Middle")[:2] + (None,) + school(102, "Adams Middle")[3:]))
    write_partial(spark, store, lake, nameless)  # students, schools, enrollments: no sections, no attendance
    vault = build_vault(lake, "b1", load_ts=T1, store=store)
    assert vault.missing == {"hub_section": (EDFI + "sections", EDFI + "student_section_associations"),
                             "link_section_enrollment": (EDFI + "student_section_associations",)}
    with pytest.raises(DataQualityError, match=r"star batch b1: .*\(dim_school_nameOfInstitution_required: 1\); "
                       r"nothing was written"):
        build_star(lake, "b1", effective_date="2023-08-01", store=store)
    assert set(versions(store, lake, "star", STAR_TABLES).values()) == {None}  # nothing committed
    assert record(lake) == {"batch_id": "b1", "passed": False, "failed": {"dim_school_nameOfInstitution_required": 1},
                            "checked": True}

    write_partial(spark, store, lake, good)
    build_vault(lake, "b2", load_ts=T2, store=store)
    star = build_star(lake, "b2", effective_date="2023-08-01", store=store)
    assert star.missing == {"dim_section": (EDFI + "sections",),
                            "fact_attendance": (EDFI + "student_school_attendance_events",),
                            "fact_digital_activity": ("stage2p/clever/daily_participation_pseudo",
                                                      "stage2p/clever/resource_usage_pseudo")}
    assert str(star).startswith("5 tables written") or str(star).startswith("4 tables written"), str(star)
    assert "not built (source table missing): dim_section (stage2p/edfi/sections), " in str(star)
    assert record(lake) == {"batch_id": "b2", "passed": True, "failed": {}, "checked": True}
    script = view_set_script(lake, "star", account="acct")
    assert "[dbo].[dim_section]" not in script and "-- No view (table not built): dim_section, fact_attendance, fact_digital_activity." in script
    built = versions(store, lake, "star", STAR_TABLES)

    write_state(spark, store, lake, good)  # a later batch brings sections, attendance and Clever
    assert not build_vault(lake, "b3", load_ts=T3, store=store).missing
    later = build_star(lake, "b3", effective_date="2023-09-01", store=store)
    assert not later.missing and not any(later.checks.values())
    now = versions(store, lake, "star", STAR_TABLES)
    assert {t for t in STAR_TABLES if built[t] is None} == {"dim_section", "fact_attendance", "fact_digital_activity"}
    assert all(now[t] is not None for t in STAR_TABLES) and now["fact_enrollment"] == built["fact_enrollment"]
    assert all(store.exists(lake.table("stage3p", "vault", t)) for t in VAULT_TABLES)


def test_two_schools_claiming_one_school_id_fail_the_vault_checks_and_nothing_is_committed(spark, rs_store, lake):
    twice = EdFiState().but(schools=EdFiState().schools + (("sch-other",) + school(101, "Lincoln Annex")[1:],))
    write_state(spark, rs_store, lake, twice)
    counts = run_checks(rs_store, lake, [c for c in VAULT_CHECKS if c.source])
    assert counts == {"sat_student_demographics_source_keys_unique": 0, "sat_school_source_keys_unique": 1,
                      "sat_enrollment_source_keys_unique": 0}
    with pytest.raises(DataQualityError, match=r"vault batch b1: .*sat_school_source_keys_unique: 1"):
        build_vault(lake, "b1", load_ts=T1, store=rs_store)
    assert set(versions(rs_store, lake, "vault", VAULT_TABLES).values()) == {None}


@pytest.fixture
def rs_store(spark):
    from oea_core.delta import DeltaRsStore

    return DeltaRsStore(spark)


def test_a_data_quality_failure_is_not_retried(tmp_path, lake):
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent("""\
        pipeline:
          name: t
          default_retry: {attempts: 3, delay: 0}
          stages:
            - name: s
              groups:
                - name: g
                  steps:
                    - {name: star, kind: python, callable: "oea_testing.gold_data:fails_its_checks"}
        """), encoding="utf-8")
    with pytest.raises(FlowError, match="DataQualityError: star batch b1"):
        FlowRun(load_flow(flow), lake, batch_id="b1", sleep=lambda _: None).run()
    log = json.loads((Path(lake.state_path("runs", "b1")) / "run_log.json").read_text())
    assert log["steps"]["star"]["attempts"] == 1
    assert (Path(lake.state_path("runs")) / "dq.count").read_text() == "1"
