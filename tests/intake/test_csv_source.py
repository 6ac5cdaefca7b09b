"""Reading landed CSV files: every real-world variation loads, bad values are flagged, not nulled."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from oea_core import IngestError, TableSchema
from oea_core.intake.csv_source import REASON, check_file, read_csv_files, read_header

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


# bad bytes ------------------------------------------------------------------------------------
def write_bytes(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_files_that_are_not_utf8_are_set_aside_line_by_line_and_empty_files_skipped(spark, tmp_path, caplog):
    caplog.set_level("WARNING", logger="oea")
    good = write(tmp_path, f"{HEADER}\n2022-01-09,s1,3,Zoë", name="good.csv")
    latin_bytes = f"{HEADER}\n2022-01-09,s2,4,Zoë\r\n\n2022-01-10,s3,5,B\n".encode("latin-1")
    latin = write_bytes(tmp_path, "latin.csv", latin_bytes)
    binary_bytes = b"PK\x03\x04\x14\x00\x08\x00\x92\x8b" + bytes(range(256))
    binary = write_bytes(tmp_path, "archive.csv", binary_bytes)
    empty = [write_bytes(tmp_path, name, data) for name, data in (("zero.csv", b""), ("bom.csv", b"\xef\xbb\xbf\r\n \n"))]
    header_only = write_bytes(tmp_path, "header-only.csv", b"\xef\xbb\xbf" + HEADER.encode())
    got = read(spark, [good, latin, binary, *empty, header_only])
    assert [(r["sis_id"], r["name"], r[REASON]) for r in got if r["sis_id"]] == [("s1", "Zoë", None)]
    set_aside = {}
    for row in got:
        if not row["sis_id"]:
            assert row["date"] is None and row["_raw_name"] is None
            set_aside.setdefault(row["_source_file"].rsplit("/", 1)[-1], []).append(row)
    assert sorted(set_aside) == ["archive.csv", "latin.csv"]
    # every non-empty line after the header (the first that is not blank), decoded as Latin-1 so no byte is lost
    assert sorted(r["_raw_line"] for r in set_aside["latin.csv"]) == sorted(["2022-01-09,s2,4,Zoë", "2022-01-10,s3,5,B"])
    assert {r[REASON] for r in set_aside["latin.csv"]} == {
        f"not UTF-8 text: invalid byte 0xEB at offset {latin_bytes.index(0xEB)}"}
    assert {r[REASON] for r in set_aside["archive.csv"]} == {"not UTF-8 text: invalid byte 0x92 at offset 8"}
    assert sorted(r["_raw_line"].encode("latin-1") for r in set_aside["archive.csv"]) == sorted(
        [line for line in re.split(rb"\r\n|\r|\n", binary_bytes) if line][1:])
    for path in (latin, binary, *empty):
        assert path in caplog.text
    assert "zero.csv is empty" in caplog.text and header_only not in caplog.text


def test_nul_bytes_are_removed_from_values_quoted_or_not(spark, tmp_path, caplog):
    caplog.set_level("WARNING", logger="oea")
    path = write_bytes(tmp_path, "nul.csv", b'date,sis_id,num,na\x00me\n2022-01-09,s1\x00,\x003,"A\x00 B"\n'
                                            b'2022-01-09,s2,4,C\x00\x00\n')
    got = read(spark, path)
    assert [(r["sis_id"], r["num"], r["name"], r[REASON]) for r in got] == [
        ("s1", 3, "A B", None), ("s2", 4, "C", None)]
    assert f"{path} holds 6 NUL bytes" in caplog.text


def test_the_byte_check_finds_the_first_invalid_byte_across_chunks(tmp_path):
    chunk = 1 << 18
    # a valid two-byte character cut by the chunk boundary is not a problem
    ok = write_bytes(tmp_path, "ok.csv", b"a" * (chunk - 1) + "é".encode() + b"\n")
    assert check_file(ok) == check_file(ok) and check_file(ok).problem is None
    split = write_bytes(tmp_path, "split.csv", b"a" * (chunk - 1) + b"\xc3" + b"z")
    assert check_file(split).problem == f"not UTF-8 text: invalid byte 0xC3 at offset {chunk - 1}"
    late = write_bytes(tmp_path, "late.csv", b"a" * (3 * chunk) + b"\xff")
    assert check_file(late).problem == f"not UTF-8 text: invalid byte 0xFF at offset {3 * chunk}"
    cut = write_bytes(tmp_path, "cut.csv", b"abc\xe2\x82")  # the file ends inside a character
    assert check_file(cut).problem == "not UTF-8 text: invalid byte 0xE2 at offset 3"
    assert [check_file(write_bytes(tmp_path, f"{i}.csv", data)).empty
            for i, data in enumerate([b"", b"\xef\xbb\xbf", b" \r\n\t\n", b"\xef\xbb\xbfa", b"\n\na"])] == [
        True, True, True, False, False]


def test_the_header_is_the_first_non_blank_line_as_spark_takes_it(tmp_path):
    assert read_header(write_bytes(tmp_path, "a.csv", b"\r\n  \n\xef\xbb\xbfx\x00,y\n1,2")) == ["\ufeffx", "y"]
    assert read_header(write_bytes(tmp_path, "b.csv", b"\xef\xbb\xbf\n \nx,y\n")) == ["x", "y"]
    with pytest.raises(IngestError, match=r"long\.csv has no readable header row \(its first line is longer"):
        read_header(write_bytes(tmp_path, "long.csv", b"x" * (2 << 20)))


def test_a_latin1_files_header_is_not_a_row_even_after_blank_lines_or_in_a_large_file(spark, tmp_path):
    lines = [f"2022-01-09,s{i},{i},Zoë" for i in range(20000)]
    data = ("\r\n \n" + HEADER + "\n" + "\n".join(lines) + "\n").encode("latin-1")
    path = write_bytes(tmp_path, "latin.csv", data)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")  # the file is read in several blocks
    try:
        got = read(spark, path)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert sorted(r["_raw_line"] for r in got) == sorted([" ", *lines])  # the blank line is kept, as before


LINE_BREAK = '"Line one\r\nLine two"'


def test_quoted_line_breaks_are_read_as_multi_line_records(spark, tmp_path):
    rows = "".join(f'2022-01-09,s{i},{i},{LINE_BREAK}\r\n' for i in range(5))
    broken = write_bytes(tmp_path, "broken.csv", f"{HEADER}\r\n{rows}".encode())
    # a stray quote inside an unquoted field is not an opening quote
    stray = write_bytes(tmp_path, "stray.csv", f'{HEADER}\n2022-01-09,t1,1,5" tall\n2022-01-09,t2,2,{LINE_BREAK}\n'
                                               .encode())
    plain = write(tmp_path, f'{HEADER}\n2022-01-10,p1,7,"quoted, no break"', name="plain.csv")
    assert [check_file(p).quoted_newlines for p in (broken, stray, plain)] == [True, True, False]
    got = read(spark, [broken, stray, plain])
    assert [(r["sis_id"], r["name"], r[REASON]) for r in got] == [
        ("p1", "quoted, no break", None), *[(f"s{i}", "Line one\nLine two", None) for i in range(5)],
        ("t1", '5" tall', None), ("t2", "Line one\r\nLine two", None)]  # a CRLF in a LF file stays as it is


def test_an_unclosed_quote_does_not_take_the_lines_after_it(spark, tmp_path):
    path = write(tmp_path, f'{HEADER}\n2022-01-09,s1,1,A\n2022-01-09,s2,2,"unclosed\n2022-01-09,s3,3,C\n'
                           "2022-01-09,s4,4,D")
    assert not check_file(path).quoted_newlines
    got = read(spark, path)  # line by line, Spark reads the unclosed field to its line's end
    assert [(r["sis_id"], r["name"], r[REASON]) for r in got] == [
        ("s1", "A", None), ("s2", "unclosed", None), ("s3", "C", None), ("s4", "D", None)]


def test_a_quoted_line_break_is_found_across_chunks_and_costs_nothing_without_quotes(tmp_path):
    chunk = 1 << 18
    head = f"{HEADER}\n".encode()
    filler = b"2022-01-09,s0,0,A\n" * ((chunk - len(head)) // 18)
    pad = b"x" * (chunk - len(head) - len(filler) - 20)
    across = write_bytes(tmp_path, "across.csv", head + filler + b"2022-01-09,s1,1," + pad + b'"one\ntwo"\n')
    assert check_file(across).quoted_newlines
    doubled = write_bytes(tmp_path, "doubled.csv", head + b'2022-01-09,s1,1,"say ""hi""\n"\n')
    assert check_file(doubled).quoted_newlines
    balanced = write_bytes(tmp_path, "balanced.csv", head + b'2022-01-09,s1,1,"say ""hi"""\n' * 3)
    assert not check_file(balanced).quoted_newlines
