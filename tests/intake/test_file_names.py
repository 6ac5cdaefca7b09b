"""File names are data, never patterns: every legal name is landed and read as exactly that file."""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import os
import unicodedata

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from oea_core import LandingError
from oea_core.clever import CleverModule
from oea_core.edfi import landing as edfi_landing
from oea_core.edfi.ingest import read_events
from oea_core.errors import IngestError
from oea_core.intake.csv_source import _read_target
from oea_core.intake.spark_paths import file_uri, unreadable_reason
from oea_testing import TEST_SALT

# (name, how input_file_name() spells it, as Spark 3.5 reported it); pairs share a role folder, so a
# pattern would match its neighbour: "2022-01-0?" matches "2022-01-03", "all*" matches everything.
HOSTILE = [
    ("2022-01-0?.csv", "2022-01-0%3F.csv"),
    ("2022-01-03.csv", "2022-01-03.csv"),
    ("all*.csv", "all*.csv"),
    ("report[1].csv", "report%5B1%5D.csv"),
    ("{a,b}.csv", "%7Ba,b%7D.csv"),
    ("a,b.csv", "a,b.csv"),
    ("sp ace.csv", "sp%20ace.csv"),
    (" leading space.csv", "%20leading%20space.csv"),
    ("it's.csv", "it's.csv"),
    ('say "hi".csv', "say%20%22hi%22.csv"),
    ("100%.csv", "100%25.csv"),
    ("a%20b.csv", "a%2520b.csv"),
    ("#1.csv", "%231.csv"),
    ("a+b;c=d&e$f@g!~(h).csv", "a+b;c=d&e$f@g!~(h).csv"),
    ("-dash ^caret ~tilde.csv", "-dash%20%5Ecaret%20~tilde.csv"),
    (unicodedata.normalize("NFC", "café.csv"), "caf\u00e9.csv"),
    (unicodedata.normalize("NFD", "café.csv"), "cafe\u0301.csv"),
    ("名前 😀.csv", "名前%20😀.csv"),
    ("no\u00a0break.csv", "no%C2%A0break.csv"),
    ("new\nline.csv", "new%0Aline.csv"),
    ("tab\tand bell\x07.csv", "tab%09and%20bell%07.csv"),
    ("q?[x]\n*.csv", "q%3F%5Bx%5D%0A*.csv"),
    ("l" * 251 + ".csv", "l" * 251 + ".csv"),  # 255 bytes, the longest name ext4 holds
    ("é" * 125 + ".csv", "é" * 125 + ".csv"),  # 254 bytes
]
ROLES = ("students", "teachers", "staff")
HEADER = ["date", "sis_id", "clever_user_id", "clever_school_id", "school_name", "active", "num_logins",
          "num_resources_accessed"]
LAYOUTS = [HEADER, HEADER[::-1], [c.upper() for c in HEADER[3:]] + ["Extra"] + [c.upper() for c in HEADER[:3]]]


def role_of(index: int) -> str:
    return ROLES[index // 2 % len(ROLES)]


def clever_export(root, batch: str, layouts: list[list[str]]) -> dict[str, str]:
    """Each hostile name under its role folder, two rows each; returns user id -> role."""
    expected = {}
    for i, (name, _uri) in enumerate(HOSTILE):
        header = layouts[i % len(layouts)]
        users = [f"{batch}-u{i}-{k}" for k in range(2)]
        values = [{"date": "2022-01-03", "sis_id": f"s{user}", "clever_user_id": user, "clever_school_id": "sc1",
                   "school_name": "North", "active": "true", "num_logins": str(i), "num_resources_accessed": "1",
                   "extra": "x"} for user in users]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[row[c.lower()] for c in header] for row in values])
        folder = os.path.join(root, "daily-participation", role_of(i))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
        expected |= {user: role_of(i) for user in users}
    return expected


@pytest.mark.parametrize(("name", "uri"), HOSTILE, ids=[ascii(n)[1:30] for n, _ in HOSTILE])
def test_a_hostile_name_lands_as_itself_and_is_given_to_spark_literally(lake, tmp_path, name, uri):
    root = tmp_path / "export"
    clever_export(root, "b1", [HEADER])
    result = CleverModule(lake).land(root, batch_id="b1")
    assert len(result.landed) == len(HOSTILE)
    role = role_of([n for n, _ in HOSTILE].index(name))
    landed = os.path.join(lake.path("stage1np", "clever", "daily-participation", "b1", role), name)
    source = os.path.join(root, "daily-participation", role, name)
    with open(landed, "rb") as copy, open(source, "rb") as original:
        assert copy.read() == original.read()
    assert unreadable_reason(name) is None
    assert file_uri(landed) == file_uri(os.path.dirname(landed)) + "/" + uri
    (given,), _options = _read_target([landed])
    assert hadoop_reading(given) == (landed, "")


