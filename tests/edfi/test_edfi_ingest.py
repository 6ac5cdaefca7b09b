"""Ed-Fi ingest (current state: upserts and deletes) and refine (flat, typed, pseudonymized tables)."""

from __future__ import annotations

import json
import logging
import os

import pyarrow as pa
import pytest

from oea_core import LakePaths, RejectedRowsError, Salt, pseudonym
from oea_core.edfi import EdFiModule, generate_edfi, write_edfi_export
from oea_core.edfi.flatten import MAX_DEPTH, flatten_record
from oea_core.edfi.generator import EdFiDataset
from oea_core.edfi.ingest import MAX_RECORD_BYTES, RAW_KEPT, change_version, parse_file
from oea_core.edfi.key_changes import apply_to, rewrite_keys
from oea_core.edfi.metadata import table_name
from oea_testing import ENGINES

TEST_SALT = "edfi-test-salt-77"


@pytest.fixture(scope="module", params=ENGINES)
def refined(spark, tmp_path_factory, request):
    """A lake holding the generated three-batch export, landed and ingested once, by each engine."""
    root = tmp_path_factory.mktemp("edfi")
    dataset = generate_edfi(students=24, staff=4, schools=2, batches=3, seed=5, key_changes=True)
    write_edfi_export(dataset, root / "export")
    module = EdFiModule(LakePaths.from_setting(root / "lake"), spark=spark, salt=Salt(TEST_SALT, "test"),
                        engine=request.param)
    module.land(root / "export", batch_id="run1")
    results = module.ingest()
    return module, dataset, results


def arrow(module, stage, table) -> pa.Table:
    return module.store.read_arrow(module.lake.table(stage, "edfi", table))


def test_current_state_is_the_newest_version_of_every_record(refined):
    module, dataset, _ = refined
    expected = dataset.state()
    for resource, records in expected.items():
        state = arrow(module, "stage2np", table_name(resource)).to_pylist()
        assert sorted(r["id"] for r in state) == sorted(records), resource
        for row in state:
            assert json.loads(row["_record"]) == records[row["id"]], resource


def test_same_batch_insert_and_delete_leaves_no_record(refined):
    module, dataset, _ = refined
    for batch in dataset.batches[1:]:
        inserted = {e.record["id"] for e in batch if e.resource == "studentSchoolAttendanceEvents"
                    and e.kind == "upsert"}
        deleted = {e.record["id"] for e in batch if e.resource == "studentSchoolAttendanceEvents"
                   and e.kind == "delete"}
        both = inserted & deleted
        assert both
        state_ids = set(arrow(module, "stage2np", "student_school_attendance_events")["id"].to_pylist())
        assert not both & state_ids
        refined_ids = set(arrow(module, "stage2p", "student_school_attendance_events")["id_pseudonym"].to_pylist())
        assert not {pseudonym(i, TEST_SALT) for i in both} & refined_ids


def test_refined_row_counts_keep_every_child_row(refined):
    module, dataset, _ = refined
    expected: dict[str, int] = {}
    for resource, records in dataset.state().items():
        for record in records.values():
            for entity, rows in flatten_record(resource, record).items():
                expected[entity] = expected.get(entity, 0) + len(rows)
    for entity, count in expected.items():  # every entity, declared in the metadata CSV or not
        path = module.lake.table("stage2p", "edfi", table_name(entity))
        if count:
            assert arrow(module, "stage2p", table_name(entity)).num_rows == count, entity
        else:  # an entity without rows gets no table
            assert not module.store.exists(path), entity
    # each section has two class periods: one row per period, not one per section
    assert expected["sections_classPeriods"] == 2 * expected["sections"] > 0
    assert expected["schools_gradeLevels"] == 4 * expected["schools"]


def test_flattening_references_descriptors_roles_and_extensions(refined):
    module = refined[0]
    ssa = arrow(module, "stage2p", "student_school_associations")
    assert {"studentUniqueId_pseudonym", "schoolId", "schoolYear", "classOfSchoolYear", "calendarCode"} <= set(
        ssa.column_names)
    assert "studentReference" not in ssa.column_names and "_etag" not in ssa.column_names
    assert set(ssa["entryGradeLevelDescriptor"].to_pylist()) <= {
        "Ninth grade", "Tenth grade", "Eleventh grade", "Twelfth grade"}
    rows = ssa.to_pylist()
    assert all(r["schoolYear"] == 2024 for r in rows) and any(r["classOfSchoolYear"] != 2024 for r in rows)
    schools = arrow(module, "stage2p", "schools").to_pylist()
    assert all(json.loads(s["_ext"])["sample"]["isExemplary"] in (True, False) for s in schools)
    students = arrow(module, "stage2p", "students").to_pylist()
    assert all(s["_ext"] in ("*", None) for s in students)
    levels = arrow(module, "stage2p", "schools_grade_levels")
    assert set(levels.column_names) >= {"id", "gradeLevels_ordinal", "gradeLevelDescriptor"}
    assert arrow(module, "stage2p", "sections").schema.field("schoolId").type == pa.int32()


