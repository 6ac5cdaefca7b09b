"""Reading landed CSV files: every real-world variation loads, bad values are flagged, not nulled."""

from __future__ import annotations

import datetime as dt

import pytest

from oea_core import IngestError, TableSchema
from oea_core.csv_source import REASON, read_csv_files, read_header

SCHEMA = TableSchema.parse("t", [["date", "date", "x"], ["sis_id", "string", "h"], ["num", "int", "x"],
                                 ["name", "string", "x"]])
HEADER = "date,sis_id,num,name"


def write(tmp_path, text: str, name="f.csv", bom=False, crlf=False) -> str:
    data = text.strip("\n").replace("\n", "\r\n" if crlf else "\n") + ("\r\n" if crlf else "\n")
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return str(path)


def read(spark, paths, **kwargs):
    df = read_csv_files(spark, paths if isinstance(paths, list) else [paths], SCHEMA, **kwargs)
    return sorted((r.asDict() for r in df.collect()), key=lambda r: (r["sis_id"] or "", r["_raw_date"] or ""))


@pytest.mark.parametrize("variant", ["plain", "bom", "crlf", "bom+crlf"])
def test_bom_and_line_endings_load_the_same(spark, tmp_path, variant):
    path = write(tmp_path, f"{HEADER}\n2022-01-09,s1,3,A\n2022-01-10,s2,4,B", bom="bom" in variant,
                 crlf="crlf" in variant)
    got = read(spark, path)
    assert [(r["date"], r["sis_id"], r["num"], r["name"], r[REASON]) for r in got] == [
        (dt.date(2022, 1, 9), "s1", 3, "A", None), (dt.date(2022, 1, 10), "s2", 4, "B", None)]


def test_columns_are_matched_by_header_name_not_position(spark, tmp_path):
    path = write(tmp_path, "name,num,sis_id,date\nA,3,s1,2022-01-09")
    (row,) = read(spark, path)
    assert (row["date"], row["sis_id"], row["num"], row["name"]) == (dt.date(2022, 1, 9), "s1", 3, "A")


def test_files_with_different_column_orders_in_one_batch(spark, tmp_path):
    a = write(tmp_path, f"{HEADER}\n2022-01-09,s1,3,A", name="a.csv")
    b = write(tmp_path, "num,name,date,sis_id\n4,B,2022-01-10,s2", name="b.csv")
    got = read(spark, [a, b])
    assert [(r["sis_id"], r["num"], r["name"]) for r in got] == [("s1", 3, "A"), ("s2", 4, "B")]


def test_quoted_and_unquoted_fields_with_commas_and_doubled_quotes(spark, tmp_path):
    path = write(tmp_path, f'{HEADER}\n"2022-01-09","s1","3","Washington, George ""GW"" Elementary"\n'
                           "2022-01-10,s2,4,Plain")
    got = read(spark, path)
    assert [r["name"] for r in got] == ['Washington, George "GW" Elementary', "Plain"]
    assert all(r[REASON] is None for r in got)


def test_unpadded_dates(spark, tmp_path):
    path = write(tmp_path, f"{HEADER}\n2022-1-9,s1,1,A\n2022-01-9,s2,1,A\n2022-1-09,s3,1,A")
    assert {r["date"] for r in read(spark, path)} == {dt.date(2022, 1, 9)}


def test_blank_ids_stay_null_and_the_row_is_kept(spark, tmp_path):
    path = write(tmp_path, f'{HEADER}\n2022-01-09,,1,A\n2022-01-09,"",2,B')
    got = read(spark, path)
    assert len(got) == 2 and all(r[REASON] is None for r in got)
    assert all(r["sis_id"] in (None, "") for r in got)


def test_bad_values_are_flagged_with_the_reason_and_raw_text(spark, tmp_path):
    path = write(tmp_path, f"{HEADER}\n2022-13-01,s1,3,A\n2022-01-09,s2,x,B\n2022-01-09,s3,5,C")
    got = {r["sis_id"]: r for r in read(spark, path)}
    assert got["s1"][REASON] == "date: '2022-13-01' is not a valid date"
    assert got["s1"]["_raw_date"] == "2022-13-01" and got["s1"]["date"] is None
    assert got["s2"][REASON] == "num: 'x' is not a valid int"
    assert got["s2"]["_raw_num"] == "x"
    assert got["s3"][REASON] is None
    assert got["s1"]["_source_file"].endswith("f.csv")


def test_rows_with_too_few_or_too_many_fields_are_flagged(spark, tmp_path):
    path = write(tmp_path, f"{HEADER}\n2022-01-09,s1,3\n2022-01-09,s2,3,B,extra\n2022-01-09,s3,3,C")
    got = {r["sis_id"]: r for r in read(spark, path)}
    assert got["s1"][REASON].startswith("malformed CSV row: expected 4 fields")
    assert got["s2"][REASON].startswith("malformed CSV row")
    assert got["s1"]["_raw_line"] == "2022-01-09,s1,3"
    assert got["s3"][REASON] is None


def test_required_blank_value_is_a_reason(spark, tmp_path):
    path = write(tmp_path, f"{HEADER}\n,s1,3,A")
    (row,) = read(spark, path, required=("date",))
    assert row[REASON] == "date: blank but required"


def test_a_missing_column_names_the_file_and_what_it_has(spark, tmp_path):
    path = write(tmp_path, "date,sis_id,name\n2022-01-09,s1,A")
    with pytest.raises(IngestError, match=r"f\.csv lacks columns \['num'\] of table 't' \(its header has "
                                          r"\['date', 'sis_id', 'name'\]\)"):
        read(spark, path)


def test_an_empty_file_has_no_header(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(IngestError, match="has no header row"):
        read_header(path)


def test_header_cleaned_like_oea_and_case_insensitive(spark, tmp_path):
    path = write(tmp_path, "Date,SIS ID,Num,Name\n2022-01-09,s1,3,A", bom=True)
    schema = TableSchema.parse("t", [["date", "date", "x"], ["sis id", "string", "h"], ["num", "int", "x"],
                                     ["name", "string", "x"]])
    (row,) = [r.asDict() for r in read_csv_files(spark, [path], schema).collect()]
    assert row["sis_id"] == "s1" and row["date"] == dt.date(2022, 1, 9)