def hadoop_reading(path: str) -> tuple[str, str]:
    """The path Hadoop's glob reads (a backslash makes the next character literal), and its live metacharacters."""
    literal, live, chars = [], [], iter(path)
    for char in chars:
        if char == "\\":
            literal.append(next(chars))
        else:
            literal.append(char)
            live += [char] if char in "?*[]{}" else []
    return "".join(literal), "".join(live)


def table_rows(path: str) -> list[dict]:
    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute("SELECT * FROM t").read_all()).to_pylist()


def sha(value: str) -> str:
    return hashlib.sha256((value + TEST_SALT).encode()).hexdigest()


def test_every_hostile_name_is_ingested_once_with_its_own_role(spark, engine, lake, salt, tmp_path):
    """One batch with one header layout, one with three; all hostile names in each, in three role folders."""
    module = CleverModule(lake, spark=spark, salt=salt, engine=engine)
    expected = clever_export(tmp_path / "one", "b1", [HEADER])
    expected |= clever_export(tmp_path / "several", "b2", LAYOUTS)
    module.land(tmp_path / "one", batch_id="b1")
    module.land(tmp_path / "several", batch_id="b2")
    results = {r.table: r for r in module.ingest()}
    assert (results["daily_participation"].rows, results["daily_participation"].rejected) == (len(expected), 0)
    rows = table_rows(lake.table("stage2p", "clever", "daily_participation_pseudo"))
    by_user = {sha(user): role for user, role in expected.items()}
    counts = collections.Counter((r["clever_user_id_pseudonym"], r["role"]) for r in rows)
    assert counts == collections.Counter(by_user.items()), "each row once, with its own file's role"


# landed as "00000-<name>": the longest names are cut to leave room for the prefix
EDFI_NAMES = [name[:-4][:100] + ".json" for name, _ in HOSTILE] + [
    "back\\slash.json", "..daily.json", "_under.json", ".hidden.json"]


def test_every_hostile_edfi_name_is_landed_and_read_as_its_own_file(spark, lake, tmp_path):
    """Ed-Fi lands a file as ``<sequence>-<name>``, so even names Spark hides are read, each exactly once."""
    folder = tmp_path / "export" / "students"
    folder.mkdir(parents=True)
    for i, name in enumerate(EDFI_NAMES):
        (folder / name).write_text(json.dumps({"id": f"r{i}", "studentUniqueId": str(i)}) + "\n", encoding="utf-8")
    result = edfi_landing.land_files(lake, str(tmp_path / "export"), batch_id="b1")
    assert [b.files for b in result.batches] == [len(EDFI_NAMES)] and not result.ignored
    sources = {os.path.basename(f["source_path"]): f["path"]
               for f in edfi_landing.manifest(lake, "ed-fi", "students", "b1")["files"]}
    events = read_events(spark, lake, "ed-fi", "students", ["b1"]).collect()
    got = collections.Counter((e["id"], e["_source_file"]) for e in events)
    base = os.path.relpath(os.path.join(edfi_landing.resource_root(lake, "ed-fi", "students"), "b1"), lake.root)
    assert got == collections.Counter(
        {(f"r{i}", os.path.join(base, sources[name])): 1 for i, name in enumerate(EDFI_NAMES)})


def test_file_uri_spells_every_character_as_hadoop_does(spark):
    path_class = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    chars = [chr(c) for c in range(1, 0x800) if chr(c) not in "/:"] + ["\u2028", "\u3000", "\ufeff", "😀", "\U0001f9ea"]
    for start in range(0, len(chars), 64):
        path = "/tmp/x" + "".join(chars[start:start + 64]) + ".csv"
        assert file_uri(path) == path_class("file://" + path).toUri().toString(), ascii(path)


def test_a_read_of_a_name_spark_would_skip_is_refused_not_empty(lake):
    with pytest.raises(IngestError, match="hidden files") as error:
        _read_target([os.path.join(lake.root, "stage1np", "clever", "x", "b1", "students", "..daily.csv")])
    assert "..daily.csv" in str(error.value)


def test_the_manifest_lists_what_was_copied(lake, tmp_path):
    root = tmp_path / "export"
    clever_export(root, "b1", [HEADER])
    CleverModule(lake).land(root, batch_id="b1")
    batch = lake.path("stage1np", "clever", "daily-participation", "b1")
    with open(os.path.join(batch, "_manifest.json"), encoding="utf-8") as handle:
        files = json.load(handle)["files"]
    for entry in files:
        with open(os.path.join(batch, entry["path"]), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
    assert len(files) == len(HOSTILE)


def test_two_files_landing_at_one_place_are_refused(lake, tmp_path):
    for part, text in (("a", "date\n2022-01-01\n"), ("b", "date\n2022-01-02\n")):
        folder = tmp_path / "export" / part / "daily-participation" / "students"
        folder.mkdir(parents=True)
        (folder / "x.csv").write_text(text)
    with pytest.raises(LandingError, match=r"b/daily-participation/students/x.csv: it would land at "
                                           r"daily-participation/students/x.csv, as a/daily-participation"):
        CleverModule(lake).land(tmp_path / "export")
    assert not os.path.exists(lake.path("stage1np", "clever"))