def test_pseudonymized_tables_join(refined):
    module = refined[0]
    spark_read = module.read
    students = spark_read("stage2p", "students")
    ssa = spark_read("stage2p", "student_school_associations")
    assert ssa.count() == ssa.join(students, "studentUniqueId_pseudonym").count() > 0
    ssec = spark_read("stage2p", "student_section_associations")
    grades = spark_read("stage2p", "grades")
    keys = ["studentUniqueId_pseudonym", "sectionIdentifier", "schoolId", "schoolYear", "sessionName"]
    assert grades.count() == grades.join(ssec, keys).count() > 0
    children = spark_read("stage2p", "students_other_names")
    assert children.count() == children.join(students, "id_pseudonym").count() > 0
    staff = spark_read("stage2p", "staff_section_associations")
    assert staff.count() == staff.join(spark_read("stage2p", "staffs"), "staffUniqueId_pseudonym").count() > 0


def test_no_raw_identifier_or_name_reaches_stage2p(refined):
    module, dataset, _ = refined
    secret: set[str] = set()
    for event in dataset.events():
        record = event.record
        if event.resource in ("students", "staffs"):
            for key in ("studentUniqueId", "staffUniqueId", "firstName", "lastSurname", "middleName", "birthDate"):
                if record.get(key):
                    secret.add(str(record[key]))
            for mail in record.get("electronicMails", []):
                secret.add(mail["electronicMailAddress"])
            for other in record.get("otherNames", []):
                secret.add(other["firstName"])
        if event.resource in ("students", "staffs", "studentSchoolAssociations", "studentSectionAssociations",
                              "staffSectionAssociations", "grades", "studentSchoolAttendanceEvents"):
            secret.add(record["id"])
    assert len(secret) > 100
    root = module.lake.stage_root("stage2p")
    tables = [os.path.join(root, "edfi", t) for t in os.listdir(os.path.join(root, "edfi"))]
    assert len(tables) > 30
    for table in tables:
        data = module.store.read_arrow(table)
        for column in data.column_names:
            values = {str(v) for v in data[column].to_pylist() if v is not None}
            leaked = values & secret
            assert not leaked, f"{table}.{column} holds raw values such as {sorted(leaked)[:3]}"
            assert not any(s in v for v in values for s in secret if len(s) > 6), f"{table}.{column}"


def test_lookup_maps_pseudonyms_back_to_identities(refined):
    module, dataset, _ = refined
    lookup = arrow(module, "stage2np", "students_lookup").to_pylist()
    expected = {r["studentUniqueId"]: r for r in dataset.state()["students"].values()}
    assert {r["studentUniqueId"] for r in lookup} == set(expected)
    for row in lookup:
        assert row["studentUniqueId_pseudonym"] == pseudonym(row["studentUniqueId"], TEST_SALT)
        assert row["lastSurname"] == expected[row["studentUniqueId"]]["lastSurname"]
    assert not module.store.exists(module.lake.table("stage2np", "edfi", "grades_lookup"))


def test_deleted_student_disappears_from_refined_tables(refined):
    module, dataset, _ = refined
    gone = [e.record["keyValues"]["studentUniqueId"] for e in dataset.events()
            if e.resource == "students" and e.kind == "delete"]
    assert gone
    hashed = {pseudonym(s, TEST_SALT) for s in gone}
    for table in ("students", "student_school_associations", "student_section_associations", "grades"):
        assert not hashed & set(arrow(module, "stage2p", table)["studentUniqueId_pseudonym"].to_pylist()), table
    assert not set(gone) & set(arrow(module, "stage2np", "students_lookup")["studentUniqueId"].to_pylist())


def test_rerun_changes_nothing(refined):
    module, _, results = refined
    assert any(r.rows for r in results)

    def versions():
        found = {}
        for stage in ("stage2np", "stage2p"):
            root = os.path.join(module.lake.stage_root(stage), "edfi")
            for table in os.listdir(root):
                found[(stage, table)] = module.store.version(os.path.join(root, table))
        return found

    before = versions()
    again = module.ingest()
    assert all(r.nothing_new for r in again)
    assert versions() == before


# handcrafted exports -------------------------------------------------------------------------
def write_lines(folder, name, records, raw_lines=()):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
        handle.writelines(line + "\n" for line in raw_lines)


def school(record_id, name, **extra):
    return {"id": record_id, "schoolId": 1, "nameOfInstitution": name, **extra}


@pytest.fixture
def module(spark, lake, engine):
    return EdFiModule(lake, spark=spark, salt=Salt(TEST_SALT, "test"), engine=engine)


def state_of(module, resource):
    return {r["id"]: json.loads(r["_record"]) for r in arrow(module, "stage2np", table_name(resource)).to_pylist()}


