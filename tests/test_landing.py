"""Landing an export folder into stage1np exactly once."""

from __future__ import annotations

import json
import os

import pytest

from oea_core import LandingError
from oea_core.clever import CleverModule
from oea_core.landing import MANIFEST, list_batches


def export(tmp_path, files: dict[str, str]) -> str:
    root = tmp_path / "export"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


DAILY = "date,sis_id,clever_user_id\n2022-01-09,s1,u1\n"


def test_land_copies_files_by_report_and_role_with_a_manifest(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/2022-01-09-daily-participation-students.csv": DAILY,
                            "daily-participation/2022-01-09-daily-participation-teachers.csv": DAILY + "x\n",
                            "resource-usage/staff/usage.csv": "date\n", "notes.txt": "not data"})
    result = CleverModule(lake).land(src, batch_id="b1")
    assert result.batch_id == "b1" and len(result.landed) == 3
    assert result.ignored == ("notes.txt",)
    base = lake.path("stage1np", "clever")
    assert os.path.exists(os.path.join(base, "daily-participation", "b1", "students",
                                       "2022-01-09-daily-participation-students.csv"))
    assert os.path.exists(os.path.join(base, "daily-participation", "b1", "teachers",
                                       "2022-01-09-daily-participation-teachers.csv"))
    assert os.path.exists(os.path.join(base, "resource-usage", "b1", "staff", "usage.csv"))
    with open(os.path.join(base, "daily-participation", "b1", MANIFEST)) as fh:
        manifest = json.load(fh)
    assert {f["path"] for f in manifest["files"]} == {
        "students/2022-01-09-daily-participation-students.csv",
        "teachers/2022-01-09-daily-participation-teachers.csv"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])


def test_landing_the_same_bytes_again_is_a_no_op(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students.csv": DAILY})
    module = CleverModule(lake)
    first = module.land(src)
    again = module.land(src)
    assert first.batch_id and again.batch_id is None and again.already_landed == ("daily-participation/students.csv",)
    renamed = export(tmp_path / "other", {"daily-participation/copy-students.csv": DAILY})
    assert module.land(renamed).batch_id is None, "same SHA-256 under another name is the same file"
    assert list_batches(lake, "clever", "daily-participation") == [first.batch_id]


def test_only_new_files_make_a_new_batch(lake, tmp_path):
    module = CleverModule(lake)
    module.land(export(tmp_path, {"daily-participation/students.csv": DAILY}), batch_id="b1")
    result = module.land(export(tmp_path / "2", {"daily-participation/students.csv": DAILY,
                                                 "daily-participation/staff.csv": DAILY + "y\n"}), batch_id="b2")
    assert [f.relative_path for f in result.landed] == ["daily-participation/b2/staff/staff.csv"]


def test_a_file_without_a_role_is_refused_before_anything_lands(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/report.csv": DAILY})
    with pytest.raises(LandingError, match="cannot tell the role of daily-participation/report.csv"):
        CleverModule(lake).land(src)
    assert not os.path.exists(lake.path("stage1np", "clever"))


def test_missing_or_empty_source_folder(lake, tmp_path):
    with pytest.raises(LandingError, match="does not exist"):
        CleverModule(lake).land(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LandingError, match="no clever files found"):
        CleverModule(lake).land(tmp_path / "empty")


def test_bad_batch_id_is_refused(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students.csv": DAILY})
    with pytest.raises(Exception, match="batch id '../x' is not a valid lake name"):
        CleverModule(lake).land(src, batch_id="../x")
