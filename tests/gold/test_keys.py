"""Hash keys, hashdiffs and surrogate keys: the Python reference (Spark's match is in test_vault.py)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from oea_core.gold.keys import date_key, hash_key, hashdiff, normalize_key, surrogate_key


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("parts", "normalized"), [
    (("ab12",), "AB12"),
    ((" ab12 ",), "AB12"),
    (("ab", 7, dt.date(2024, 1, 2)), "AB||7||2024-01-02"),
    (("ab", None), "AB||"),
    ((True,), "TRUE"),
])
def test_a_business_key_is_trimmed_upper_cased_and_joined_with_double_bars(parts, normalized):
    assert normalize_key(*parts) == normalized
    assert hash_key(*parts) == sha(normalized)


def test_a_key_with_every_part_null_has_no_hash_key():
    assert hash_key(None) is None and hash_key(None, None) is None


def test_hashdiff_keeps_case_so_a_change_of_case_is_a_change():
    assert hashdiff("Lincoln High", None) == sha("Lincoln High||")
    assert hashdiff("Lincoln High") != hashdiff("LINCOLN HIGH")
    assert hashdiff(" x ") == hashdiff("x")


def test_surrogate_keys_are_non_negative_bigints_fixed_by_hash_key_and_valid_from():
    hk = hash_key("ab12")
    assert hk is not None
    first = surrogate_key(hk, dt.date(2024, 1, 1))
    assert first == surrogate_key(hk, dt.date(2024, 1, 1)) == int(sha(f"{hk}|2024-01-01")[:15], 16)
    assert first != surrogate_key(hk, dt.date(2024, 1, 2)) != surrogate_key(hk)
    assert 0 <= first < 2**63


def test_date_keys_are_yyyymmdd():
    assert date_key(dt.date(2024, 9, 3)) == 20240903


def test_the_spark_expressions_give_the_python_reference_values(spark):
    from pyspark.sql import functions as F

    from oea_core.gold.keys import date_key_column, hash_key_column, hashdiff_column, surrogate_key_column

    rows = [(" ab12 ", 7, dt.date(2024, 1, 2), True), ("Ab12", None, None, None), (None, None, None, None)]
    df = spark.createDataFrame(rows, "s string, n int, d date, b boolean")
    parts = [F.col(c) for c in ("s", "n", "d", "b")]
    got = df.select(hash_key_column(*parts).alias("hk"), hashdiff_column(*parts).alias("diff"),
                    surrogate_key_column(F.lit("x"), F.col("d")).alias("sk"), date_key_column(F.col("d")).alias("dk"),
                    ).collect()
    for (s, n, d, b), row in zip(rows, got):
        assert row.hk == hash_key(s, n, d, b)
        assert row.diff == hashdiff(s, n, d, b)
        assert row.sk == surrogate_key("x", d) and row.dk == (date_key(d) if d else None)