def test_newest_change_wins_by_change_version_then_landing_order(module, tmp_path):
    up = tmp_path / "export" / "schools" / "incremental" / "upserts" / "rundate=2024-01-01"
    write_lines(up, "a.jsonl", [school("a1", "A new", changeVersion=9), school("a1", "A old", changeVersion=4),
                                school("b1", "B first"), school("b1", "B second")])
    module.land(tmp_path / "export", batch_id="x")
    module.ingest(refine=False)
    state = state_of(module, "schools")
    assert state["a1"]["nameOfInstitution"] == "A new"
    assert state["b1"]["nameOfInstitution"] == "B second"
    # a later batch carrying an older change version does not overwrite a newer one
    write_lines(tmp_path / "late" / "schools", "b.jsonl", [school("a1", "A stale", changeVersion=6),
                                                           school("b1", "B third")])
    module.land(tmp_path / "late", batch_id="y")
    module.ingest(refine=False)
    state = state_of(module, "schools")
    assert state["a1"]["nameOfInstitution"] == "A new"
    assert state["b1"]["nameOfInstitution"] == "B third"


def test_deletes_in_old_and_new_spelling_and_in_the_same_batch(module, tmp_path):
    base = tmp_path / "export" / "schools" / "incremental"
    write_lines(base / "upserts" / "rundate=2024-01-01", "u.json", [school("a1", "A"), school("b1", "B"),
                                                                  school("c1", "C"), school("d1", "D")])
    # same batch: c1's delete carries a change version, d1's does not (a delete still follows its upsert)
    write_lines(base / "deletes" / "rundate=2024-01-01", "d.json", [{"id": "c1", "changeVersion": 3}, {"id": "d1"}])
    write_lines(base / "deletes" / "rundate=2024-01-02", "d.json",
                [{"Id": "a1", "ChangeVersion": 5, "KeyValues": {"schoolId": 1}}])
    result = module.land(tmp_path / "export", batch_id="x")
    assert len(result.batch_ids) == 2
    module.ingest(refine=False)
    assert set(state_of(module, "schools")) == {"b1"}


def test_a_delete_that_landed_before_its_upsert_is_not_undone(module, tmp_path, lake):
    base = tmp_path / "first" / "schools" / "incremental"
    write_lines(base / "upserts" / "rundate=2024-01-01", "u.json", [school("b1", "B", changeVersion=1)])
    write_lines(base / "deletes" / "rundate=2024-01-01", "d.json", [{"id": "a1", "changeVersion": 10}, {"id": "c1"}])
    module.land(tmp_path / "first", batch_id="x")
    module.ingest(refine=False)
    # late deliveries: a1 and c1 as they were before their deletes; e1 never deleted
    write_lines(tmp_path / "late" / "schools", "u.jsonl", [school("a1", "A old", changeVersion=5),
                                                          school("c1", "C"), school("e1", "E")])
    module.land(tmp_path / "late", batch_id="y")
    module.ingest(refine=False)
    assert set(state_of(module, "schools")) == {"b1", "e1"}
    tombstones = {r["id"]: r["_change_version"] for r in arrow(module, "stage2np", "schools_tombstones").to_pylist()}
    assert tombstones == {"a1": 10, "c1": None}
    # a change provably newer than the delete passes (an id is never reused, but a newer version is the truth)
    write_lines(tmp_path / "newer" / "schools", "u.jsonl", [school("a1", "A again", changeVersion=12)])
    module.land(tmp_path / "newer", batch_id="z")
    module.ingest(refine=False)
    assert state_of(module, "schools")["a1"]["nameOfInstitution"] == "A again"
    module.ingest(refine=False)  # a rerun: nothing changes
    assert set(state_of(module, "schools")) == {"a1", "b1", "e1"}


def test_change_versions_written_as_strings_are_read_where_unambiguous(module, tmp_path):
    up = tmp_path / "export" / "schools"
    write_lines(up, "a.jsonl", [school("a1", "A new", changeVersion="9"), school("a1", "A old", changeVersion=4),
                                school("b1", "B", changeVersion=" 7 "), school("c1", "C", changeVersion=8.0)],
                raw_lines=[json.dumps(school("d1", "D", changeVersion="12a")),
                           json.dumps(school("e1", "E", changeVersion=1.5))])
    module.land(tmp_path / "export", batch_id="x")
    module.ingest(max_reject_share=0.5, refine=False)
    state = {r["id"]: r for r in arrow(module, "stage2np", "schools").to_pylist()}
    assert state["a1"]["_change_version"] == 9 and json.loads(state["a1"]["_record"])["nameOfInstitution"] == "A new"
    assert state["b1"]["_change_version"] == 7 and state["c1"]["_change_version"] == 8
    assert set(state) == {"a1", "b1", "c1"}
    reasons = sorted(r["_reject_reason"] for r in arrow(module, "stage2np", "schools_rejected").to_pylist())
    assert reasons == ["changeVersion '12a' is not an integer", "changeVersion 1.5 is not an integer"]


