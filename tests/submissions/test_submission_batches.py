"""Submissions judged on their own batch: a bundle's rows and options are its own, and a rejected bundle
sent again, fixed, is written once (real tarballs, real land and ingest on both Delta engines)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from oea_core import LakePaths, RejectedRowsError, Salt, submit_bundle
from oea_core.clever import CleverModule

if TYPE_CHECKING:
    from pathlib import Path

SALT = "submission-batches-salt-5c1d"
HEADER = b"date,sis_id,clever_user_id,clever_school_id,school_name,active,num_logins,num_resources_accessed\n"
DAILY = "daily-participation/2022-02-01-daily-participation-students.csv"
pytestmark = pytest.mark.usefixtures("spark")


@pytest.fixture
def salted(monkeypatch, engine):
    monkeypatch.setenv("OEA_SALT", SALT)
    monkeypatch.setenv("OEA_ENGINE", engine)


def daily(first: int, good: int, bad: int = 0) -> bytes:
    rows = [b"2022-02-01,S%d,u%d,s1,Lincoln,true,1,1\n" % (n, n) for n in range(first, first + good)]
    return HEADER + b"".join(rows) + b"not-a-date,B1,b1,s1,Lincoln,true,1,1\n" * bad


def bundle(path: Path, data: bytes, options: dict | None = None) -> Path:
    config = {"pipeline": "clever_ingress_v1", "options": options or {}}
    with tarfile.open(path, "w:gz") as tar:
        for name, content in (("pipeline-config.json", json.dumps(config).encode()), (DAILY, data)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return path


def students(lake: LakePaths) -> list[str]:
    """The pseudonymized student ids in the lake, one per row written."""
    path = lake.table("stage2p", "clever", "daily_participation_pseudo")
    if not os.path.isdir(path):
        return []
    return sorted(DeltaTable(path).to_pyarrow_table(columns=["sis_id_pseudonym"]).column(0).to_pylist())


@pytest.mark.usefixtures("salted")
def test_a_bundle_is_judged_on_its_own_rows_and_a_fixed_resend_is_written_once(lake, tmp_path):
    a = submit_bundle(lake, bundle(tmp_path / "a.tar.gz", daily(0, 20, bad=5)))  # 5 of 25: 20%
    assert a.status == "rejected" and "5 of 25 rows" in a.reason and "nothing of batch" in a.reason
    assert students(lake) == []
    assert not os.listdir(lake.path("stage1np", "clever", "daily-participation")), "the rejected batch is removed"
    b = submit_bundle(lake, bundle(tmp_path / "b.tar.gz", daily(100, 168)))  # pooled with A: 5 of 193, under 5%
    assert b.status == "accepted", b.reason
    assert any("1 batches, 168 rows written, 0 rejected" in line for line in b.summaries)
    assert len(students(lake)) == 168
    fixed = submit_bundle(lake, bundle(tmp_path / "a-fixed.tar.gz", daily(0, 20)))
    assert fixed.status == "accepted", fixed.reason
    ids = students(lake)
    assert len(ids) == 188 and len(set(ids)) == 188, "A's 20 rows are in once"


@pytest.mark.usefixtures("salted")
def test_a_bundle_s_options_apply_to_its_own_batch_only(lake, tmp_path):
    module = CleverModule(lake, salt=Salt(SALT, "test"))
    (tmp_path / "plain" / "daily-participation").mkdir(parents=True)
    (tmp_path / "plain" / DAILY).write_bytes(daily(500, 5, bad=5))
    module.land(tmp_path / "plain")  # a plain landing, half bad, pending
    generous = submit_bundle(lake, bundle(tmp_path / "c.tar.gz", daily(0, 3, bad=1), {"max_reject_share": 1}))
    assert generous.status == "accepted", generous.reason
    assert len(students(lake)) == 3, "the bundle's share of 1 did not push the pending plain batch through"
    with pytest.raises(RejectedRowsError, match=r"5 of 10 rows"):
        module.ingest()  # the plain batch is still judged by the plain ingest's share
    assert len(students(lake)) == 3
