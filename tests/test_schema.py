"""Schemas in OEA's [column, type, op] form: ops and their aliases, types, safe names, clear errors."""

from __future__ import annotations

import pytest

from oea_core import PseudoOp, SchemaError, TableSchema, safe_column_name, safe_table_name
from oea_core.schema import spark_type


@pytest.mark.parametrize("text, op", [
    ("hash", PseudoOp.HASH), ("h", PseudoOp.HASH), ("HASH", PseudoOp.HASH),
    ("hash-no-lookup", PseudoOp.HASH_NO_LOOKUP), ("hnl", PseudoOp.HASH_NO_LOOKUP),
    ("mask", PseudoOp.MASK), ("m", PseudoOp.MASK),
    ("partition-by", PseudoOp.PARTITION_BY),
    ("no-op", PseudoOp.NO_OP), ("x", PseudoOp.NO_OP), (" x ", PseudoOp.NO_OP),
])
def test_ops_and_aliases(text, op):
    assert TableSchema.parse("t", [["c", "string", text]]).columns[0].op is op


@pytest.mark.parametrize("type_name, sql", [
    ("string", "string"), ("int", "int"), ("integer", "int"), ("long", "bigint"), ("short", "smallint"),
    ("boolean", "boolean"), ("date", "date"), ("timestamp", "timestamp"), ("Double", "double"),
    ("decimal(10, 2)", "decimal(10,2)"),
])
def test_types(type_name, sql):
    assert spark_type(type_name) == sql


@pytest.mark.parametrize("spec, message", [
    ([["sis_id", "string", "hsh"]], r"table 'users' column 'sis_id': unknown op 'hsh'; use one of .*hnl"),
    ([["sis_id", "strng", "h"]], r"table 'users' column 'sis_id': unknown type 'strng'; use one of"),
    ([["n", "decimal(40,2)", "x"]], r"column 'n': unknown type 'decimal\(40,2\)'"),
    ([["n", "decimal(2,5)", "x"]], r"column 'n': unknown type"),
    ([["a", "string"]], r"table 'users' row 0: \['a', 'string'\] is not \[column, type, op\]"),
    ([["a", "string", "x"], ["a", "int", "x"]], r"column 'a' is empty or repeated"),
    ([["a b", "string", "x"], ["a_b", "int", "x"]], r"column 'a_b' is empty or repeated"),
    ([], r"table 'users' has no columns"),
])
def test_bad_specs_name_table_and_column(spec, message):
    with pytest.raises(SchemaError, match=message) as error:
        TableSchema.parse("users", spec)
    assert error.value.table == "users"


def test_parse_keeps_order_and_makes_names_safe():
    schema = TableSchema.parse("t", [["Student ID", "string", "h"], ["date", "date", "partition-by"],
                                     ["score(pct)", "double", "x"]])
    assert schema.names == ("Student_ID", "date", "score_pct_")
    assert [c.name for c in schema.with_ops(PseudoOp.HASH, PseudoOp.PARTITION_BY)] == ["Student_ID", "date"]


@pytest.mark.parametrize("raw, safe", [
    ("sis_id", "sis_id"),
    ("Student ID", "Student_ID"),
    ("a , b", "a_b"),
    ("x{y}(z)", "x_y_z_"),
    ("k=v;w", "k_v_w"),
    ("tab\there\nnl", "tab_here_nl"),
    ("  padded  ", "padded"),
])
def test_safe_column_name_follows_oea(raw, safe):
    assert safe_column_name(raw) == safe


def test_safe_table_name():
    assert safe_table_name("daily-participation") == "daily_participation"
    assert safe_table_name("resource-usage") == "resource_usage"