@pytest.mark.parametrize(("value", "expected"), [
    (123456, (123456, None)), ("123456", (123456, None)), (" -3 ", (-3, None)), (5.0, (5, None)), (None, (None, None)),
    (True, (None, "changeVersion True is not an integer")), ("1e6", (None, "changeVersion '1e6' is not an integer")),
    ("", (None, "changeVersion '' is not an integer")), (2**63, (None, f"changeVersion {2**63} is not an integer")),
    ("99999999999999999999", (None, "changeVersion '99999999999999999999' is not an integer"))])
def test_change_version_takes_numbers_and_strings_of_one(value, expected):
    assert change_version(value) == expected


def test_malformed_records_are_set_aside_with_reasons(module, tmp_path, lake):
    folder = tmp_path / "export" / "schools"
    good = [school(f"s{i}", f"School {i}") for i in range(30)]
    write_lines(folder, "part.jsonl", good, raw_lines=['{"id": "broken', '{"nameOfInstitution": "no id"}'])
    module.land(tmp_path / "export", batch_id="x")
    with pytest.raises(RejectedRowsError, match=r"schools batch x: 2 of 32 records .* could not be read.*nothing of batch x was written"):
        module.ingest()
    assert not os.path.exists(lake.stage_root("stage2np")) or not os.listdir(lake.stage_root("stage2np"))
    module.ingest(max_reject_share=0.1)
    assert len(state_of(module, "schools")) == 30
    rejected = arrow(module, "stage2np", "schools_rejected").to_pylist()
    assert sorted(r["_line"] for r in rejected) == [31, 32]
    reasons = " ".join(r["_reject_reason"] for r in rejected)
    assert "not valid JSON" in reasons and "no id" in reasons
    assert any(r["_raw"] == '{"id": "broken' for r in rejected)
    assert arrow(module, "stage2p", "schools").num_rows == 30


def test_json_array_files_with_bom_and_empty_files(module, tmp_path):
    folder = tmp_path / "export" / "schools"
    os.makedirs(folder)
    (folder / "a.json").write_text(json.dumps([school("a1", "A"), school("b1", "B")]), encoding="utf-8-sig")
    (folder / "empty.json").write_bytes(b"")
    (folder / "bom-only.json").write_bytes(b"\xef\xbb\xbf\n")
    result = module.land(tmp_path / "export", batch_id="x")
    assert len(result.empty) == 2
    module.ingest(refine=False)
    assert set(state_of(module, "schools")) == {"a1", "b1"}


def test_values_that_do_not_match_the_metadata_are_set_aside(module, tmp_path, caplog):
    records = [school(f"s{i}", f"School {i}") for i in range(40)]
    records[3]["schoolId"] = "not-a-number"
    records[5]["ssn"] = "123-45-6789"  # a field the metadata does not know: refined under the privacy rules
    records[6]["schoolId"] = "7"  # a number written as a string: unambiguous, so taken
    write_lines(tmp_path / "export" / "schools", "p.jsonl", records)
    module.land(tmp_path / "export", batch_id="x")
    with caplog.at_level(logging.WARNING, logger="oea"):
        module.ingest()
    schools = arrow(module, "stage2p", "schools")
    assert schools.num_rows == 39
    assert {v for v in schools["ssn"].to_pylist() if v is not None} == {"*"}  # masked by rule
    assert 7 in schools["schoolId"].to_pylist()
    not_refined = arrow(module, "stage2np", "schools_not_refined").to_pylist()
    assert [r["id"] for r in not_refined] == ["s3"]
    assert "schools.schoolId: 'not-a-number' is not a valid int" in not_refined[0]["_reject_reason"]
    assert "1 rows could not be refined" in caplog.text and "schools_not_refined" in caplog.text
    # every record is accounted for: current state = refined + set aside
    assert len(state_of(module, "schools")) == schools.num_rows + len(not_refined)


def person_association(number: int) -> dict:
    """A studentEducationOrganizationAssociations record: a resource the metadata CSV does not declare."""
    return {
        "id": f"seoa{number}", "changeVersion": number,
        "studentReference": {"studentUniqueId": f"S-90{number:03d}", "link": {"rel": "Student"}},
        "educationOrganizationReference": {"educationOrganizationId": 255901},
        "sexDescriptor": "uri://ed-fi.org/SexDescriptor#Female",
        "hispanicLatinoEthnicity": number % 2 == 0,
        "loginId": f"login-{number}-kq",
        "homeroomNote": f"note-{number}-zz",  # a string of unknown meaning about a person
        "gpaWeight": number + 0.5,
        "addresses": [{"addressTypeDescriptor": "uri://ed-fi.org/AddressTypeDescriptor#Home",
                       "streetNumberName": f"{number} Quarry Lane", "city": "Austin", "postalCode": "78701",
                       "periods": [{"beginDate": "2024-08-01"}]}],
        "electronicMails": [{"electronicMailAddress": f"kid{number}@example.org",
                             "electronicMailTypeDescriptor": "uri://ed-fi.org/ElectronicMailTypeDescriptor#Home"}],
        "races": [{"raceDescriptor": "uri://ed-fi.org/RaceDescriptor#White"}],
        "studentIdentificationCodes": [{"assigningOrganizationIdentificationCode": "District",
                                        "identificationCode": f"ID-77{number}",
                                        "studentIdentificationSystemDescriptor": "uri://ed-fi.org/X#District"}],
    }


