"""Reading landed CSV files: columns matched by header name, every value checked.

Real exports vary: quoted or unquoted fields, column orders that differ from the docs,
unpadded dates (``2022-01-9``), blank IDs, a UTF-8 byte-order mark, CRLF line ends. Each
file's own header decides which column is which. A value that cannot be read as its
declared type, or a row with the wrong number of fields, is not nulled or dropped: the row
carries a ``_reject_reason`` and the raw text of every column (``_raw_<column>``).

A quoted field may hold a line break (RFC 4180). A file that has one is read as multi-line records;
the others are read line by line, which splits a large file across tasks. Inside such a field Spark's
parser reads a break written as the file's own line end (CRLF in a CRLF file) as ``\n``; the landed file
in stage1np keeps the bytes. A file whose odd quote is an unclosed one (it does not parse as strict CSV,
or a record spanning lines has the wrong number of fields) is read line by line, so an unclosed quote
rejects its own line, not the rest of the file.

Bad bytes (each file's bytes are checked once, on the driver, before Spark reads it):
- A file with no content (0 bytes, or only a byte-order mark and blank lines) is skipped with a
  warning naming it; a file with a header and no rows reads as zero rows.
- A file that is not UTF-8 text (latin-1, binary) is not parsed: Spark would silently turn its
  invalid bytes into U+FFFD. Every non-empty line of it after the header line becomes a
  rejected row with the reason ``not UTF-8 text: invalid byte 0xE9 at offset 1234`` and the line
  in ``_raw_line``, decoded as Latin-1 so no byte is lost (``_raw_line.encode('latin-1')`` gives
  the line's bytes back); its ``_raw_<column>`` values are null.
- NUL bytes are removed from values (and from the header), with a warning naming the file: a
  NUL is never text, and Spark's CSV parser already drops it inside quoted fields, so removing
  it everywhere is the only rule that treats every field alike.
"""

from __future__ import annotations

import codecs
import csv
import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IngestError
from ..schema import TableSchema, safe_column_name
from .spark_paths import file_uri, literal_path, shown, spark_skips, unreadable_reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import types as T

log = logging.getLogger("oea")
REASON = "_reject_reason"
SOURCE_FILE = "_source_file"
RAW_LINE = "_raw_line"
RAW_PREFIX = "_raw_"
DATE_FORMAT = "yyyy-M-d"  # accepts 2022-01-09 and 2022-1-9


_CHUNK = 1 << 18  # checked per 256 KiB: small enough that decoding stays in the CPU cache
_HEADER_LIMIT = 1 << 20
_BOM = b"\xef\xbb\xbf"
_BLANK_BYTES = bytes(range(33))  # what Java's String.trim removes: Spark skips lines made only of these
_BLANK = _BLANK_BYTES.decode("ascii")


@dataclass(frozen=True)
class FileCheck:
    """What the bytes of a CSV file say before Spark reads it."""

    empty: bool  # no content: 0 bytes, or only a byte-order mark and blank lines
    problem: str | None  # why it is not UTF-8 text, e.g. "not UTF-8 text: invalid byte 0xE9 at offset 12"
    nul_bytes: int  # NUL bytes before the problem (or in the whole file)
    quoted_newlines: bool = False  # a quoted field holds a line break: the file is read as multi-line records


def check_file(path: str) -> FileCheck:
    """Check a file's bytes once per process (files are immutable once landed; size and mtime are part
    of the key). Warns, naming the file, when it is empty, not UTF-8 or holds NUL bytes."""
    stat = os.stat(path)
    return _check_file(path, stat.st_size, stat.st_mtime_ns)


def text_problems(paths: list[str]) -> dict[str, str]:
    """``{path: reason}`` for the files that are not UTF-8 text (their lines are set aside as rejected)."""
    return {p: check.problem for p in paths if (check := check_file(p)).problem}


