"""Reading landed CSV files: columns matched by header name, every value checked.

Real exports vary: quoted or unquoted fields, column orders that differ from the docs,
unpadded dates (``2022-01-9``), blank IDs, a UTF-8 byte-order mark, CRLF line ends. Each
file's own header decides which column is which. A value that cannot be read as its
declared type, or a row with the wrong number of fields, is not nulled or dropped: the row
carries a ``_reject_reason`` and the raw text of every column (``_raw_<column>``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import IngestError
from .schema import TableSchema, safe_column_name

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("oea")
REASON = "_reject_reason"
SOURCE_FILE = "_source_file"
RAW_LINE = "_raw_line"
RAW_PREFIX = "_raw_"
DATE_FORMAT = "yyyy-M-d"  # accepts 2022-01-09 and 2022-1-9


def read_header(path: str) -> list[str]:
    """The header row of a CSV file, byte-order mark removed; raises IngestError when missing."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        row = next(csv.reader(handle), None)
    if not row or not any(cell.strip() for cell in row):
        raise IngestError(f"CSV file {path} has no header row: re-export it with a header", path=path)
    return row


def _match_columns(path: str, header: list[str], schema: TableSchema) -> dict[str, str]:
    """Map each schema column to the header's Spark column name (by safe, case-insensitive name)."""
    found = {safe_column_name(name).lower(): f"c{i}" for i, name in enumerate(header)}
    missing = [c for c in schema.names if c.lower() not in found]
    if missing:
        raise IngestError(
            f"CSV file {path} lacks columns {missing} of table {schema.table!r} "
            f"(its header has {header}); re-export it with those columns or fix the module schema",
            path=path, table=schema.table)
    extra = sorted(set(found) - {c.lower() for c in schema.names})
    if extra:
        log.warning("%s: columns %s are not in table %s and are left in stage1np only", path, extra, schema.table)
    return {c: found[c.lower()] for c in schema.names}


def _parse(column_name: str, type_name: str, date_format: str) -> Column:
    """ANSI-safe parse: a value that is not of ``type_name`` gives null, never an error."""
    from pyspark.sql import functions as F

    text = f"trim(`{column_name}`)"
    if type_name == "string":
        return F.col(column_name)
    if type_name == "date":
        return F.expr(f"to_date(try_to_timestamp({text}, '{date_format}'))")
    if type_name == "timestamp":
        return F.expr(f"try_to_timestamp({text})")
    return F.expr(f"try_cast({text} AS {type_name})")


def _read_target(paths: list[str]) -> tuple[str | list[str], dict]:
    """What to give Spark: the common folder when the files are exactly its CSV files (listing a
    folder is much faster than checking hundreds of paths), else the list of files."""
    if len(paths) < 2 or any("://" in p for p in paths):
        return paths, {}
    folder = os.path.commonpath(paths)
    found = set()
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        found.update(os.path.join(parent, n) for n in names if n.endswith(".csv") and not n.startswith(("_", ".")))
    if found != set(paths):
        return paths, {}
    return folder, {"recursiveFileLookup": True, "pathGlobFilter": "*.csv"}


def _file_literals(paths: list[str], file_columns: Callable[[str], dict[str, str]] | None) -> list[Column]:
    """The per-file literal columns: one literal when every file agrees, else chosen by the file's URI.

    Files are grouped by value, and each group is one set-membership test (a hash lookup), so the cost
    per row does not grow with the number of files.
    """
    from pathlib import Path

    from pyspark.sql import functions as F

    if not file_columns:
        return []
    values = {path if "://" in path else Path(path).absolute().as_uri(): file_columns(path) for path in paths}
    names = sorted({name for v in values.values() for name in v})
    columns = []
    for name in names:
        groups: dict[str | None, list[str]] = {}
        for uri, v in values.items():
            groups.setdefault(v.get(name), []).append(uri)
        if len(groups) == 1:
            columns.append(F.lit(next(iter(groups))).cast("string").alias(name))
            continue
        column = None
        for value, uris in groups.items():
            hit = F.input_file_name().isin(uris)
            literal = F.lit(value).cast("string")
            column = F.when(hit, literal) if column is None else column.when(hit, literal)
        columns.append(column.alias(name))
    return columns


def read_csv_files(spark: SparkSession, files: list[str], schema: TableSchema,
                   file_columns: Callable[[str], dict[str, str]] | None = None,
                   date_format: str = DATE_FORMAT, required: tuple[str, ...] = ()) -> DataFrame:
    """Read ``files`` as ``schema``'s table; adds literal ``file_columns(path)`` per file.

    Returns typed schema columns, the literal columns, ``_source_file``, ``_reject_reason``
    (null for good rows), ``_raw_line`` (malformed rows) and ``_raw_<column>`` texts (rejected rows). A blank
    value in a ``required`` column is a reason to reject the row.
    """
    from functools import reduce

    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not files:
        raise IngestError(f"no CSV files given for table {schema.table!r}", table=schema.table)
    groups: dict[tuple, list[str]] = {}
    for path in files:
        groups.setdefault(tuple(read_header(path)), []).append(path)
    frames = []
    for header, paths in groups.items():
        mapping = _match_columns(paths[0], list(header), schema)
        spark_schema = T.StructType([T.StructField(f"c{i}", T.StringType()) for i in range(len(header))]
                                    + [T.StructField(RAW_LINE, T.StringType())])
        target, options = _read_target(paths)
        df = spark.read.csv(target, schema=spark_schema, header=True, escape='"', mode="PERMISSIVE",
                            columnNameOfCorruptRecord=RAW_LINE, encoding="UTF-8", **options)
        reasons: list[Column] = [F.when(F.col(RAW_LINE).isNotNull(),
                                        F.lit(f"malformed CSV row: expected {len(header)} fields"))]
        columns: list[Column] = []
        raws: list[tuple[str, Column]] = []
        for spec in schema.columns:
            raw = F.col(mapping[spec.name])
            parsed = _parse(mapping[spec.name], spec.type, date_format)
            columns.append(parsed.alias(spec.name))
            raws.append((RAW_PREFIX + spec.name, raw))
            if spec.name in required:
                reasons.append(F.when(raw.isNull() | (F.trim(raw) == ""), F.lit(f"{spec.name}: blank but required")))
            if spec.type != "string":
                bad = raw.isNotNull() & (F.trim(raw) != "") & parsed.isNull()
                reasons.append(F.when(bad, F.concat(F.lit(f"{spec.name}: '"), raw,
                                                    F.lit(f"' is not a valid {spec.type}"))))
        columns += _file_literals(paths, file_columns)
        columns += [F.input_file_name().alias(SOURCE_FILE), F.col(RAW_LINE)]
        reason = F.concat_ws("; ", *reasons)
        reason = F.when(reason != "", reason)
        columns.append(reason.alias(REASON))
        # raw texts are kept for rejected rows only (good rows need none, and nulls cost nothing)
        columns += [F.when(reason.isNotNull(), raw).alias(name) for name, raw in raws]
        frames.append(df.select(*columns))
    return reduce(lambda a, b: a.unionByName(b), frames)