def test_resources_outside_the_metadata_are_refined_under_the_privacy_rules(module, tmp_path):
    assert not module.metadata.supports("studentEducationOrganizationAssociations")
    records = [person_association(n) for n in range(1, 6)]
    calendars = [{"id": "cal1", "calendarCode": "IS", "schoolReference": {"schoolId": 255901001},
                  "schoolYearTypeReference": {"schoolYear": 2024}, "calendarTypeDescriptor": "uri://x/C#IS",
                  "gradeLevels": [{"gradeLevelDescriptor": "uri://x/G#Ninth grade"}]}]
    write_lines(tmp_path / "export" / "studentEducationOrganizationAssociations", "a.jsonl", records)
    write_lines(tmp_path / "export" / "calendars", "c.jsonl", calendars)
    module.land(tmp_path / "export", batch_id="x")
    module.ingest()
    main = arrow(module, "stage2p", "student_education_organization_associations").to_pylist()
    assert len(main) == 5
    by_number = {row["studentUniqueId_pseudonym"]: row for row in main}
    assert set(by_number) == {pseudonym(f"S-90{n:03d}", TEST_SALT) for n in range(1, 6)}
    row = by_number[pseudonym("S-90002", TEST_SALT)]
    assert row["sexDescriptor"] == "Female" and row["hispanicLatinoEthnicity"] is True
    assert row["loginId"] == "*" and row["homeroomNote"] == "*" and row["gpaWeight"] == 2.5 and row["educationOrganizationId"] == 255901
    assert row["id_pseudonym"] == pseudonym("seoa2", TEST_SALT)
    addresses = arrow(module, "stage2p", "student_education_organization_associations_addresses").to_pylist()
    assert len(addresses) == 5 and {a["streetNumberName"] for a in addresses} == {"*"}
    assert {a["postalCode"] for a in addresses} == {"*"} and {a["city"] for a in addresses} == {"*"}
    periods = arrow(module, "stage2p", "student_education_organization_associations_addresses_periods")
    assert periods.schema.field("beginDate").type == pa.date32()
    mails = arrow(module, "stage2p", "student_education_organization_associations_electronic_mails").to_pylist()
    assert {m["electronicMailAddress"] for m in mails} == {"*"}
    codes = arrow(module, "stage2p",
                  "student_education_organization_associations_student_identification_codes").to_pylist()
    assert {c["identificationCode"] for c in codes} == {"*"}
    races = arrow(module, "stage2p", "student_education_organization_associations_races").to_pylist()
    assert {r["raceDescriptor"] for r in races} == {"White"}
    # a resource that does not describe a person keeps its values
    calendar = arrow(module, "stage2p", "calendars").to_pylist()
    assert calendar == [{"id": "cal1", "calendarCode": "IS", "calendarTypeDescriptor": "IS", "schoolId": 255901001,
                         "schoolYear": 2024}]
    assert arrow(module, "stage2p", "calendars_grade_levels")["gradeLevelDescriptor"].to_pylist() == ["Ninth grade"]
    # no raw identifier, name or address anywhere in stage2p
    raw = {"S-90001", "seoa1", "1 Quarry Lane", "kid1@example.org", "ID-771", "login-1-kq", "note-1-zz", "78701", "Austin"}
    root = os.path.join(module.lake.stage_root("stage2p"), "edfi")
    for table in os.listdir(root):
        for values in module.store.read_arrow(os.path.join(root, table)).to_pydict().values():
            assert not raw & {str(v) for v in values}, table
    assert module.outputs() and ("stage2p", "calendars") in module.outputs()


DAILY = ("students", "sections", "studentSchoolAssociations", "studentSchoolAttendanceEvents", "grades")


def split_batches(dataset, folder, count):
    """The export of the first ``count`` batches of the ``DAILY`` resources (earlier batches' files are the
    same bytes); five resources keep the test quick and still hold child tables, deletes and a leaver."""
    batches = [[e for e in batch if e.resource in DAILY] for batch in dataset.batches[:count]]
    write_edfi_export(EdFiDataset(batches=batches, start=dataset.start), folder)
    return folder


def refined_rows(module) -> dict[str, list]:
    root = os.path.join(module.lake.stage_root("stage2p"), "edfi")
    return {table: sorted(map(repr, module.store.read_arrow(os.path.join(root, table)).to_pylist()))
            for table in sorted(os.listdir(root))}