class _OddQuotes:
    r"""Whether a line holds an odd number of ``"``, chunk by chunk: every byte but ``"`` and ``\n`` deleted,
    then ``""`` pairs; a ``"`` left is such a line (about 1 ns a byte). A quoted field holding a line break
    (RFC 4180 allows ``"Line one\r\nLine two"``) leaves one; so do a stray ``"`` and an unclosed quote."""

    _OTHERS = bytes(b for b in range(256) if b not in b'"\n')

    def __init__(self) -> None:
        self.found = False
        self._tail = b""  # the last line so far, not yet ended

    def feed(self, chunk: bytes) -> None:
        if self.found or (not self._tail and b'"' not in chunk):
            return
        block = self._tail + chunk
        cut = block.rfind(b"\n") + 1
        lines, self._tail = block[:cut], block[cut:]
        # a line over 1 MiB is looked at whole, rather than carried chunk after chunk
        self.found = len(self._tail) > _HEADER_LIMIT or b'"' in lines.translate(None, self._OTHERS).replace(b'""', b"")


def _quoted_line_breaks(path: str) -> bool:
    """Whether the file's records include one that spans lines (a quoted line break), every such record has
    the header's number of fields, and the file parses as strict CSV. Otherwise the odd quote is an unclosed
    one, which read as multi-line records would take the lines after it into one row: such a file is read
    line by line, so only the broken lines are rejected."""
    spanning = False
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)  # an unclosed quote at the end is an error, not a field
            header = next((row for row in reader if row), None)
            last = reader.line_num
            for row in reader:
                if reader.line_num - last > 1 and row:
                    if len(row) != len(header or ()):
                        return False
                    spanning = True
                last = reader.line_num
    except (csv.Error, UnicodeDecodeError):
        return False
    return spanning


@functools.lru_cache(maxsize=4096)
def _check_file(path: str, size: int, mtime_ns: int) -> FileCheck:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, nuls, empty, problem = 0, 0, True, None
    odd = _OddQuotes()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            odd.feed(chunk)
            if empty:
                empty = not (chunk[3:] if offset == 0 and chunk.startswith(_BOM) else chunk).strip(_BLANK_BYTES)
            if b"\0" in chunk:
                nuls += chunk.count(b"\0")
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk
            try:
                if pending or not chunk.isascii():
                    decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                problem = _invalid_byte(exc, offset - pending)
                break
            offset += len(chunk)
        else:
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:  # the file ends inside a character
                problem = _invalid_byte(exc, offset - pending)
    if empty:
        log.warning("%s is empty (%d bytes, no CSV text): skipped", shown(path), size)
    elif problem:
        log.warning("%s is %s: each of its lines is set aside as a rejected row; re-export it as UTF-8",
                    shown(path), problem)
    elif nuls:
        log.warning("%s holds %d NUL bytes: they are removed from its values", shown(path), nuls)
    quoted = odd.found and not empty and not problem and _quoted_line_breaks(path)
    if quoted:
        log.info("%s has quoted fields holding line breaks: it is read as multi-line records", shown(path))
    return FileCheck(empty, problem, nuls, quoted)


def _invalid_byte(exc: UnicodeDecodeError, base: int) -> str:
    return f"not UTF-8 text: invalid byte 0x{exc.object[exc.start]:02X} at offset {base + exc.start}"


