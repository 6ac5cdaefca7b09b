"""Tests of the deterministic Clever export generator (no Spark)."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import pytest

from oea_core.clever.generator import (
    COLUMNS,
    QUIRKS,
    ROLES,
    CleverStudent,
    generate_clever_export,
    object_id_for,
)
from oea_testing import digest

DAILY, USAGE = "daily-participation", "resource-usage"
REPO = Path(__file__).resolve().parents[2]
UNPADDED = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
PADDED = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def all_rows(export, report: str) -> list[dict[str, str]]:
    return [row for path in export.files if path.parent.name == report for row in read_rows(path)]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return generate_clever_export(tmp_path_factory.mktemp("clever"))


def test_layout_and_result(export):
    assert export.users == {"students": 40, "teachers": 4, "staff": 2}
    assert len(export.files) == 2 * 3 * 3
    names = {p.relative_to(export.root).as_posix() for p in export.files}
    for report in (DAILY, USAGE):
        for day in ("2022-01-03", "2022-01-04", "2022-01-05"):
            for role in ROLES:
                assert f"{report}/{day}-{report}-{role}.csv" in names
    assert all(p.is_file() for p in export.files)
    with pytest.raises(AttributeError):
        export.root = Path("elsewhere")


def test_same_arguments_give_identical_bytes(tmp_path):
    a = generate_clever_export(tmp_path / "a", students=25, days=2, seed=11)
    b = generate_clever_export(tmp_path / "b", students=25, days=2, seed=11)
    rel_a = [p.relative_to(a.root) for p in a.files]
    assert rel_a == [p.relative_to(b.root) for p in b.files]
    for rel in rel_a:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes()
    assert a.rows == b.rows and a.quirks_applied == b.quirks_applied
    c = generate_clever_export(tmp_path / "c", students=25, days=2, seed=12)
    assert any((a.root / rel).read_bytes() != (c.root / rel).read_bytes() for rel in rel_a)


def test_row_counts(export):
    daily = all_rows(export, DAILY)
    usage = all_rows(export, USAGE)
    assert len(daily) == export.rows[DAILY] == 46 * 3
    active = [r for r in daily if r["active"] == "true"]
    assert 0 < len(active) < len(daily)
    assert len(usage) == export.rows[USAGE] == len(active) * 2
    for row in daily:
        if row["active"] == "true":
            assert 1 <= int(row["num_logins"]) <= 5 and row["num_resources_accessed"] == "2"
        else:
            assert row["active"] == "false"
            assert row["num_logins"] == "0" and row["num_resources_accessed"] == "0"
    # Each active user-day has distinct resources, and only active user-days appear in resource-usage.
    active_keys = {(r["date"].replace("-0", "-"), r["clever_user_id"]) for r in active}
    per_user_day: dict[tuple[str, str], list[str]] = {}
    for row in usage:
        per_user_day.setdefault((row["date"].replace("-0", "-"), row["clever_user_id"]), []).append(
            row["resource_id"])
        assert int(row["num_access"]) >= 1
    assert set(per_user_day) == active_keys
    assert all(len(ids) == len(set(ids)) == 2 for ids in per_user_day.values())


def test_resources_per_active_user_and_report_subset(tmp_path):
    both = generate_clever_export(tmp_path / "both", students=30, days=2, resources_per_active_user=15)
    only = generate_clever_export(tmp_path / "only", students=30, days=2, reports=(DAILY,))
    assert set(only.rows) == {DAILY} and not (only.root / USAGE).exists()
    active = sum(r["active"] == "true" for r in all_rows(both, DAILY))
    assert both.rows[USAGE] == active * 15
    per_user_day: dict[tuple[str, str], set[str]] = {}
    for row in all_rows(both, USAGE):
        per_user_day.setdefault((row["date"], row["clever_user_id"]), set()).add(row["resource_id"])
    assert per_user_day and all(len(ids) == 15 for ids in per_user_day.values())
    # Activity does not depend on which reports are written.
    actives = {(r["date"].replace("-0", "-"), r["clever_user_id"], r["active"])
               for r in all_rows(only, DAILY)}
    assert actives == {(r["date"].replace("-0", "-"), r["clever_user_id"], r["active"])
                       for r in all_rows(both, DAILY)}


def test_every_quirk_applied_and_detectable(export):
    applied = export.quirks_applied
    assert set(applied) == set(QUIRKS)
    for quirk in QUIRKS:
        assert applied[quirk], quirk
    for rel in applied["bom"]:
        assert (export.root / rel).read_bytes().startswith(b"\xef\xbb\xbf")
    for rel in applied["crlf"]:
        data = (export.root / rel).read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") > 1
    for rel in applied["column_order"]:
        report = rel.split("/")[0]
        header = (export.root / rel).read_text(encoding="utf-8-sig").splitlines()[0].split(",")
        assert header != list(COLUMNS[report]) and sorted(header) == sorted(COLUMNS[report])
    for rel in applied["unpadded_dates"]:
        dates = {row["date"] for row in read_rows(export.root / rel)}
        assert dates and all(UNPADDED.match(d) and not PADDED.match(d) for d in dates)
    for rel in applied["quote_all"]:
        lines = (export.root / rel).read_text(encoding="utf-8-sig").splitlines()
        assert len(lines) > 1
        assert all(re.fullmatch(r'"[^"]*"(,"[^"]*")*', line) for line in lines)
    quirked = {rel for rels in applied.values() for rel in rels}
    plain = [p for p in export.files if p.relative_to(export.root).as_posix() not in quirked]
    assert plain, "some files are written without any quirk"
    for path in plain:
        assert_plain(path)


def assert_plain(path: Path) -> None:
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    lines = data.decode("utf-8").splitlines()
    assert lines[0].split(",") == list(COLUMNS[path.parent.name])
    rows = read_rows(path)
    assert all(PADDED.match(row["date"]) for row in rows)
    assert not any(line.startswith('"') for line in lines)


def test_quirks_false_gives_plain_files(tmp_path):
    export = generate_clever_export(tmp_path, quirks=False, days=2)
    assert all(not rels for rels in export.quirks_applied.values())
    for path in export.files:
        assert_plain(path)


def test_blank_sis_id_but_never_blank_user_id(export):
    rows = all_rows(export, DAILY) + all_rows(export, USAGE)
    blank = {r["clever_user_id"] for r in rows if r["sis_id"] == ""}
    assert blank, "some deactivated users have no sis_id"
    assert len(blank) < len({r["clever_user_id"] for r in rows})
    assert all(re.fullmatch(r"[0-9a-f]{24}", r["clever_user_id"]) for r in rows)
    assert all(re.fullmatch(r"[0-9a-f]{24}", r["clever_school_id"]) for r in rows)
    # Deactivation is per user: a blank sis_id is blank in every row of that user.
    assert not any(r["clever_user_id"] in blank and r["sis_id"] for r in rows)
    prefixes = {r["sis_id"][0] for r in rows if r["sis_id"]}
    assert prefixes == {"S", "T", "F"}


def test_school_name_with_comma_round_trips(export):
    names = {r["school_name"] for r in all_rows(export, DAILY)}
    assert "Washington, George Elementary" in names
    assert all(len(r) == len(COLUMNS[DAILY]) for r in all_rows(export, DAILY))


def test_roles_with_no_users_are_skipped_and_bad_arguments_rejected(tmp_path):
    export = generate_clever_export(tmp_path / "x", students=5, teachers=0, staff=0, days=1,
                                    start=date(2023, 11, 30))
    assert [p.name for p in export.files] == ["2023-11-30-daily-participation-students.csv",
                                              "2023-11-30-resource-usage-students.csv"]
    assert export.rows[DAILY] == 5
    with pytest.raises(ValueError):
        generate_clever_export(tmp_path / "y", reports=("attendance",))
    with pytest.raises(ValueError):
        generate_clever_export(tmp_path / "z", students=-1)


def test_the_default_export_is_the_committed_sample(tmp_path):
    generate_clever_export(tmp_path / "clever")
    assert digest(tmp_path / "clever") == digest(REPO / "test_data" / "clever")


ROSTER = [CleverStudent("6040001", object_id_for("school", 1), "Grand Bend High School 1"),
          CleverStudent("6040002", object_id_for("school", 2), "Grand Bend High School 2"),
          ("9900000", object_id_for("school", 1), "Grand Bend High School 1"),  # a plain tuple does too
          CleverStudent("", object_id_for("school", 2), "Grand Bend High School 2")]


def test_a_roster_gives_each_student_their_sis_id_and_school(tmp_path):
    export = generate_clever_export(tmp_path, students=ROSTER, teachers=2, staff=1, days=2, seed=3)
    assert export.users == {"students": 4, "teachers": 2, "staff": 1}
    schools = {s[1]: s[2] for s in ROSTER}
    for report in (DAILY, USAGE):
        students = [r for p in export.files if p.parent.name == report and p.name.endswith("-students.csv")
                    for r in read_rows(p)]
        assert {(r["sis_id"], r["clever_school_id"], r["school_name"]) for r in students} <= {tuple(s) for s in ROSTER}
        staff = [r for p in export.files if p.parent.name == report and not p.name.endswith("-students.csv")
                 for r in read_rows(p)]
        assert staff and all(schools[r["clever_school_id"]] == r["school_name"] for r in staff)
    daily = [r for p in export.files if p.name.endswith("daily-participation-students.csv") for r in read_rows(p)]
    assert sorted(r["sis_id"] for r in daily) == sorted(2 * ["6040001", "6040002", "9900000", ""])
    assert len({r["clever_user_id"] for r in daily}) == 4  # every student has a Clever id, blank sis_id or not
    again = generate_clever_export(tmp_path / "again", students=ROSTER, teachers=2, staff=1, days=2, seed=3)
    assert [p.read_bytes() for p in export.files] == [p.read_bytes() for p in again.files]


def test_object_id_for_is_stable_and_shaped_like_clever_ids():
    assert object_id_for("school", 1) == object_id_for("school", 1) != object_id_for("school", 2)
    assert re.fullmatch(r"[0-9a-f]{24}", object_id_for("school", 1))


@pytest.mark.parametrize(("roster", "others", "message"), [
    ([ROSTER[0], ROSTER[0]], 0, r"sis_id \['6040001'\] given more than once"),
    ([CleverStudent("1", "", "A")], 0, "every student needs a clever_school_id"),
    ([], 3, "an empty roster has no schools for the teachers and staff"),
])
def test_a_bad_roster_is_refused_with_the_reason(tmp_path, roster, others, message):
    with pytest.raises(ValueError, match=message):
        generate_clever_export(tmp_path, students=roster, teachers=others, staff=0)


def test_two_deactivated_students_in_a_roster_are_two_users(tmp_path):
    blank = [CleverStudent("", "s1", "A"), CleverStudent("", "s1", "A")]
    export = generate_clever_export(tmp_path, students=blank, teachers=0, staff=0, days=1)
    assert export.rows[DAILY] == 2
