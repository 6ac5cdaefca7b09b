"""generate_district: an Ed-Fi export and a Clever export of one district whose students and schools match."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from oea_core import DistrictExport, LakePaths, Salt, generate_district, pseudonym
from oea_core.clever import CleverModule
from oea_core.cli import main
from oea_core.district import CLEVER_START, UNMATCHED_PREFIX
from oea_core.edfi import EdFiModule, write_edfi_export
from oea_core.edfi.generator import EdFiDataset
from oea_testing import TEST_SALT


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> DistrictExport:
    return generate_district(tmp_path_factory.mktemp("district"), students=24, batches=4, days=20, seed=5)


def student_rows(district: DistrictExport, report: str) -> list[dict[str, str]]:
    rows = []
    for path in district.clever.files:
        if path.parent.name == report and path.name.endswith("-students.csv"):
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows += list(csv.DictReader(handle))
    return rows


def test_clever_students_are_edfi_students_plus_known_extras(district):
    edfi_ids = {student_id for student_id, _, _ in district.edfi.roster()}
    clever_ids = {r["sis_id"] for r in student_rows(district, "daily-participation")}
    assert clever_ids == set(district.matched_sis_ids) | set(district.unmatched_sis_ids) | {""}
    assert set(district.matched_sis_ids) <= edfi_ids and not set(district.unmatched_sis_ids) & edfi_ids
    assert len(district.unmatched_sis_ids) == 2 and district.deactivated_students == 1
    assert all(s.startswith(UNMATCHED_PREFIX) for s in district.unmatched_sis_ids)
    # every Ed-Fi student is in Clever but those the last batch first brought; deleted ones stay
    newest = {s for s, _, batch in district.edfi.roster() if batch == len(district.edfi.batches) - 1}
    assert newest and set(district.matched_sis_ids) == edfi_ids - newest
    assert set(district.deleted_sis_ids) == district.edfi.deleted_students() and district.deleted_sis_ids


def test_clever_schools_are_the_edfi_schools_under_clever_ids(district):
    first_school = {s: school for s, school, _ in district.edfi.roster()}
    names = district.edfi.school_names(0)
    assert sorted(district.clever_schools.values()) == sorted(names)
    for row in student_rows(district, "daily-participation") + student_rows(district, "resource-usage"):
        school_id = district.clever_schools[row["clever_school_id"]]
        assert row["school_name"] == names[school_id]
        if row["sis_id"] in first_school:
            assert school_id == first_school[row["sis_id"]]


def test_the_unmatched_rows_are_counted(district):
    for report in ("daily-participation", "resource-usage"):
        rows = student_rows(district, report)
        unmatched = [r for r in rows if r["sis_id"] not in district.matched_sis_ids]
        assert district.unmatched_rows[report] == len(unmatched) > 0
        assert {r["sis_id"] for r in unmatched} <= set(district.unmatched_sis_ids) | {""}


def test_clever_days_cover_the_edfi_history(district):
    days = sorted({r["date"].replace("-", "") for r in student_rows(district, "daily-participation")})
    exits = [r["exitWithdrawDate"].replace("-", "")
             for r in district.edfi.state()["studentSchoolAssociations"].values() if r.get("exitWithdrawDate")]
    assert len(exits) == 2 and all(days[0] < e < days[-1] for e in exits)
    assert district.clever.files[0].name.startswith(CLEVER_START.isoformat())


def test_both_exports_are_written_in_their_landed_layouts(district):
    assert (district.root / "edfi" / "students" / "incremental" / "upserts").is_dir()
    assert (district.root / "edfi" / "schools" / "incremental" / "upserts").is_dir()
    assert {p.parent.parent for p in district.clever.files} == {district.root / "clever"}
    assert len(district.edfi_files) == len(set(district.edfi_files)) > 0


def test_the_command_writes_the_pair_and_says_what_matches(tmp_path, capsys):
    assert main(["generate", "district", str(tmp_path / "d"), "--students", "8", "--days", "3"]) == 0
    out = capsys.readouterr().out
    assert "Clever students: 9 matching Ed-Fi, 2 unmatched, 1 with a blank sis_id" in out
    again = generate_district(tmp_path / "again", students=8, days=3)
    for path in again.clever.files:
        assert (tmp_path / "d" / path.relative_to(again.root)).read_bytes() == path.read_bytes()
    assert main(["generate", "district", str(tmp_path / "e"), "--batches", "2"]) == 1
    assert "history needs at least 3 batches" in capsys.readouterr().err
    assert main(["generate", "district", str(tmp_path / "f"), "--batches", "2", "--no-history"]) == 0


def test_pseudonyms_meet_under_one_salt(spark, engine, tmp_path):
    """Both exports ingested into one lake: Clever's sis_id_pseudonym is Ed-Fi's studentUniqueId_pseudonym."""
    district = generate_district(tmp_path / "export", students=8, batches=3, days=2, seed=3)
    lake = LakePaths.from_setting(tmp_path / "lake")
    salt = Salt(TEST_SALT, "test")
    keep = ("students", "schools")
    batches = [[e for e in batch if e.resource in keep] for batch in district.edfi.batches]
    write_edfi_export(EdFiDataset(batches=batches, start=district.edfi.start), tmp_path / "edfi")
    edfi = EdFiModule(lake, spark=spark, salt=salt, engine=engine)
    edfi.land(tmp_path / "edfi")
    edfi.ingest()
    clever = CleverModule(lake, spark=spark, salt=salt, engine=engine)
    clever.land(Path(district.root / "clever"))
    clever.ingest()
    edfi_pseudonyms = {r["studentUniqueId_pseudonym"] for r in edfi.store.read_arrow(
        lake.table("stage2p", "edfi", "students")).to_pylist()}
    daily = clever.store.read_arrow(lake.table("stage2p", "clever", "daily_participation_pseudo")).to_pylist()
    students = [r for r in daily if r["role"] == "students"]
    met = {r["sis_id_pseudonym"] for r in students} & edfi_pseudonyms
    alive = set(district.matched_sis_ids) - set(district.deleted_sis_ids)
    assert met == {pseudonym(s, TEST_SALT) for s in alive}
    unknown = [r for r in students if r["sis_id_pseudonym"] not in edfi_pseudonyms]
    deleted = {pseudonym(s, TEST_SALT) for s in district.deleted_sis_ids}
    assert len([r for r in unknown if r["sis_id_pseudonym"] not in deleted]) == district.unmatched_rows[
        "daily-participation"]


def test_the_clever_module_page_gives_the_default_counts(tmp_path):
    district = generate_district(tmp_path)
    page = (Path(__file__).resolve().parents[1] / "module_catalog" / "clever" / "README.md").read_text()
    rows = district.unmatched_rows
    assert (f"{len(district.unmatched_sis_ids)} and {district.deactivated_students} students, "
            f"{rows['daily-participation']} `daily-participation` and {rows['resource-usage']} `resource-usage`"
            in " ".join(page.split()))
