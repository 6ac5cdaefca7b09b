"""The gold entry points' settings: what they refuse before starting any work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from oea_core import GoldError, build_star, build_vault
from oea_core.delta import WriteResult
from oea_core.flow.steps import _rows
from oea_core.gold import GoldResult
from oea_core.gold.build import _record_checks


@pytest.mark.parametrize("build", [build_vault, build_star])
def test_a_build_without_a_lake_or_batch_says_how_to_give_them(build, lake):
    with pytest.raises(GoldError, match=r"needs a lake and a batch id: pass lake= and batch_id=, or run it as a flow"):
        build()
    with pytest.raises(GoldError, match="needs a lake and a batch id"):
        build(context={"lake": lake})


def test_an_effective_date_that_is_not_a_date_is_refused_before_any_work(lake):
    with pytest.raises(GoldError, match=r"effective_date '2024-13-01' is not a date: give YYYY-MM-DD"):
        build_star(lake, "b1", effective_date="2024-13-01", store=object())  # type: ignore[arg-type]


def test_a_flow_step_reports_the_rows_a_build_wrote():
    result = GoldResult({"hub_student": WriteResult("p", 1, 1, 3), "hub_school": WriteResult("q", 0, 0, 0, skipped=True)})
    assert _rows(result) == 3


def test_the_star_checks_record_is_rewritten_only_when_the_outcome_changes(lake):
    # a rerun with nothing new leaves the file, so a cloud lake pushes nothing (its account stays as it was)
    path = Path(lake.state_path("gold", "star_checks.json"))
    _record_checks(lake, "b1", {"dim_student_unique_key": 0}, True)
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    _record_checks(lake, "b1", {"dim_student_unique_key": 0}, True)
    assert path.stat().st_mtime_ns == first
    _record_checks(lake, "b1", {"dim_student_unique_key": 2}, True)
    assert json.loads(path.read_text()) == {"batch_id": "b1", "passed": False, "failed": {"dim_student_unique_key": 2},
                                            "checked": True}