def read_header(path: str) -> list[str]:
    """The header row of a CSV file: its first non-blank line, as Spark takes it, without a byte-order
    mark or NUL bytes. Raises IngestError naming the file when it has none or it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            while (line := handle.readline(_HEADER_LIMIT)) and not line.strip(_BLANK):
                pass
        if len(line) == _HEADER_LIMIT and not line.endswith(("\n", "\r")):
            raise ValueError(f"its first line is longer than {_HEADER_LIMIT:,} characters")
        row = [cell.replace("\0", "") for cell in next(csv.reader([line]), [])]
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise IngestError(f"CSV file {shown(path)} has no readable header row ({exc}): re-export it as UTF-8 "
                          "CSV with a header", path=path) from exc
    if not row or not any(cell.strip() for cell in row):
        raise IngestError(f"CSV file {shown(path)} has no header row: re-export it with a header", path=path)
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
    """What to give Spark: the common folder when the files are exactly the CSV files Spark lists in it
    (listing a folder is much faster than checking hundreds of paths), else the list of files. Paths are
    escaped (:func:`~oea_core.intake.spark_paths.literal_path`), never glob patterns; IngestError for a file whose
    name Spark would skip or cannot read."""
    for path in paths:
        reason = unreadable_reason(os.path.basename(path))
        if reason:
            raise IngestError(f"CSV file {shown(path)} cannot be read: {reason}. Rename it (or remove it) in "
                              "its landed batch and run again", path=path)
    if len(paths) < 2 or any("://" in p for p in paths):
        return [literal_path(p) for p in paths], {}
    folder = os.path.commonpath(paths)
    found: set[str] = set()
    for parent, dirs, names in os.walk(folder):  # what Spark lists: it skips hidden files and folders
        dirs[:] = [d for d in dirs if not spark_skips(d)]
        found.update(os.path.join(parent, n) for n in names if n.endswith(".csv") and not spark_skips(n))
    if found != set(paths):
        return [literal_path(p) for p in paths], {}
    return literal_path(folder), {"recursiveFileLookup": True, "pathGlobFilter": "*.csv"}


def _file_literals(paths: list[str], file_columns: Callable[[str], dict[str, str]] | None) -> list[Column]:
    """The per-file literal columns: one literal when every file agrees, else chosen by the file's URI
    (:func:`~oea_core.intake.spark_paths.file_uri`, as ``input_file_name()`` spells it; a file matching no URI
    fails the read rather than getting nulls).

    Files are grouped by value, and each group is one set-membership test (a hash lookup), so the cost
    per row does not grow with the number of files.
    """
    from pyspark.sql import functions as F

    if not file_columns:
        return []
    values = {file_uri(path): file_columns(path) for path in paths}
    names = sorted({name for v in values.values() for name in v})
    columns = []
    for name in names:
        groups: dict[str | None, list[str]] = {}
        for uri, v in values.items():
            groups.setdefault(v.get(name), []).append(uri)
        if len(groups) == 1:
            columns.append(F.lit(next(iter(groups))).cast("string").alias(name))
            continue
        (first_value, first_uris), *other_groups = groups.items()
        column = F.when(F.input_file_name().isin(first_uris), F.lit(first_value).cast("string"))
        for value, uris in other_groups:
            column = column.when(F.input_file_name().isin(uris), F.lit(value).cast("string"))
        unknown = F.raise_error(F.concat(F.lit("read a file that is not in the batch: "), F.input_file_name()))
        columns.append(column.otherwise(unknown).alias(name))
    return columns


def read_csv_files(spark: SparkSession, files: list[str], schema: TableSchema,
                   file_columns: Callable[[str], dict[str, str]] | None = None,
                   date_format: str = DATE_FORMAT, required: tuple[str, ...] = ()) -> DataFrame:
    """Read ``files`` as ``schema``'s table; adds literal ``file_columns(path)`` per file.

    Returns typed schema columns, the literal columns, ``_source_file``, ``_reject_reason``
    (null for good rows), ``_raw_line`` (malformed rows) and ``_raw_<column>`` texts (rejected rows). A blank
    value in a ``required`` column is a reason to reject the row. Empty files are skipped, files that are
    not UTF-8 text are set aside line by line, NUL bytes are removed (see the module docstring). Raises
    IngestError when no file is given or a header lacks a schema column.
    """
    from functools import reduce

    if not files:
        raise IngestError(f"no CSV files given for table {schema.table!r}", table=schema.table)
    groups: dict[tuple[tuple[str, ...], bool, bool], list[str]] = {}
    problems: dict[str, str] = {}
    empty: list[str] = []
    for path in files:
        check = check_file(path)
        if check.empty:
            empty.append(path)
        elif check.problem:
            problems[path] = check.problem
        else:
            key = (tuple(read_header(path)), check.nul_bytes > 0, check.quoted_newlines)
            groups.setdefault(key, []).append(path)
    frames = [_read_csv(spark, paths, list(header), schema, file_columns, date_format, required, strip_nul,
                        multiline) for (header, strip_nul, multiline), paths in groups.items()]
    frames += [_read_lines(spark, path, reason, schema, file_columns) for path, reason in problems.items()]
    if not frames:  # every file was empty: zero rows, with every column
        frames.append(_columns(spark.createDataFrame([], _spark_schema(len(schema.names))), list(schema.names),
                               schema, empty, file_columns, date_format, required))
    return reduce(lambda a, b: a.unionByName(b), frames)


def _spark_schema(fields: int) -> T.StructType:
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f"c{i}", T.StringType()) for i in range(fields)]
                        + [T.StructField(RAW_LINE, T.StringType())])


def _read_csv(spark: SparkSession, paths: list[str], header: list[str], schema: TableSchema,
              file_columns: Callable[[str], dict[str, str]] | None, date_format: str, required: tuple[str, ...],
              strip_nul: bool, multiline: bool = False) -> DataFrame:
    """Files that share one header, parsed by Spark's CSV reader (as multi-line records when ``multiline``:
    each file is then one task, so only files with a quoted line break are read so)."""
    from pyspark.sql import functions as F

    target, options = _read_target(paths)
    if multiline:
        options["multiLine"] = True
    df = spark.read.csv(target, schema=_spark_schema(len(header)), header=True, escape='"', mode="PERMISSIVE",
                        columnNameOfCorruptRecord=RAW_LINE, encoding="UTF-8", **options)
    if strip_nul:
        df = df.select(*[F.translate(f"c{i}", "\0", "").alias(f"c{i}") for i in range(len(header))], RAW_LINE)
    return _columns(df, header, schema, paths, file_columns, date_format, required)


def _columns(df: DataFrame, header: list[str], schema: TableSchema, paths: list[str],
             file_columns: Callable[[str], dict[str, str]] | None, date_format: str,
             required: tuple[str, ...]) -> DataFrame:
    """Typed columns, reasons and raw texts from the string columns ``c0..cN`` read from ``paths`` under ``header``."""
    from pyspark.sql import functions as F

    mapping = _match_columns(paths[0], header, schema)
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
    return df.select(*columns)


def _read_lines(spark: SparkSession, path: str, reason: str, schema: TableSchema,
                file_columns: Callable[[str], dict[str, str]] | None) -> DataFrame:
    """A file that is not UTF-8 text, not parsed: each non-empty line after the header (its first line that
    is not blank, as Spark takes a header) is a rejected row (as Latin-1)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    target, options = _read_target([path])
    # the text source keeps a line's bytes as they are (no decoding); a cast to binary gets them back
    line = F.decode(F.col("value").cast("binary"), "ISO-8859-1")
    lines = spark.read.options(**options).text(target).select(
        line.alias(RAW_LINE), F.monotonically_increasing_id().alias("_n"),
        F.expr("input_file_block_start()").alias("_start"), F.input_file_name().alias(SOURCE_FILE)
    ).where(F.length(RAW_LINE) > 0)
    # the header: the first non-blank line of the block that starts the file (ids rise line by line in a block)
    blank = F.length(F.regexp_replace(RAW_LINE, "[\\x00-\\x20]", "")) == 0
    header = F.min(F.when((F.col("_start") == 0) & ~blank, F.col("_n"))).over(Window.partitionBy(SOURCE_FILE))
    lines = lines.withColumn("_header", header).where(F.col("_header").isNull() | (F.col("_n") != F.col("_header")))
    return lines.select(
        *[F.lit(None).cast(spec.type).alias(spec.name) for spec in schema.columns],
        *_file_literals([path], file_columns),
        F.col(SOURCE_FILE),
        F.col(RAW_LINE),
        F.lit(reason).alias(REASON),
        *[F.lit(None).cast("string").alias(RAW_PREFIX + name) for name in schema.names])