def test_a_daily_refine_rewrites_the_changed_records_and_equals_a_full_rebuild(module, spark, tmp_path):
    dataset = generate_edfi(students=16, staff=3, schools=2, batches=3, seed=11)
    for count in (1, 2, 3):
        module.land(split_batches(dataset, tmp_path / f"export{count}", count))
        module.ingest()
    events = os.path.join(module.lake.stage_root("stage2p"), "edfi", "student_school_attendance_events")
    assert module.store.last_commit(events)["operation"] == "MERGE"  # the change only, not a rebuild
    fresh = EdFiModule(LakePaths.from_setting(tmp_path / "fresh"), spark=spark, salt=Salt(TEST_SALT, "test"),
                       engine=module.store.name)
    fresh.land(tmp_path / "export3")
    fresh.ingest()
    assert refined_rows(module) == refined_rows(fresh)
    assert refined_rows(module)["students"]


def test_generated_history_ends_where_the_dataset_says_late_deliveries_included(module, tmp_path):
    """``generate_edfi(history=True)``: ended enrollments, a transfer, a renamed school whose old name comes
    late with its old change version, a deleted student delivered again later; ingest agrees with ``state()``."""
    dataset = generate_edfi(students=8, staff=2, schools=2, batches=4, seed=3, history=True)
    resources = ("students", "schools", "studentSchoolAssociations")
    batches = [[e for e in batch if e.resource in resources] for batch in dataset.batches]
    write_edfi_export(EdFiDataset(batches=batches, start=dataset.start), tmp_path / "export")
    module.land(tmp_path / "export")
    module.ingest()
    for resource in resources:
        assert state_of(module, resource) == dataset.state()[resource], resource
    schools = {r["schoolId"]: r["nameOfInstitution"] for r in arrow(module, "stage2p", "schools").to_pylist()}
    assert schools == dataset.school_names(3) and schools[255901001].startswith("Grand Bend Early College")
    refined = set(arrow(module, "stage2p", "students")["studentUniqueId_pseudonym"].to_pylist())
    assert refined == {pseudonym(r["studentUniqueId"], TEST_SALT) for r in dataset.state()["students"].values()}
    exits = arrow(module, "stage2p", "student_school_associations").to_pylist()
    assert sorted(str(r["exitWithdrawDate"]) for r in exits if r["exitWithdrawDate"]) == ["2023-09-08", "2023-09-15"]


# key changes ---------------------------------------------------------------------------------
def enrolment(record_id, entry_date, version=None, student="s1"):
    record = {"id": record_id, "studentReference": {"studentUniqueId": student, "link": {"rel": "Student"}},
              "schoolReference": {"schoolId": 1}, "entryDate": entry_date, "entryGradeLevelDescriptor": "Ninth grade"}
    return record if version is None else {**record, "changeVersion": version}


def key_change(record_id, version, old, new, student="s1"):
    keys = {"schoolId": 1, "studentUniqueId": student}
    return {"id": record_id, "changeVersion": version, "oldKeyValues": {"entryDate": old, **keys},
            "newKeyValues": {"entryDate": new, **keys}}


def test_rewrite_keys_at_top_level_and_in_references_where_the_old_value_matches():
    record = {"id": "x", "entryDate": "2023-08-21", "schoolReference": {"schoolId": 1, "link": {"rel": "School"}},
              "classOfSchoolYearTypeReference": {"schoolYear": 2027}, "calendarReference": {"schoolYear": 2024}}
    out = rewrite_keys(record, {"schoolId": 1, "classOfSchoolYear": 2027, "entryDate": "2023-01-01"},
                       {"schoolId": 2, "classOfSchoolYear": 2028, "entryDate": "2023-09-01"})
    assert out == {"id": "x", "entryDate": "2023-08-21",  # its old value differs: left alone
                   "schoolReference": {"schoolId": 2, "link": {"rel": "School"}},
                   "classOfSchoolYearTypeReference": {"schoolYear": 2028},  # role-named: classOfSchoolYear
                   "calendarReference": {"schoolYear": 2024}}
    assert rewrite_keys(record, {}, {"entryDate": "2023-09-01"})["entryDate"] == "2023-09-01"  # no old values
    # a chain within one batch is applied in order; one not newer than the record is not applied, and one
    # newer whose old values the record does not hold rewrites nothing but still takes its change version
    chain = [(4, key_change("x", 4, "2023-08-21", "2023-09-01")), (6, key_change("x", 6, "2023-09-01", "2023-10-01"))]
    assert apply_to(enrolment("x", "2023-08-21", 5), 5, chain) == (
        enrolment("x", "2023-08-21", 6), 6, [False, True])
    assert apply_to(enrolment("x", "2023-08-21", 3), 3, chain) == (
        enrolment("x", "2023-10-01", 6), 6, [True, True])


