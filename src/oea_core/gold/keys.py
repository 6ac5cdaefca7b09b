"""Hash keys, hashdiffs and surrogate keys of the gold layer, in Python (the reference) and in Spark.

- **Hash key**: the lowercase hex SHA-256 of the normalized business key. Each part is cast to
  text, trimmed of spaces and upper-cased, a null part becomes ``''``, and the parts are joined
  with ``||``. Business keys are pseudonyms (``studentUniqueId_pseudonym``) or codes that name no
  person (``schoolId``), so a hash key never encodes a raw identifier. A key whose parts are all
  null has no hash key (null).
- **Hashdiff**: the same SHA-256 over a satellite's attributes, trimmed but not upper-cased (a change
  of case is a change), in the declared order.
- **Surrogate key**: a non-negative bigint, the first 60 bits of SHA-256 of ``<hash key>|<valid_from>``
  (SCD2) or of the hash key (SCD1), so a rebuild gives the same keys. Negative keys are reserved for
  members such as the unknown student (:data:`UNKNOWN_KEY`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

SEPARATOR = "||"
UNKNOWN_KEY = -1  # the surrogate key of an unknown member (the unknown student, the unknown school)
UNKNOWN_HASH_KEY = "0" * 64  # the hash key of an unknown member: no SHA-256 is all zeros in practice
_SK_HEX_DIGITS = 15  # 60 bits: always a non-negative bigint


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as Spark casts a boolean to string
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def normalize_key(*parts: object) -> str | None:
    """A business key's normalized text (trimmed, upper case, ``||``-joined); None when every part is null."""
    if all(p is None for p in parts):
        return None
    return SEPARATOR.join(_text(p).strip(" ").upper() for p in parts)


def hash_key(*parts: object) -> str | None:
    """The hash key of a business key (reference implementation of :func:`hash_key_column`)."""
    text = normalize_key(*parts)
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashdiff(*attributes: object) -> str:
    """The hashdiff of a satellite's attributes (reference implementation of :func:`hashdiff_column`)."""
    text = SEPARATOR.join(_text(a).strip(" ") for a in attributes)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def surrogate_key(hash_key_value: str, valid_from: dt.date | None = None) -> int:
    """The surrogate key of a dimension row (reference implementation of :func:`surrogate_key_column`)."""
    text = hash_key_value if valid_from is None else f"{hash_key_value}|{valid_from.isoformat()}"
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:_SK_HEX_DIGITS], 16)


def date_key(day: dt.date) -> int:
    """The ``dim_date`` key of a day: ``yyyymmdd`` as an int."""
    return day.year * 10000 + day.month * 100 + day.day


# Spark ------------------------------------------------------------------------------------------
def _spark_text(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.trim(column.cast("string")), F.lit(""))


def hash_key_column(*parts: Column) -> Column:
    """Spark expression of the hash key of ``parts``; null when every part is null."""
    from pyspark.sql import functions as F

    text = F.concat_ws(SEPARATOR, *[F.upper(_spark_text(p)) for p in parts])
    all_null = F.lit(True)
    for part in parts:
        all_null = all_null & part.isNull()
    return F.when(all_null, F.lit(None).cast("string")).otherwise(F.sha2(text, 256))


def hashdiff_column(*attributes: Column) -> Column:
    """Spark expression of the hashdiff of ``attributes`` (in this order)."""
    from pyspark.sql import functions as F

    return F.sha2(F.concat_ws(SEPARATOR, *[_spark_text(a) for a in attributes]), 256)


def surrogate_key_column(hash_key_col: Column, valid_from: Column | None = None) -> Column:
    """Spark expression of the surrogate key of a row with this hash key (and ``valid_from``, for SCD2)."""
    from pyspark.sql import functions as F

    text = hash_key_col if valid_from is None else F.concat_ws("|", hash_key_col, F.date_format(valid_from,
                                                                                                 "yyyy-MM-dd"))
    return F.conv(F.substring(F.sha2(text, 256), 1, _SK_HEX_DIGITS), 16, 10).cast("bigint")


def date_key_column(day: Column) -> Column:
    """Spark expression of the ``dim_date`` key of a date column (``yyyymmdd``); null stays null."""
    from pyspark.sql import functions as F

    return (F.year(day) * 10000 + F.month(day) * 100 + F.dayofmonth(day)).cast("int")
