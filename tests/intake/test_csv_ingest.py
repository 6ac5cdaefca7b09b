"""The generic CSV ingestion: one pass per batch, exact lookups, per-batch commits, nothing left on failure."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from oea_core import RejectedRowsError, TableSchema
from oea_core.intake.csv_ingest import CsvTableDef, app_id, ingest_csv_table, ingest_csv_tables
from oea_testing import TEST_SALT

SCHEMA = TableSchema.parse("events", [["day", "date", "x"], ["person", "string", "h"], ["email", "string", "m"],
                                      ["seen_at", "timestamp", "m"], ["district", "string", "p"],
                                      ["device", "string", "hnl"], ["n", "int", "x"]])
pytestmark = pytest.mark.usefixtures("engine")  # every test on both Delta engines
HEADER = ["day", "person", "email", "seen_at", "district", "device", "n"]
# identities that a JSON or CSV round trip could damage
ODD = ["plain", "Zoë 名前", 'quote "q", comma', "back\\slash", "  padded  ", "tab\tinside", "x" * 300]


def table_def(file_columns=None, passthrough=()) -> CsvTableDef:
    return CsvTableDef(source="src", landed_name="events", schema=SCHEMA, file_columns=file_columns,
                       passthrough=passthrough, required=("day",), date_partition="day")


def land(lake, batch: str, name: str, rows: list[list[str]]) -> str:
    folder = lake.path("stage1np", "src", "events", batch)
    os.makedirs(folder, exist_ok=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([HEADER, *rows])
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
    return path


def table_rows(path: str) -> list[dict]:
    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute("SELECT * FROM t").read_all()).to_pylist()


def sha(value: str) -> str:
    return hashlib.sha256((value + TEST_SALT).encode()).hexdigest()


def staging_leftovers(lake) -> list[str]:
    return [os.path.join(p, d) for p, ds, _ in os.walk(lake.root) for d in ds if d == "_staging"]


def test_lookup_holds_each_identity_exactly_once_even_odd_ones(spark, lake, salt, caplog):
    caplog.set_level("DEBUG", logger="oea")
    rows = [[f"2022-01-0{1 + i % 3}", person, f"{i}@x.org", "2022-01-01 10:00:00.123456", "D1", f"dev{i}", str(i)]
            for i, person in enumerate(ODD * 3)]
    rows.append(["2022-01-01", "", "blank@x.org", "", "D1", "", "9"])  # a blank id stays out of the lookup
    land(lake, "b1", "a.csv", rows)
    result = ingest_csv_table(spark, lake, table_def(), salt)
    assert (result.rows, result.rejected) == (len(rows), 0)
    lookup = table_rows(lake.table("stage2np", "src", "events_lookup"))
    assert sorted(lookup[0]) == ["district", "email", "person", "person_pseudonym", "seen_at"]
    stamps = {r["seen_at"] for r in lookup}
    assert {s.microsecond for s in stamps - {None}} == {123456}, "a masked timestamp keeps its microseconds"
    expected = {(p, sha(p), f"{i}@x.org", "D1") for i, p in enumerate(ODD * 3)}
    assert {(r["person"], r["person_pseudonym"], r["email"], r["district"]) for r in lookup} == expected
    assert len(lookup) == len(expected)
    pseudo = table_rows(lake.table("stage2p", "src", "events_pseudo"))
    assert {r["person_pseudonym"] for r in pseudo} == {sha(p) for p in ODD} | {None}
    assert {r["device_pseudonym"] for r in pseudo} - {None} == {sha(f"dev{i}") for i in range(len(ODD) * 3)}
    assert "staged" in caplog.text and not [p for p in ("Zoë", "back\\slash", "@x.org") if p in caplog.text]


def test_each_pending_batch_is_its_own_commit(spark, lake, salt):
    land(lake, "b1", "a.csv", [["2022-01-01", "p1", "e", "", "D1", "", "1"]])
    land(lake, "b2", "a.csv", [["2022-02-01", "p2", "e", "", "D1", "", "2"],
                               ["2022-02-02", "p1", "e", "", "D1", "", "3"]])
    result = ingest_csv_table(spark, lake, table_def(), salt)
    assert result.batches == ("b1", "b2") and result.rows == 3
    p_path = lake.table("stage2p", "src", "events_pseudo")
    table = DeltaTable(p_path)
    assert table.version() == 1
    assert [table.transaction_version(app_id("src", "events", b)) for b in ("b1", "b2")] == [1, 1]
    history = {h["version"]: h for h in table.history()}
    assert json.loads(history[0]["userMetadata"])["batch_id"] == "b1"
    assert json.loads(history[1]["userMetadata"]) == {"batch_id": "b2", "rejected": 0, "rows": 2}
    assert len(table_rows(lake.table("stage2np", "src", "events_lookup"))) == 2
    assert ingest_csv_table(spark, lake, table_def(), salt).nothing_new


def test_a_batch_over_its_share_is_not_written_and_stops_the_ingest_there(spark, lake, salt):
    land(lake, "b1", "a.csv", [["2022-01-01", "p1", "e", "", "D1", "", "1"]])
    land(lake, "b2", "a.csv", [["2022-02-01", "p2", "e", "", "D1", "", "x"], ["2022-02-01", "p3", "e", "", "D1", "", "2"]])
    land(lake, "b3", "a.csv", [["2022-03-01", "p4", "e", "", "D1", "", "3"]])
    with pytest.raises(RejectedRowsError, match=r"events batch b2: 1 of 2 rows \(50.0%\).*nothing of batch b2 was "
                                                r"written\. Batches b1 were written before it\. 1 later batches "
                                                r"\(b3\) wait behind it\..*Examples: .*b2/a.csv: n: 'x' is not a valid"):
        ingest_csv_table(spark, lake, table_def(), salt, max_reject_share=0.1)
    assert [r["n"] for r in table_rows(lake.table("stage2p", "src", "events_pseudo"))] == [1]
    assert [r["person"] for r in table_rows(lake.table("stage2np", "src", "events_lookup"))] == ["p1"]
    assert not os.path.exists(lake.table("stage2np", "src", "events_rejected"))
    assert not staging_leftovers(lake)
    result = ingest_csv_table(spark, lake, table_def(), salt, max_reject_share=0.5)
    assert (result.batches, result.skipped, result.rows, result.rejected) == (("b2", "b3"), ("b1",), 2, 1)
    (rejected,) = table_rows(lake.table("stage2np", "src", "events_rejected"))
    assert (rejected["_batch_id"], rejected["n"], rejected["person"]) == ("b2", "x", "p2")
    assert sorted(r["n"] for r in table_rows(lake.table("stage2p", "src", "events_pseudo"))) == [1, 2, 3]
    assert not staging_leftovers(lake)


def good_rows(count: int, month: int) -> list[list[str]]:
    return [[f"2022-{month:02}-01", f"p{month}-{i}", "e", "", "D1", "", str(i)] for i in range(count)]


def test_good_batches_do_not_let_a_bad_one_in_and_given_batches_are_all_or_nothing(spark, lake, salt):
    """Bundle A (25 rows, 5 bad) and bundle B (168 good rows): pooled, 5 of 193 is under the 5% share."""
    land(lake, "a", "a.csv", good_rows(20, 1) + [["2022-01-02", "bad", "e", "", "D1", "", "x"]] * 5)
    with pytest.raises(RejectedRowsError, match="events batch a: 5 of 25 rows"):
        ingest_csv_table(spark, lake, table_def(), salt)
    land(lake, "b", "b.csv", good_rows(168, 2))
    with pytest.raises(RejectedRowsError, match=r"events batch a: 5 of 25 rows.*\(b\) wait behind it"):
        ingest_csv_table(spark, lake, table_def(), salt)
    assert not os.path.exists(lake.table("stage2p", "src", "events_pseudo"))
    other = CsvTableDef(source="src", landed_name="others", schema=TableSchema.parse("others", [["n", "int", "x"]]))
    folder = lake.path("stage1np", "src", "others", "c")
    os.makedirs(folder)
    with open(os.path.join(folder, "o.csv"), "w", encoding="utf-8") as handle:
        handle.write("n\n1\nnot a number\n")
    land(lake, "c", "c.csv", good_rows(3, 3))
    with pytest.raises(RejectedRowsError, match="others batch c: 1 of 2 rows"):  # c's events part is fine
        ingest_csv_tables(spark, lake, [table_def(), other], salt, batches=["c"], max_reject_share=0.2)
    assert not os.path.exists(lake.table("stage2p", "src", "events_pseudo")), "all or nothing across tables"
    assert not os.path.exists(lake.table("stage2p", "src", "others_pseudo"))
    assert not staging_leftovers(lake)
    (only_b,) = ingest_csv_tables(spark, lake, [table_def()], salt, batches=["b"])  # a's share is not b's
    assert (only_b.batches, only_b.rows) == (("b",), 168)
    assert len(table_rows(lake.table("stage2p", "src", "events_pseudo"))) == 168


def test_file_literals_follow_each_file_among_many(spark, lake, salt):
    """More files than Spark's IN-list threshold: each row still gets its own file's value."""
    for i in range(24):
        land(lake, "b1", f"f{i:02d}.csv", [[f"2022-01-{1 + i:02d}", f"p{i}", "e", "", "D1", "", str(i)]])
    definition = table_def(lambda path: {"origin": "even" if int(path[-6:-4]) % 2 == 0 else f"odd{path[-6:-4]}"},
                           passthrough=("origin",))
    ingest_csv_table(spark, lake, definition, salt)
    pseudo = table_rows(lake.table("stage2p", "src", "events_pseudo"))
    assert {r["n"]: r["origin"] for r in pseudo} == {i: "even" if i % 2 == 0 else f"odd{i:02d}" for i in range(24)}


def test_a_batch_of_header_only_files_is_done_with_empty_tables(spark, lake, salt):
    land(lake, "b1", "a.csv", [])
    result = ingest_csv_table(spark, lake, table_def(), salt)
    assert (result.batches, result.rows, result.rejected) == (("b1",), 0, 0)
    assert table_rows(lake.table("stage2p", "src", "events_pseudo")) == []
    assert ingest_csv_table(spark, lake, table_def(), salt).nothing_new


def test_a_run_interrupted_before_the_p_commit_finishes_on_the_next_run_without_duplicates(spark, lake, salt,
                                                                                             monkeypatch):
    from oea_core.delta import DeltaStore

    land(lake, "b1", "a.csv", [["2022-01-01", "p1", "e", "", "D1", "", "1"],
                               ["2022-01-02", "p2", "e", "", "D1", "", "x"]])

    commit = DeltaStore.commit

    def crash(self, staged, **kwargs):
        if staged.path.endswith("events_pseudo"):
            raise OSError("disk full while committing")
        return commit(self, staged, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(DeltaStore, "commit", crash)
        with pytest.raises(OSError, match="disk full"):
            ingest_csv_table(spark, lake, table_def(), salt, max_reject_share=0.5)
    # the rejected rows and the lookup were committed; the p table was not, and nothing is left staged
    assert len(table_rows(lake.table("stage2np", "src", "events_rejected"))) == 1
    assert len(table_rows(lake.table("stage2np", "src", "events_lookup"))) == 1
    assert not os.path.exists(lake.table("stage2p", "src", "events_pseudo"))
    assert not staging_leftovers(lake)
    result = ingest_csv_table(spark, lake, table_def(), salt, max_reject_share=0.5)
    assert (result.batches, result.rows, result.rejected) == (("b1",), 1, 1)
    assert len(table_rows(lake.table("stage2np", "src", "events_rejected"))) == 1
    assert len(table_rows(lake.table("stage2np", "src", "events_lookup"))) == 1
    assert [r["n"] for r in table_rows(lake.table("stage2p", "src", "events_pseudo"))] == [1]
    assert ingest_csv_table(spark, lake, table_def(), salt).nothing_new


@pytest.mark.parametrize("engine", ["delta-rs"], indirect=True)  # no Delta code differs here
def test_quoted_line_breaks_load_as_one_row_each_under_the_default_share(spark, lake, salt):
    # 5 valid rows; read line by line, they were 10 malformed rows, and the gate tripped
    land(lake, "b1", "notes.csv", [["2022-01-01", f"p{i}", "", "", "Line one\r\nLine two", "", str(i)]
                                   for i in range(5)])
    land(lake, "b1", "plain.csv", [["2022-01-02", "q", "", "", "D1", "", "9"]])
    result = ingest_csv_table(spark, lake, table_def(), salt)
    assert (result.rows, result.rejected) == (6, 0)
    pseudo = table_rows(lake.table("stage2p", "src", "events_pseudo"))
    assert sorted((r["n"], r["district"]) for r in pseudo) == [*[(i, "Line one\r\nLine two") for i in range(5)],
                                                                (9, "D1")]


@pytest.mark.parametrize("engine", ["delta-rs"], indirect=True)  # no Delta code differs here
def test_files_that_are_not_utf8_are_rejected_under_the_share_rule_and_empty_files_skipped(spark, lake, salt,
                                                                                             caplog):
    caplog.set_level("WARNING", logger="oea")
    good = [["2022-01-01", f"p{i}", "e", "", "D1", "", str(i)] for i in range(4)]
    land(lake, "b1", "good.csv", good)
    folder = lake.path("stage1np", "src", "events", "b1")
    latin = ",".join(HEADER) + "\n2022-01-02,Zoë,e,,D1,,1\n"
    with open(os.path.join(folder, "latin.csv"), "wb") as handle:
        handle.write(latin.encode("latin-1"))
    with open(os.path.join(folder, "photo.csv"), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with open(os.path.join(folder, "zero.csv"), "wb"):
        pass
    os.makedirs(lake.path("stage1np", "src", "events", "b2"))
    with open(lake.path("stage1np", "src", "events", "b2", "zero.csv"), "wb"):
        pass
    offset = latin.encode("latin-1").index(b"\xeb")
    with pytest.raises(RejectedRowsError, match=rf"4 of 8 rows .*nothing of batch b1 was written\. 1 later "
                                                rf"batches \(b2\) wait behind it\. \S+/b1/latin\.csv is not "
                                                rf"UTF-8 text: invalid byte 0xEB at offset {offset}\. \S+/b1/photo"
                                                r"\.csv is not UTF-8 text: invalid byte 0x89 at offset 0\."):
        ingest_csv_table(spark, lake, table_def(), salt)
    for stage, table in (("stage2p", "events_pseudo"), ("stage2np", "events_lookup"), ("stage2np", "events_rejected")):
        assert not os.path.exists(lake.table(stage, "src", table))
    assert not staging_leftovers(lake)

    result = ingest_csv_table(spark, lake, table_def(), salt, max_reject_share=0.7)
    assert (result.batches, result.rows, result.rejected) == (("b1", "b2"), 4, 4)
    rejected = table_rows(lake.table("stage2np", "src", "events_rejected"))
    # each file's header (its first non-blank line) is not a row: the header of photo.csv is "\x89PNG"
    assert sorted((os.path.basename(r["_source_file"]), r["_raw_line"], r["person"]) for r in rejected) == sorted([
        ("latin.csv", "2022-01-02,Zoë,e,,D1,,1", None),
        ("photo.csv", "\x00\x00\x00", None), ("photo.csv", "\x1a", None), ("photo.csv", "IHDR", None)])
    assert {r["_reject_reason"] for r in rejected if r["_source_file"].endswith("photo.csv")} == {
        "not UTF-8 text: invalid byte 0x89 at offset 0"}
    pseudo = table_rows(lake.table("stage2p", "src", "events_pseudo"))
    assert sorted(r["n"] for r in pseudo) == [0, 1, 2, 3]
    assert "b1/zero.csv is empty (0 bytes" in caplog.text and "b2/zero.csv is empty" in caplog.text
    assert ingest_csv_table(spark, lake, table_def(), salt).nothing_new