def test_key_changes_rewrite_keys_unless_an_upsert_is_newer_and_never_revive_a_record(module, tmp_path, caplog):
    base = tmp_path / "export" / "studentSchoolAssociations" / "incremental"
    day1, day2 = "rundate=2024-01-01", "rundate=2024-01-02"
    write_lines(base / "upserts" / day1, "u.json", [
        enrolment("a1", "2023-08-21", 1), enrolment("b1", "2023-08-21", 2, "s2"), enrolment("c1", "2023-08-21", 3, "s3"),
        enrolment("d1", "2023-08-21", 4, "s4"), enrolment("e1", "2023-08-28", 6, "s5")])
    write_lines(base / "keyChanges" / day1, "k.json", [
        key_change("d1", 5, "2023-08-21", "2023-09-04", "s4"),  # the same batch as its upsert, newer: applied
        key_change("e1", 5, "2023-08-21", "2023-08-25", "s5")],  # older than the batch's upsert: the upsert wins
                raw_lines=[json.dumps({"id": "m1", "changeVersion": 7, "newKeyValues": ["2023-09-01"]})])
    write_lines(base / "upserts" / day2, "u.json", [enrolment("b1", "2023-10-02", 12, "s2")])
    write_lines(base / "deletes" / day2, "d.json", [{"id": "c1", "changeVersion": 13}])
    write_lines(base / "keyChanges" / day2, "k.json", [
        key_change("a1", 10, "2023-08-21", "2023-09-11"),  # newer than the state: applied
        key_change("b1", 11, "2023-08-21", "2023-09-12", "s2"),  # the batch's upsert is newer: it wins
        key_change("c1", 14, "2023-08-21", "2023-09-13", "s3"),  # deleted: stays deleted
        key_change("z1", 15, "2023-08-21", "2023-09-14", "s9")])  # never seen: nothing
    module.land(tmp_path / "export", batch_id="x")
    with caplog.at_level(logging.WARNING, logger="oea"):
        module.ingest(max_reject_share=0.2)
    state = {r["id"]: r for r in arrow(module, "stage2np", "student_school_associations").to_pylist()}
    assert {i: (json.loads(r["_record"])["entryDate"], r["_change_version"]) for i, r in state.items()} == {
        "a1": ("2023-09-11", 10), "b1": ("2023-10-02", 12), "d1": ("2023-09-04", 5), "e1": ("2023-08-28", 6)}
    assert json.loads(state["d1"]["_record"]) == enrolment("d1", "2023-09-04", 5, "s4")
    history = {r["id"]: r for r in arrow(module, "stage2np", "student_school_associations_key_changes").to_pylist()}
    assert {i: r["applied"] for i, r in history.items()} == {
        "a1": True, "b1": False, "c1": False, "d1": True, "e1": False, "z1": False}
    assert json.loads(history["a1"]["new_key_values"])["entryDate"] == "2023-09-11"
    assert history["a1"]["_change_version"] == 10 and history["a1"]["_batch_id"] == "x_2024-01-02"
    assert "2 key changes of records deleted or not in the current state changed nothing" in caplog.text
    rejected = arrow(module, "stage2np", "student_school_associations_rejected").to_pylist()
    assert [r["_reject_reason"] for r in rejected] == ["key change's newKeyValues is list, not an object"]
    refined = arrow(module, "stage2p", "student_school_associations")
    assert sorted(str(d) for d in refined["entryDate"].to_pylist()) == [
        "2023-08-28", "2023-09-04", "2023-09-11", "2023-10-02"]

    def versions():
        root = os.path.join(module.lake.stage_root("stage2np"), "edfi")
        return {t: module.store.version(os.path.join(root, t)) for t in os.listdir(root)}

    before = versions()
    assert all(r.nothing_new for r in module.ingest(max_reject_share=0.2))
    assert versions() == before


# records past the limits ---------------------------------------------------------------------
def deep_json(levels: int, record_id: str = "deep") -> str:
    """A school record nested ``levels`` deep, as text (json.dumps itself would recurse)."""
    opens = "".join('{"a": ' if i % 2 else "[" for i in range(levels - 1))
    closes = "".join("}" if i % 2 else "]" for i in reversed(range(levels - 1)))
    return f'{{"id": "{record_id}", "schoolId": 1, "x": {opens}"[{{"{closes}}}'


def test_parse_file_refuses_records_past_the_depth_and_size_limits_without_recursing():
    good = json.dumps(school("g1", "Good"))
    oversize = json.dumps(school("big", "x" * MAX_RECORD_BYTES))
    lines = "\n".join([good, deep_json(5001), deep_json(MAX_DEPTH + 1), oversize, deep_json(MAX_DEPTH, "edge")])
    array = "[" + ", ".join([good, deep_json(5001), oversize, good.replace("g1", "g2")]) + "]"
    for text in (lines, array, array.replace(deep_json(5001), deep_json(MAX_DEPTH + 1))):
        got = list(parse_file(text, "upserts"))
        records = [(number, record["id"]) for number, record, _, _ in got if record]
        reasons = {number: reason for number, _, reason, _ in got if reason}
        assert len(got) == len(records) + len(reasons) and all(len(raw) <= RAW_KEPT for *_, raw in got if raw)
        if text is lines:
            assert records == [(1, "g1"), (5, "edge")]
            assert reasons == {2: "record is nested 5,001 levels deep, more than the limit of 64",
                               3: "record is nested 65 levels deep, more than the limit of 64",
                               4: f"record is {len(oversize):,} bytes, more than the limit of {MAX_RECORD_BYTES:,}"}
        else:
            assert records == [(1, "g1"), (4, "g2")]
            assert sorted(reasons) == [2, 3] and "levels deep" in reasons[2] and "bytes" in reasons[3]


