"""The Ed-Fi API client and API landing against a loopback server speaking the ODS/API wire format."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os

import pytest

from oea_core import LakePaths, LandingError
from oea_core.edfi import EdFiApiError, EdFiClient, generate_edfi
from oea_core.edfi.api import Resource
from oea_core.edfi.flatten import coerce, flatten_record
from oea_core.edfi.landing import (
    batch_files,
    batches,
    classify_file,
    land_api,
    landed_resources,
    last_change_version,
    manifest,
)
from oea_core.edfi.openapi import entity_columns, latest_openapi, stored_batches
from oea_core.lake.cloud import committed_batches
from servers.edfi_api import CLIENT_ID, CLIENT_SECRET, EdFiTestApi


@pytest.fixture(scope="module")
def dataset():
    return generate_edfi(students=24, staff=4, schools=2, batches=3, seed=11)


@pytest.fixture
def api(dataset):
    with EdFiTestApi(dataset) as server:
        yield server


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def client_for(api, clock=None, **kwargs) -> EdFiClient:
    clock = clock or FakeClock()
    return EdFiClient(api.url, CLIENT_ID, CLIENT_SECRET, sleep=clock.sleep, clock=clock, **kwargs)


def read_landed(lake, resource, kind="upserts"):
    records = []
    for batch_id in batches(lake, "ed-fi", resource):
        for file_kind, path in batch_files(lake, "ed-fi", resource, batch_id):
            if file_kind == kind:
                with open(path, encoding="utf-8") as handle:
                    records += [json.loads(line) for line in handle]
    return records


def test_pages_through_every_record(api, dataset):
    client = client_for(api, page_size=7)
    pages = list(client.pages(Resource("ed-fi", "studentSectionAssociations")))
    expected = dataset.state(0)["studentSectionAssociations"]
    assert len(expected) > 3 * 7  # several pages
    assert [len(p) for p in pages[:-1]] == [7] * (len(pages) - 1)
    assert sorted(r["id"] for p in pages for r in p) == sorted(expected)
    offsets = [int(q["offset"]) for m, path, q in api.requests if path.endswith("/studentSectionAssociations")]
    assert offsets == list(range(0, len(expected), 7))


def test_dependency_order_and_change_version(api, dataset):
    client = client_for(api)
    order = [r.name for r in client.dependencies()]
    assert order.index("students") < order.index("studentSchoolAssociations") < order.index("grades")
    assert client.newest_change_version() == max(e.change_version for e in dataset.batches[0])


def test_token_renewed_before_expiry(dataset):
    with EdFiTestApi(dataset, expires_in=120) as api:
        clock = FakeClock()
        client = client_for(api, clock)
        client.dependencies()
        assert client.token_requests == 1
        clock.now += 30
        client.dependencies()
        assert client.token_requests == 1  # still valid
        clock.now += 90  # past expiry (less the renewal margin)
        client.dependencies()
        assert client.token_requests == 2
        assert api.token_count == 2


def test_token_expiring_mid_run_is_renewed_on_401(api, dataset):
    api.revoke_after = 3  # the server invalidates the token every third data call
    client = client_for(api, page_size=5)
    records = [r for p in client.pages(Resource("ed-fi", "studentSectionAssociations")) for r in p]
    assert len(records) == len(dataset.state(0)["studentSectionAssociations"])
    assert client.token_requests >= 4
    assert client.retries == 0  # a 401 renews the token; it is not a retry


def test_server_error_is_retried_with_backoff(api, dataset):
    api.fail("/data/v3/ed-fi/students", 500, times=2)
    api.fail("/data/v3/ed-fi/schools", 429, headers={"Retry-After": "7"})
    clock = FakeClock()
    client = client_for(api, clock, backoff=0.5)
    students = [r for p in client.pages(Resource("ed-fi", "students")) for r in p]
    assert len(students) == len(dataset.state(0)["students"])
    assert clock.sleeps == [0.5, 1.0]
    list(client.pages(Resource("ed-fi", "schools")))
    assert clock.sleeps[-1] == 7.0  # Retry-After honoured


def test_retry_after_is_capped_and_its_http_date_form_honoured(api, dataset, monkeypatch):
    api.fail("/data/v3/ed-fi/students", 503, headers={"Retry-After": "86400"})
    clock = FakeClock()
    client = client_for(api, clock, max_retry_after=120)
    assert len([r for p in client.pages(Resource("ed-fi", "students")) for r in p]) == len(
        dataset.state(0)["students"])
    assert clock.sleeps == [120.0], "a day-long Retry-After is capped"
    monkeypatch.setenv("OEA_EDFI_MAX_RETRY_AFTER", "30")
    when = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20), usegmt=True)
    api.fail("/data/v3/ed-fi/schools", 429, headers={"Retry-After": when})
    clock = FakeClock()
    client = client_for(api, clock)
    assert client.max_retry_after == 30.0
    list(client.pages(Resource("ed-fi", "schools")))
    assert 15.0 <= clock.sleeps[-1] <= 20.0, "the HTTP-date form is a time to wait until"
    monkeypatch.setenv("OEA_EDFI_MAX_RETRY_AFTER", "soon")
    with pytest.raises(EdFiApiError, match=r"OEA_EDFI_MAX_RETRY_AFTER 'soon' is not a number of seconds"):
        client_for(api)


@pytest.mark.parametrize("body", [b'[{"id": "a", "studentUniqueId"', b"<html><body>Bad gateway</body></html>"])
def test_a_200_with_a_truncated_or_html_body_is_retried_then_named(api, dataset, body):
    api.fail("/data/v3/ed-fi/students", 200, headers={"Content-Type": "text/html"}, body=body)
    clock = FakeClock()
    client = client_for(api, clock, backoff=0.5)
    assert len([r for p in client.pages(Resource("ed-fi", "students")) for r in p]) == len(
        dataset.state(0)["students"])
    assert clock.sleeps == [0.5] and client.retries == 1
    api.fail("/data/v3/ed-fi/students", 200, times=10, body=body)
    client = client_for(api, max_retries=2)
    with pytest.raises(EdFiApiError, match=r"/data/v3/ed-fi/students still failing after 3 attempts \(HTTP 200 "
                                           r"with a body that is not JSON"):
        list(client.pages(Resource("ed-fi", "students")))


def test_gives_up_after_max_retries_naming_the_url(api):
    api.fail("/data/v3/ed-fi/students", 503, times=10)
    client = client_for(api, max_retries=2)
    with pytest.raises(EdFiApiError, match=r"/data/v3/ed-fi/students still failing after 3 attempts \(HTTP 503\)"):
        list(client.pages(Resource("ed-fi", "students")))


def test_bad_credentials_and_missing_credentials(api, monkeypatch, caplog):
    monkeypatch.delenv("OEA_EDFI_CLIENT_ID", raising=False)
    monkeypatch.delenv("OEA_EDFI_CLIENT_SECRET", raising=False)
    with pytest.raises(EdFiApiError, match="OEA_EDFI_CLIENT_SECRET"):
        EdFiClient(api.url)
    wrong = "wrong-secret-value-123"
    client = EdFiClient(api.url, CLIENT_ID, wrong, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG, logger="oea"), pytest.raises(EdFiApiError, match="HTTP 401") as info:
        client.dependencies()
    assert wrong not in str(info.value) and wrong not in caplog.text


def test_limit_above_server_cap_is_a_clear_error(api):
    client = client_for(api, page_size=1000)
    with pytest.raises(EdFiApiError, match="HTTP 400"):
        list(client.pages(Resource("ed-fi", "students")))


def test_land_api_first_full_then_only_changes_and_deletes(api, dataset, lake, caplog):
    client = client_for(api, page_size=9)
    first = land_api(lake, client, ["students", "studentSectionAssociations", "grades"], batch_id="b1")
    assert {b.resource for b in first.batches} == {"students", "studentSectionAssociations", "grades"}
    newest0 = max(e.change_version for e in dataset.batches[0])
    assert manifest(lake, "ed-fi", "students", "b1")["change_versions"] == {"min": None, "max": newest0}
    assert len(read_landed(lake, "studentSectionAssociations")) == len(dataset.state(0)["studentSectionAssociations"])

    api.visible_batch = 2
    api.requests.clear()
    with caplog.at_level(logging.DEBUG):
        second = land_api(lake, client, ["students", "studentSectionAssociations", "grades"], batch_id="b2")
    newest2 = max(e.change_version for e in dataset.events())
    assert last_change_version(lake, "ed-fi", "students") == newest2
    assert manifest(lake, "ed-fi", "students", "b2")["change_versions"] == {"min": newest0 + 1, "max": newest2}
    queries = [q for m, p, q in api.requests if p == "/data/v3/ed-fi/students"]
    assert queries and all(q["minChangeVersion"] == str(newest0 + 1) for q in queries)
    changed = {e.record["id"] for b in dataset.batches[1:] for e in b
               if e.resource == "students" and e.kind == "upsert"}
    deleted = {e.record["id"] for b in dataset.batches[1:] for e in b
               if e.resource == "students" and e.kind == "delete"}
    landed_b2 = [r["id"] for r in read_landed(lake, "students")][len(dataset.state(0)["students"]):]
    assert set(landed_b2) == changed - deleted
    assert {r["id"] for r in read_landed(lake, "students", "deletes")} == deleted
    assert {b.resource for b in second.batches} == {"students", "studentSectionAssociations", "grades"}
    # nothing new: no batch, no files
    third = land_api(lake, client, ["students"], batch_id="b3")
    assert third.batches == () and batches(lake, "ed-fi", "students") == ["b1", "b2"]
    assert CLIENT_SECRET not in caplog.text


def test_failed_resource_leaves_no_partial_batch_and_rerun_completes(api, dataset, lake):
    client = client_for(api, page_size=10, max_retries=1)
    api.fail("/data/v3/ed-fi/studentSectionAssociations", 500, times=5)
    with pytest.raises(EdFiApiError):
        land_api(lake, client, ["students", "studentSectionAssociations"], batch_id="b1")
    assert batches(lake, "ed-fi", "students") == ["b1"]  # landed before the failure: kept
    folder = lake.path("stage1np", "edfi", "ed-fi", "studentSectionAssociations")
    assert not os.path.exists(folder) or os.listdir(folder) == []
    api.failures.clear()
    land_api(lake, client, ["students", "studentSectionAssociations"], batch_id="b2")
    assert batches(lake, "ed-fi", "studentSectionAssociations") == ["b2"]
    assert batches(lake, "ed-fi", "students") == ["b1"]  # nothing new for students


SSA = "/data/v3/ed-fi/studentSectionAssociations"


def test_a_record_moving_while_a_resource_is_paged_loses_nothing(api, dataset, lake, caplog):
    # after the first page, a record on it is updated: its change version leaves the window and every later
    # offset shifts down by one, so a plain offset read skips the first record of the second page
    api.move_while_paging(SSA, after_pages=1)
    client = client_for(api, page_size=7)
    expected = set(dataset.state(0)["studentSectionAssociations"])
    with caplog.at_level(logging.INFO):
        land_api(lake, client, ["studentSectionAssociations"], batch_id="b1")
    moved = api.moved[0].record["id"]
    first = {r["id"] for r in read_landed(lake, "studentSectionAssociations")}
    assert first == expected - {moved}, "the window is read again: all but the record that left it"
    assert "ed-fi/studentSectionAssociations: landed 71 of the 72 records" in caplog.text
    newest = max(e.change_version for e in dataset.batches[0])
    reads = [q for m, p, q in api.requests if p == SSA]
    assert reads and all(q["maxChangeVersion"] == str(newest) for q in reads), "one window, taken at the start"
    land_api(lake, client, ["studentSectionAssociations"], batch_id="b2")  # the moved record's new version
    assert {r["id"] for r in read_landed(lake, "studentSectionAssociations")} == expected
    assert last_change_version(lake, "ed-fi", "studentSectionAssociations") == api.moved[0].change_version


def test_data_moving_under_every_read_fails_the_resource_by_name(api, dataset, lake):
    api.move_while_paging(SSA, after_pages=2, times=10)
    with pytest.raises(LandingError, match=r"^Ed-Fi ed-fi/studentSectionAssociations: read 3 times between change "
                                           r"versions 0 and \d+, and every read lost records while it was paged "
                                           r"\(the last: 69 of the 70"):
        land_api(lake, client_for(api, page_size=7), ["students", "studentSectionAssociations"], batch_id="b1")
    assert batches(lake, "ed-fi", "students") == ["b1"]  # landed before: kept
    folder = lake.path("stage1np", "edfi", "ed-fi", "studentSectionAssociations")
    assert not os.path.exists(folder) or os.listdir(folder) == []
    assert last_change_version(lake, "ed-fi", "studentSectionAssociations") is None


def test_unknown_resource_is_named(api, lake):
    with pytest.raises(LandingError, match="no resources \\['studnets'\\]"):
        land_api(lake, client_for(api), ["studnets"])


def test_land_api_lands_key_changes_and_skips_a_resource_without_the_endpoint(lake, caplog):
    dataset = generate_edfi(students=24, staff=4, schools=2, batches=3, seed=11, key_changes=True)
    wanted = ["students", "studentSchoolAssociations"]
    with EdFiTestApi(dataset) as api:
        client = client_for(api)
        land_api(lake, client, wanted, batch_id="b1")
        assert not [p for m, p, q in api.requests if p.endswith("/keyChanges")]  # a full load has no key changes
        api.visible_batch = 2
        api.requests.clear()
        with caplog.at_level(logging.INFO, logger="oea"):
            second = land_api(lake, client, wanted, batch_id="b2")
        asked = {p: q for m, p, q in api.requests if p.endswith("/keyChanges")}
    newest0 = max(e.change_version for e in dataset.batches[0])
    assert set(asked) == {"/data/v3/ed-fi/students/keyChanges", "/data/v3/ed-fi/studentSchoolAssociations/keyChanges"}
    assert all(q["minChangeVersion"] == str(newest0 + 1) for q in asked.values())
    expected = [e.record for e in dataset.events() if e.kind == "keyChange"]
    assert len(expected) == 2
    assert read_landed(lake, "studentSchoolAssociations", "keyChanges") == expected
    by_resource = {b.resource: b for b in second.batches}
    assert by_resource["studentSchoolAssociations"].records["keyChanges"] == 2
    assert "keyChanges" not in by_resource["students"].records  # its endpoint answered 404: skipped
    assert "keyChanges" not in {f["kind"] for f in manifest(lake, "ed-fi", "students", "b2")["files"]}
    assert "of which 2 key changes" in second.summary()
    assert "404" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(("path", "expected"), [
    ("studentSchoolAssociations/incremental/keyChanges/rundate=2024-01-02/x.json",
     ("ed-fi", "studentSchoolAssociations", "keyChanges", "2024-01-02")),
    ("studentSchoolAssociations_keyChanges.json", ("ed-fi", "studentSchoolAssociations", "keyChanges", None)),
    ("tpdm/candidates/keyChanges/x.jsonl", ("tpdm", "candidates", "keyChanges", None)),
    ("students/incremental/deletes/rundate=2024-01-02/x.json", ("ed-fi", "students", "deletes", "2024-01-02")),
    ("sessions-deletes.json", ("ed-fi", "sessions", "deletes", None)),
    ("students.json", ("ed-fi", "students", "upserts", None)),
])
def test_classify_file_knows_upserts_deletes_and_key_changes(path, expected):
    assert classify_file(path) == expected


# the OpenAPI document ----------------------------------------------------------------------------
def test_land_api_stores_the_openapi_document_when_it_changed(api, lake, tmp_path, caplog):
    client = client_for(api)
    first = land_api(lake, client, ["schools"], batch_id="b1")
    assert first.openapi == lake.path("stage1np", "edfi", "_openapi", "b1")
    assert sorted(os.listdir(first.openapi)) == ["_manifest.json", "openapi.json"]
    assert latest_openapi(lake) == api.openapi and "OpenAPI" in first.summary()
    assert landed_resources(lake) == [("ed-fi", "schools")]  # never taken for a resource to ingest
    stage = lake.path("stage1np", "edfi")
    files = {os.path.relpath(os.path.join(folder, name), stage).replace(os.sep, "/"): {}
             for folder, _, names in os.walk(stage) for name in names}
    assert {"_openapi/b1/openapi.json", "_openapi/b1/_manifest.json"} <= set(committed_batches(files))
    api.visible_batch = 1
    assert land_api(lake, client, ["schools"], batch_id="b2").openapi is None  # unchanged: not stored again
    api.openapi = {**api.openapi, "info": {"title": "Ed-Fi Resources", "version": "5.1.0"}}
    assert land_api(lake, client, ["schools"], batch_id="b3").openapi is not None
    assert stored_batches(lake) == ["b1", "b3"] and latest_openapi(lake)["info"]["version"] == "5.1.0"
    # an API without OpenAPI metadata: nothing stored, not an error
    other = LakePaths.from_setting(tmp_path / "other")
    api.fail("/metadata/", 404)
    with caplog.at_level(logging.INFO, logger="oea"):
        result = land_api(other, client_for(api), ["schools"], batch_id="c1")
    assert result.openapi is None and latest_openapi(other) is None and result.batches
    assert "lists no OpenAPI metadata" in caplog.text


def test_entity_columns_of_the_served_document_type_every_flattened_column(api, dataset):
    doc = client_for(api).openapi_document()
    assert doc["swagger"] == "2.0" and doc == api.openapi
    declared = entity_columns(doc)
    flattened: dict[tuple[str, str], set[str]] = {}
    for event in dataset.events():
        if event.kind != "upsert":
            continue
        for entity, rows in flatten_record(event.resource, event.record).items():
            columns = declared[("ed-fi", entity)]
            for row in rows:
                flattened.setdefault(("ed-fi", entity), set()).update(row)
                for name, value in row.items():
                    assert name in columns, f"{entity}.{name} is not in the document"
                    coerce(value, columns[name])  # raises when the document's type does not fit the value
    for key, names in flattened.items():
        assert set(declared[key]) - names <= {"_ext"}, key  # an empty _ext is dropped by flatten_record
    students = declared[("ed-fi", "students")]
    assert (students["birthDate"], students["_lastModifiedDate"], students["_ext"]) == ("date", "timestamp", "string")
    assert "_etag" not in students and "studentReference" not in declared[("ed-fi", "studentSchoolAssociations")]
    ssa = declared[("ed-fi", "studentSchoolAssociations")]
    assert (ssa["classOfSchoolYear"], ssa["schoolYear"], ssa["entryDate"]) == ("int", "int", "date")
    assert declared[("ed-fi", "schools_addresses_periods")] == {
        "id": "string", "addresses_ordinal": "int", "periods_ordinal": "int", "beginDate": "date"}
    assert declared[("ed-fi", "courses")]["maximumAvailableCredits"] == "double"
    assert declared[("ed-fi", "studentSectionAssociations")]["homeroomIndicator"] == "boolean"


def test_entity_columns_reads_openapi_3_documents_and_other_namespaces():
    doc = {"openapi": "3.0.1", "paths": {"/tpdm/candidates": {"get": {"responses": {"200": {"content": {
        "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/tpdm_candidate"}}}}}}}},
        "/tpdm/candidates/{id}": {}}, "components": {"schemas": {
            "tpdm_candidate": {"type": "object", "properties": {
                "id": {"type": "string"}, "candidateIdentifier": {"type": "string"},
                "personReference": {"$ref": "#/components/schemas/edFi_personReference"},
                "parentLocalEducationAgencyReference": {"type": "object", "properties": {
                    "localEducationAgencyId": {"type": "integer", "format": "int64"}}},
                "disability": {"type": "object", "properties": {"since": {"type": "string", "format": "date"}}},
                "scores": {"type": "array", "items": {"type": "number"}}, "_etag": {"type": "string"}}},
            "edFi_personReference": {"type": "object", "properties": {"personId": {"type": "string"},
                                                                      "link": {"type": "object"}}}}}}
    assert entity_columns(doc) == {
        ("tpdm", "candidates"): {"id": "string", "candidateIdentifier": "string", "personId": "string",
                                 "parentLocalEducationAgencyId": "bigint", "disability_since": "date"},
        ("tpdm", "candidates_scores"): {"id": "string", "scores_ordinal": "int", "value": "double"}}
