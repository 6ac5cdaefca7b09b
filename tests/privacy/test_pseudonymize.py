"""Pseudonyms match an independent SHA-256, blanks stay null, and each op lands where OEA puts it."""

from __future__ import annotations

import hashlib

import pytest

from oea_core import Salt, TableSchema, pseudonym, to_lookup, to_pseudonymized
from oea_core.privacy.pseudonymize import hash_column

SALT = Salt("pepper-91", "test")
VALUES = ["1001", "ABC-7", "José Ñúñez", "学生42", "0"]


def sha(value: str) -> str:
    return hashlib.sha256((value + "pepper-91").encode("utf-8")).hexdigest()


def frame(spark, columns, rows):
    return spark.createDataFrame(rows, ", ".join(f"{c} string" for c in columns))


@pytest.mark.parametrize("value", VALUES)
def test_reference_pseudonym_is_sha256_of_value_then_salt(value):
    assert pseudonym(value, SALT) == sha(value) == pseudonym(value, "pepper-91")


def test_spark_hash_matches_hashlib(spark):
    from pyspark.sql import functions as F

    df = frame(spark, ["v"], [(v,) for v in VALUES])
    got = {r.v: r.p for r in df.select("v", hash_column(F.col("v"), SALT).alias("p")).collect()}
    assert got == {v: sha(v) for v in VALUES}


@pytest.mark.parametrize("blank", [None, "", "   ", "\t", " \r\n", "\x0b\x0c"])
def test_null_and_blank_stay_null_never_the_hash_of_the_salt(spark, blank):
    from pyspark.sql import functions as F

    assert pseudonym(blank, SALT) is None
    df = frame(spark, ["v"], [(blank,)])
    assert df.select(hash_column(F.col("v"), SALT).alias("p")).first().p is None


SPEC = [["id", "string", "h"], ["email", "string", "hnl"], ["name", "string", "m"],
        ["school", "string", "partition-by"], ["score", "string", "x"]]
ROW = ("s1", "a@x.org", "Ann", "North", "91")


@pytest.mark.parametrize("column, in_p, in_lookup", [
    ("id", None, "s1"),
    ("id_pseudonym", sha("s1"), sha("s1")),
    ("email", None, None),
    ("email_pseudonym", sha("a@x.org"), None),
    ("name", "*", "Ann"),
    ("school", "North", "North"),
    ("score", "91", None),
])
def test_where_each_op_puts_a_column(spark, column, in_p, in_lookup):
    schema = TableSchema.parse("people", SPEC)
    df = frame(spark, ["id", "email", "name", "school", "score"], [ROW])
    p_row = to_pseudonymized(df, schema, SALT).first().asDict()
    lookup_row = to_lookup(df, schema, SALT).first().asDict()
    assert p_row.get(column) == in_p and (in_p is not None or column not in p_row)
    assert lookup_row.get(column) == in_lookup and (in_lookup is not None or column not in lookup_row)


def test_no_raw_identifier_in_the_p_form(spark):
    schema = TableSchema.parse("people", SPEC)
    df = frame(spark, ["id", "email", "name", "school", "score"], [ROW, ("s2", "b@y.org", "Bo", "South", "7")])
    text = " ".join(str(v) for r in to_pseudonymized(df, schema, SALT).collect() for v in r)
    for raw in ("s1", "s2", "a@x.org", "b@y.org", "Ann", "Bo", "pepper-91"):
        assert raw not in text.split()


def test_lookup_has_one_row_per_identity_and_skips_rows_without_one(spark):
    schema = TableSchema.parse("t", [["sis_id", "string", "h"], ["user_id", "string", "h"],
                                     ["n", "string", "x"]])
    df = frame(spark, ["sis_id", "user_id", "n"],
               [("1", "u1", "a"), ("1", "u1", "b"), ("", "u2", "c"), (None, "u2", "d"), ("  ", None, "e")])
    rows = {(r.sis_id, r.user_id, r.sis_id_pseudonym) for r in to_lookup(df, schema, SALT).collect()}
    assert rows == {("1", "u1", sha("1")), (None, "u2", None)}


def test_no_lookup_without_a_hash_column(spark):
    schema = TableSchema.parse("t", [["email", "string", "hnl"], ["n", "string", "x"]])
    assert to_lookup(frame(spark, ["email", "n"], [("e", "1")]), schema, SALT) is None


def test_undeclared_columns_are_refused(spark):
    from oea_core import SchemaError

    schema = TableSchema.parse("t", [["id", "string", "h"]])
    with pytest.raises(SchemaError, match=r"table 't' has columns \['ssn'\] that its schema does not declare"):
        to_pseudonymized(frame(spark, ["id", "ssn"], [("1", "x")]), schema, SALT)
    passed = to_pseudonymized(frame(spark, ["id", "role"], [("1", "students")]), schema, SALT, ("role",))
    assert passed.columns == ["id_pseudonym", "role"]