def test_records_past_the_limits_are_set_aside_and_the_others_load(spark, lake, tmp_path):
    module = EdFiModule(lake, spark=spark, salt=Salt(TEST_SALT, "test"), engine="delta-rs")  # one engine is enough
    folder = tmp_path / "export" / "schools"
    good = [school(f"s{i}", f"School {i}") for i in range(20)]
    big = json.dumps(school("big", "x" * (17 << 20)))
    write_lines(folder, "part.jsonl", good[:10], raw_lines=[deep_json(5001), big])
    (folder / "more.json").write_text("[" + ", ".join([*map(json.dumps, good[10:]), deep_json(5001, "d2")]) + "]",
                                      encoding="utf-8")
    module.land(tmp_path / "export", batch_id="x")
    with pytest.raises(RejectedRowsError, match=r"3 of 23 records .*levels deep"):
        module.ingest()
    module.ingest(max_reject_share=0.2)
    assert sorted(state_of(module, "schools")) == sorted(s["id"] for s in good)
    rejected = {(r["_source_file"].rsplit("-", 1)[-1], r["_line"]): r
                for r in arrow(module, "stage2np", "schools_rejected").to_pylist()}
    assert {key: r["_reject_reason"] for key, r in rejected.items()} == {
        ("part.jsonl", 11): "record is nested 5,001 levels deep, more than the limit of 64",
        ("more.json", 11): "record is nested 5,001 levels deep, more than the limit of 64",
        ("part.jsonl", 12): f"record is {len(big):,} bytes, more than the limit of {MAX_RECORD_BYTES:,}"}
    assert rejected[("part.jsonl", 11)]["_raw"] == deep_json(5001)
    assert rejected[("part.jsonl", 12)]["_raw"] == big[:RAW_KEPT]
    assert arrow(module, "stage2p", "schools").num_rows == 20


# each batch judged on its own ------------------------------------------------------------------
def test_a_batch_whose_every_record_loses_to_a_newer_one_is_marked_ingested(module, tmp_path, lake):
    write_lines(tmp_path / "new" / "schools", "a.jsonl", [school("a1", "A new", changeVersion=9)])
    module.land(tmp_path / "new", batch_id="x")
    module.ingest(refine=False)
    write_lines(tmp_path / "stale" / "schools", "a.jsonl", [school("a1", "A stale", changeVersion=4)])
    module.land(tmp_path / "stale", batch_id="y")
    (first,) = module.ingest(refine=False)
    assert first.batches == ("y",)
    assert state_of(module, "schools")["a1"]["nameOfInstitution"] == "A new"
    (again,) = module.ingest(refine=False)
    assert again.nothing_new and again.skipped == ("x", "y"), "the stale batch is read again every night"


def test_each_batch_is_judged_by_its_own_reject_share(module, tmp_path, lake):
    """A bad batch is not let in by good batches around it, and one batch's share is no other's."""
    write_lines(tmp_path / "a" / "schools", "a.jsonl", [school(f"a{i}", f"A {i}") for i in range(20)],
                raw_lines=["not json"] * 5)  # 5 of 25 records: 20%
    module.land(tmp_path / "a", batch_id="a")
    with pytest.raises(RejectedRowsError, match=r"schools batch a: 5 of 25 records \(20.0%\).*nothing of batch a"):
        module.ingest(refine=False)
    write_lines(tmp_path / "b" / "schools", "b.jsonl", [school(f"b{i}", f"B {i}") for i in range(168)])
    module.land(tmp_path / "b", batch_id="b")
    with pytest.raises(RejectedRowsError, match=r"schools batch a: .* 1 later batches \(b\) wait behind it"):
        module.ingest(refine=False)  # pooled, 5 of 193 would be under the 5% share
    assert not module.store.exists(lake.table("stage2np", "edfi", "schools"))
    (only_b,) = module.ingest(refine=False, batches=["b"])  # a submission ingests only its own batch
    assert only_b.batches == ("b",) and set(state_of(module, "schools")) == {f"b{i}" for i in range(168)}
    (forced,) = module.ingest(max_reject_share=0.25, refine=False)
    assert forced.batches == ("a",) and forced.rejected == 5 and len(state_of(module, "schools")) == 188
