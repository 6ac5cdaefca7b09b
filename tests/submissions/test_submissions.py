"""Tarball submissions (oea_core.submissions, `oea submit`, `oea watch`): real tarballs built with tarfile.

The hostile and broken bundles are refused before anything is written, so those tests need no Spark and
run in the quick default subset; the bundles that are accepted land and ingest for real (delta-rs writes,
the session-scoped Spark reads the CSVs), and the cloud inbox is a folder on Azurite.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import adlfs
import pytest
from deltalake import DeltaTable

from oea_core import STAGES, LakePaths, SubmissionError, SubmissionLimits, submit_bundle, watch_inbox
from oea_core.cli import main
from oea_core.errors import IncompleteBundleError
from oea_core.lake.storage import CONNECTION_STRING, resolve_credentials
from oea_core.submissions import LocalInbox, parse_config, read_record, schema_text
from oea_core.submissions.bundle import extract_bundle, inspect_bundle
from oea_testing import digest

REPO = Path(__file__).resolve().parents[2]
CLEVER = REPO / "test_data" / "clever"
EDFI = REPO / "test_data" / "edfi"
SALT = "submissions-test-salt-4b7e0c91"
CLEVER_CONFIG = {"pipeline": "clever_ingress_v1", "options": {"max_reject_share": 0.1}}


# building bundles ------------------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def make_bundle(path: Path, config: dict | bytes | None = None, files: dict[str, bytes] | None = None,
                folder: Path | None = None, extra=None, gz: bool = True) -> Path:
    """A bundle at ``path``: the config (JSON of a dict, or raw bytes), ``files``, ``folder``'s files under their
    relative paths, and ``extra(tar)`` for members tarfile's ``add`` would never write."""
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:
        if config is not None:
            _add(tar, "pipeline-config.json", config if isinstance(config, bytes) else json.dumps(config).encode())
        for name, data in (files or {}).items():
            _add(tar, name, data)
        if folder is not None:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                _add(tar, file.relative_to(folder).as_posix(), file.read_bytes())
        if extra is not None:
            extra(tar)
    return path


CSV = b"date,sis_id,clever_user_id\n2022-01-03,S1,u1\n"


def hostile(kind: str):
    """``(member named in the reason, extra(tar))`` for each kind of hostile member."""
    return {
        "absolute path": ("/etc/cron.d/evil.csv", lambda t: _add(t, "/etc/cron.d/evil.csv", CSV)),
        "dot-dot": ("daily-participation/../../evil.csv",
                    lambda t: _add(t, "daily-participation/../../evil.csv", CSV)),
        "symbolic link": ("students.csv", lambda t: _add(t, "students.csv", type=tarfile.SYMTYPE,
                                                          linkname="/etc/passwd")),
        "hard link": ("copy.csv", lambda t: _add(t, "copy.csv", type=tarfile.LNKTYPE, linkname="/etc/shadow")),
        "character device": ("null", lambda t: _add(t, "null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "block device": ("sda", lambda t: _add(t, "sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
        "FIFO": ("pipe", lambda t: _add(t, "pipe", type=tarfile.FIFOTYPE)),
        "name given twice": ("./a.csv", lambda t: (_add(t, "a.csv", CSV), _add(t, "./a.csv", CSV))),
    }[kind]


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch):
    """The watcher takes a bundle as soon as two polls agree (the settle-time tests set their own)."""
    monkeypatch.setenv("OEA_WATCH_SETTLE", "0")


@pytest.fixture
def salted(monkeypatch):
    monkeypatch.setenv("OEA_SALT", SALT)
    monkeypatch.setenv("OEA_ENGINE", "delta-rs")


def nothing_in_stages(lake: LakePaths) -> None:
    for stage in STAGES:
        assert not os.path.exists(lake.stage_root(stage)), stage
    framework = Path(lake.state_path())
    assert {p.name for p in framework.iterdir()} <= {"submissions", "locks"}


def assert_rejected(lake: LakePaths, bundle: Path, *words: str) -> dict:
    submission = submit_bundle(lake, bundle)
    assert submission.status == "rejected" and not submission.duplicate
    for word in words:
        assert word in submission.reason, (word, submission.reason)
    record = read_record(lake, submission.sha256)
    assert record["status"] == "rejected" and record["reason"] == submission.reason
    assert any("checking it" in line for line in record["log"])  # INFO lines too, whatever the terminal shows
    assert any("rejected" in line for line in record["log"])
    nothing_in_stages(lake)
    return record


# hostile and broken bundles: refused before anything is written ------------------------------------
@pytest.mark.parametrize("kind", ["absolute path", "dot-dot", "symbolic link", "hard link", "character device",
                                  "block device", "FIFO", "name given twice"])
def test_a_hostile_member_is_refused_naming_it_and_nothing_is_written(lake, tmp_path, kind):
    member, extra = hostile(kind)
    bundle = make_bundle(tmp_path / "b.tar.gz", CLEVER_CONFIG, {"daily-participation/x-students.csv": CSV},
                         extra=extra)
    record = assert_rejected(lake, bundle, f"member {member!r}", kind if kind != "dot-dot" else "'..'",
                             "nothing was written")
    assert record["pipeline"] is None  # refused before the config was even looked at


@pytest.mark.parametrize(("config", "words"), [
    (None, ["has no pipeline-config.json"]),
    (b"{\"pipeline\": \"clever_ingress_v1\",,}", ["not valid JSON", "line 1 column 34"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
    ({"pipeline": "sis_ingress_v9"}, ["unknown pipeline 'sis_ingress_v9'", "clever_ingress_v1, edfi_ingress_v1"]),
    ({"options": {}}, ["(the top level): 'pipeline' is a required property"]),
    ({"pipeline": "clever_ingress_v1", "options": {"max_reject_share": 2}},
     ["options.max_reject_share: 2 is greater than the maximum of 1"]),
    ({"pipeline": "clever_ingress_v1", "options": {"max_reject_share": "lots"}},
     ["options.max_reject_share: 'lots' is not of type 'number'"]),
    ({"pipeline": "edfi_ingress_v1", "options": {"max_reject_share": 0.1, "refine_later": True}},
     ["options: unknown option 'refine_later'; allowed: max_reject_share"]),
    ({"pipeline": "clever_ingress_v1", "priority": "high"}, ["unknown field 'priority'"]),
    ([1, 2], ["[1, 2] is not of type 'object'"]),
])
def test_a_missing_or_invalid_config_is_refused_naming_the_field(lake, tmp_path, config, words):
    bundle = make_bundle(tmp_path / "b.tgz", config, {"daily-participation/x-students.csv": CSV})
    assert_rejected(lake, bundle, *words)


def test_the_config_parses_into_a_frozen_object_with_its_options():
    config = parse_config(json.dumps({"pipeline": "edfi_ingress_v1", "options": {"max_reject_share": 0},
                                      "description": "district 7, August"}).encode())
    assert (config.pipeline, dict(config.options), config.description) == (
        "edfi_ingress_v1", {"max_reject_share": 0}, "district 7, August")
    assert parse_config(b'{"pipeline": "clever_ingress_v1"}').options == {}


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("config", [
    deep(100_000),
    b'{"pipeline": "clever_ingress_v1", "options": {"max_reject_share": ' + deep(100_000) + b"}}",
    b'{"pipeline": "clever_ingress_v1", "description": {"a": ' + deep(50) + b"}}",
], ids=["top level", "an option", "the description"])
def test_a_deeply_nested_config_is_refused_as_a_bad_config(lake, tmp_path, config):
    bundle = make_bundle(tmp_path / "b.tgz", config, {"daily-participation/x-students.csv": CSV})
    record = assert_rejected(lake, bundle, "pipeline-config.json of bundle b.tgz nests arrays or objects more than",
                             "deep")
    assert len(record["reason"]) < 400


def test_watch_moves_a_bundle_with_a_deeply_nested_config_to_rejected(lake, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_bundle(inbox / "deep.tgz", deep(100_000))
    summary = watch_inbox(lake, LocalInbox(str(inbox)), limits=SubmissionLimits(), interval=0.05, once=True)
    assert [s.status for s in summary.submissions] == ["rejected"] and summary.left == []
    assert os.listdir(inbox / "rejected") == ["deep.tgz"]


LONG = 900_000


@pytest.mark.parametrize(("config", "words"), [
    ({"pipeline": "clever_ingress_v1", "description": "d" * LONG}, ["description: 'ddd", "is too long"]),
    ({"pipeline": "p" * LONG}, ["pipeline: 'ppp", "is not one of ['clever_ingress_v1', 'edfi_ingress_v1']"]),
    ({"pipeline": "clever_ingress_v1", "options": {"k" * LONG: 1}}, ["options: unknown option 'kkk",
                                                                     "allowed: max_reject_share"]),
    ({"pipeline": "clever_ingress_v1", "options": {"max_reject_share": "s" * LONG}},
     ["options.max_reject_share: 'sss", "is not of type 'number'"]),
    ({"pipeline": "clever_ingress_v1", "options": {"max_reject_share": [1] * 100_000}},
     ["options.max_reject_share: [1, 1", "is not of type 'number'"]),
], ids=["description", "pipeline", "option name", "option value", "a long list"])
def test_a_reason_echoes_only_a_short_prefix_of_a_bad_value(lake, tmp_path, config, words):
    bundle = make_bundle(tmp_path / "b.tgz", config, {"daily-participation/x-students.csv": CSV})
    record = assert_rejected(lake, bundle, *words, "characters)")
    assert len(record["reason"]) < 600, len(record["reason"])
    assert len(json.dumps(record)) < 5000


def test_a_reason_echoes_only_a_short_prefix_of_a_long_member_name(lake, tmp_path):
    name = "daily-participation/" + "n" * 5000 + ".csv"
    bundle = make_bundle(tmp_path / "b.tgz", CLEVER_CONFIG,
                         extra=lambda t: _add(t, name, type=tarfile.SYMTYPE, linkname="/etc/" + "p" * 5000))
    with pytest.raises(SubmissionError, match="a symbolic link") as caught:
        inspect_bundle(str(bundle), SubmissionLimits())
    assert caught.value.member == name and len(str(caught.value)) < 600
    record = assert_rejected(lake, bundle, "member 'daily-participation/nnn", "(5,024 characters)")
    assert len(record["reason"]) < 600


@pytest.mark.parametrize("content", [b"just some text, not a tarball\n" * 50, os.urandom(4096),
                                     gzip.compress(b"plain text in a gzip, no tar inside" * 40)])
def test_a_file_that_is_not_a_tarball_is_refused(lake, tmp_path, content):
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(content)
    assert_rejected(lake, bundle, "is not a readable tarball")


# incomplete bundles: an error that records nothing, and the watcher leaves them where they are -----
NOPE = {"pipeline": "nope_v1"}  # a whole bundle with it is rejected at once, with no Spark


def whole_tar(tmp_path: Path) -> bytes:
    files = {f"daily-participation/2022-01-0{n}-daily-participation-students.csv": CSV * 40 for n in range(1, 6)}
    return make_bundle(tmp_path / "whole.tar", NOPE, files, gz=False).read_bytes()


def cut(whole: bytes, where: str) -> bytes:
    """``whole`` (a plain tar) as a writer leaves it when it pauses ``where``."""
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        members, end = tar.getmembers(), tar.offset  # end: where the two zero blocks begin
    return whole[:{"at a member boundary": members[3].offset, "inside a header": members[3].offset + 100,
                   "inside a member's data": members[2].offset_data + 10, "before its end blocks": end,
                   "after one end block": end + 512, "empty": 0}[where]]


CUTS = ["at a member boundary", "inside a header", "inside a member's data", "before its end blocks",
        "after one end block", "empty"]


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gzip of a cut tar"])
@pytest.mark.parametrize("where", CUTS)
def test_a_bundle_cut_short_looks_incomplete_and_records_nothing(lake, tmp_path, where, gz):
    partial = cut(whole_tar(tmp_path), where)
    bundle = tmp_path / ("b.tgz" if gz else "b.tar")
    bundle.write_bytes(gzip.compress(partial) if gz else partial)
    with pytest.raises(IncompleteBundleError, match=rf"bundle {bundle.name} looks incomplete \(") as caught:
        submit_bundle(lake, bundle)
    assert caught.value.bundle == bundle.name and "nothing was recorded" in str(caught.value)
    assert not os.path.exists(lake.state_path("submissions"))
    assert not os.path.exists(lake.stage_root("stage1np"))


@pytest.mark.parametrize("keep", [0.5, 0.99, -8], ids=["half", "most", "without its gzip trailer"])
def test_a_gzip_stream_cut_short_looks_incomplete(lake, tmp_path, keep):
    whole = gzip.compress(whole_tar(tmp_path))
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(whole[:keep] if isinstance(keep, int) else whole[: int(len(whole) * keep)])
    with pytest.raises(IncompleteBundleError, match="its gzip stream ends early"):
        submit_bundle(lake, bundle)
    assert not os.path.exists(lake.state_path("submissions"))


def test_oea_submit_of_an_incomplete_bundle_is_one_line_and_leaves_the_lake_as_it_was(lake, tmp_path, capsys):
    whole = whole_tar(tmp_path)
    assert submit_bundle(lake, tmp_path / "whole.tar").status == "rejected"  # the lake has something in it
    before = digest(Path(lake.root))
    bundle = tmp_path / "paused.tar"
    bundle.write_bytes(cut(whole, "at a member boundary"))
    assert main(["--lake", str(lake.root), "submit", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "bundle paused.tar looks incomplete" in err and "it may still be being written" in err
    assert len(err.strip().splitlines()) == 1
    assert digest(Path(lake.root)) == before


@pytest.mark.parametrize("flags", ["-cf", "-czf"])
def test_bundles_made_by_gnu_tar_are_complete(tmp_path, flags):
    export = tmp_path / "export"
    (export / "daily-participation").mkdir(parents=True)
    (export / "pipeline-config.json").write_text(json.dumps(NOPE))
    (export / "daily-participation" / "2022-01-03-daily-participation-students.csv").write_bytes(CSV)
    bundle = tmp_path / ("b.tar.gz" if "z" in flags else "b.tar")
    subprocess.run(["tar", flags, str(bundle), "-C", str(export), "."], check=True)
    contents = inspect_bundle(str(bundle), SubmissionLimits())
    assert contents.data_files == ("daily-participation/2022-01-03-daily-participation-students.csv",)


def test_data_after_a_lone_end_block_is_refused_as_broken(lake, tmp_path):
    whole = whole_tar(tmp_path)
    end = len(cut(whole, "before its end blocks"))
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(whole[: end + 512] + b"x" * 512 + whole[end + 1024:])
    assert_rejected(lake, bundle, "not a readable tarball", "a lone zero block")


def test_too_many_members_stops_counting_at_the_limit(lake, tmp_path, monkeypatch):
    monkeypatch.setenv("OEA_SUBMISSION_MAX_MEMBERS", "50")
    files = {f"daily-participation/{n:05d}-students.csv": b"" for n in range(5000)}
    bundle = make_bundle(tmp_path / "many.tar.gz", CLEVER_CONFIG, files)
    started = time.monotonic()
    record = assert_rejected(lake, bundle, "more than 50 members (stopped counting)", "00049-students.csv",
                             "OEA_SUBMISSION_MAX_MEMBERS")
    assert time.monotonic() - started < 2
    assert record["limits"] == {"max_members": 50, "max_bytes": 1 << 30}
    monkeypatch.setenv("OEA_SUBMISSION_MAX_MEMBERS", "6000")  # the limit is the setting's: now only the bytes
    assert inspect_bundle(str(bundle), SubmissionLimits.from_settings()).members == 5001


def test_a_decompression_bomb_is_refused_from_its_declared_size_without_unpacking_it(lake, tmp_path, monkeypatch):
    monkeypatch.setenv("OEA_SUBMISSION_MAX_BYTES", "1_000_000")
    bundle = make_bundle(tmp_path / "bomb.tar.gz", CLEVER_CONFIG,
                         {"daily-participation/ok-students.csv": CSV,
                          "daily-participation/zeros-students.csv": bytes(50_000_000)})
    assert bundle.stat().st_size < 200_000
    started = time.monotonic()
    assert_rejected(lake, bundle, "member 'daily-participation/zeros-students.csv'",
                    "unpacks to more than 1,000,000 bytes", "OEA_SUBMISSION_MAX_BYTES")
    assert time.monotonic() - started < 2


def test_the_unpacked_stream_itself_is_capped_whatever_the_headers_declare(lake, tmp_path):
    """Zeros after the end-of-archive blocks are in no header at all; the stream's cap still stops the read."""
    whole = whole_tar(tmp_path)
    bundle = tmp_path / "padded.tar.gz"
    with gzip.open(bundle, "wb") as out:
        out.write(whole)
        for _ in range(4):
            out.write(bytes(1 << 20))
    with pytest.raises(SubmissionError, match="the tar stream went on past"):
        inspect_bundle(str(bundle), SubmissionLimits(max_members=6, max_bytes=20_000))
    assert inspect_bundle(str(bundle), SubmissionLimits()).members == 6


# extended headers (pax, GNU long names) count against the limits, and are refused before they are read
def extended_header(kind: bytes, declared: int, name: str = "././@PaxHeader") -> bytes:
    """One header block of an extended header (``x``/``g`` pax, ``L`` GNU long name) declaring ``declared`` bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, declared, 1_700_000_000
    return info.tobuf(format=tarfile.GNU_FORMAT if kind == tarfile.GNUTYPE_LONGNAME else tarfile.USTAR_FORMAT)


@pytest.mark.parametrize(("kind", "what"), [(tarfile.XHDTYPE, "a pax extended header"),
                                            (tarfile.XGLTYPE, "a pax global header"),
                                            (tarfile.GNUTYPE_LONGNAME, "a GNU long name")])
def test_a_huge_extended_header_is_refused_before_it_is_read(tmp_path, kind, what):
    """A 1 GB declared header over 20 MB of zeros (a 20 KB file): refused on its header, in little memory."""
    bundle = tmp_path / "pax-bomb.tar.gz"
    with gzip.open(bundle, "wb") as out:
        out.write(extended_header(kind, 1_000_000_000))
        for _ in range(20):
            out.write(bytes(1 << 20))
    assert bundle.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match=rf"{what} of 1,000,000,000 bytes.*refused before reading it"):
            inspect_bundle(str(bundle), SubmissionLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak


def test_extended_headers_count_against_the_byte_limit(lake, tmp_path, monkeypatch):
    def commented(tar):
        info = tarfile.TarInfo("daily-participation/x-students.csv")
        info.pax_headers = {"comment": "x" * 300_000}
        info.size = len(CSV)
        tar.addfile(info, io.BytesIO(CSV))

    bundle = make_bundle(tmp_path / "pax.tar.gz", CLEVER_CONFIG, extra=commented)
    contents = inspect_bundle(str(bundle), SubmissionLimits())
    assert contents.unpacked_bytes > 300_000  # the pax header's bytes are counted
    monkeypatch.setenv("OEA_SUBMISSION_MAX_BYTES", "200_000")
    assert_rejected(lake, bundle, "a pax extended header of 300,", "more than 200,000 bytes",
                    "OEA_SUBMISSION_MAX_BYTES")


def test_a_chain_of_extended_headers_is_refused_not_a_recursion_error(lake, tmp_path):
    bundle = tmp_path / "chain.tar"
    record = b"5 a=\n"  # one pax record: "<length> <key>=<value>\n"
    block = extended_header(tarfile.XGLTYPE, len(record)) + record.ljust(512, b"\0")
    bundle.write_bytes(block * 5000 + bytes(1024))
    assert_rejected(lake, bundle, "extended headers in a row")


def test_the_limits_come_from_arguments_then_settings_then_defaults(monkeypatch):
    assert SubmissionLimits.from_settings() == SubmissionLimits(10_000, 1 << 30)
    monkeypatch.setenv("OEA_SUBMISSION_MAX_BYTES", "2048")
    assert SubmissionLimits.from_settings(max_members=3) == SubmissionLimits(3, 2048)
    monkeypatch.setenv("OEA_SUBMISSION_MAX_MEMBERS", "many")
    with pytest.raises(SubmissionError, match=r"OEA_SUBMISSION_MAX_MEMBERS='many' is not a whole number"):
        SubmissionLimits.from_settings()
    with pytest.raises(SubmissionError, match="max bytes is 0"):
        SubmissionLimits.from_settings(max_members=1, max_bytes=0)


def test_cli_limits_override_the_settings(lake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OEA_SUBMISSION_MAX_BYTES", "100000000")
    bundle = make_bundle(tmp_path / "b.tar", CLEVER_CONFIG, {"daily-participation/x-students.csv": bytes(5000)},
                         gz=False)
    assert main(["--lake", str(lake.root), "submit", str(bundle), "--max-bytes", "4000"]) == 1
    out = capsys.readouterr().out
    assert "rejected: bundle b.tar refused" in out and "more than 4,000 bytes" in out
    assert bundle.exists()  # `oea submit` leaves the file where it is


def test_resubmitting_a_recorded_bundle_is_a_no_op_that_says_so(lake, tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b.tar.gz", {"pipeline": "nope_v1"})
    first = submit_bundle(lake, bundle)
    record = Path(first.record)
    before = record.read_bytes(), record.stat().st_mtime_ns
    copy = tmp_path / "same-bytes-other-name.tar.gz"
    copy.write_bytes(bundle.read_bytes())
    again = submit_bundle(lake, copy)
    assert again.duplicate and again.status == "rejected" and again.reason == first.reason
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before
    assert main(["--lake", str(lake.root), "submit", str(bundle)]) == 1
    assert "already submitted (rejected: unknown pipeline 'nope_v1'" in capsys.readouterr().out


def test_the_shipped_schema_is_the_registry_s_and_submit_prints_it(capsys):
    assert (REPO / "schemas" / "pipeline-config.schema.json").read_text(encoding="utf-8") == schema_text()
    assert main(["submit", "--print-schema"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["pipeline"]["enum"] == [
        "clever_ingress_v1", "edfi_ingress_v1"]


def test_the_docs_name_every_pipeline_and_setting():
    text = (REPO / "docs" / "pipeline-config.md").read_text(encoding="utf-8")
    for word in ("clever_ingress_v1", "edfi_ingress_v1", "max_reject_share", "OEA_SUBMISSION_MAX_MEMBERS",
                 "OEA_SUBMISSION_MAX_BYTES", "OEA_WATCH_SETTLE", "processed/", "rejected/", "oea-framework/submissions"):
        assert word in text, word


# the watcher -----------------------------------------------------------------------------------
def _wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_watcher_takes_a_bundle_dropped_while_it_runs_once_it_is_whole(lake, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_inbox, args=(lake, LocalInbox(str(inbox))),
                               kwargs={"limits": SubmissionLimits(), "interval": 0.1, "stop": stop})
    watcher.start()
    try:
        built = make_bundle(tmp_path / "link.tar.gz", CLEVER_CONFIG, extra=hostile("symbolic link")[1])
        (inbox / "notes.txt").write_text("not a bundle")
        (inbox / "link.tar.gz.part").write_bytes(built.read_bytes()[:100])  # still being copied: left alone
        time.sleep(0.5)
        assert sorted(os.listdir(inbox)) == ["link.tar.gz.part", "notes.txt"]
        os.replace(inbox / "link.tar.gz.part", inbox / "link.tar.gz")  # a partial file under the final name
        time.sleep(0.03)
        with open(inbox / "link.tar.gz", "wb") as handle:  # ... then completed
            handle.write(built.read_bytes())
        _wait_for(lambda: (inbox / "rejected" / "link.tar.gz").exists())
        # the same bytes again, under another name: not processed again, moved beside the first
        (inbox / "again.tgz").write_bytes(built.read_bytes())
        _wait_for(lambda: not (inbox / "again.tgz").exists())
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()
    assert sorted(os.listdir(inbox / "rejected")) == ["again.tgz", "link.tar.gz"]
    assert sorted(os.listdir(inbox)) == ["notes.txt", "rejected"]
    records = list(Path(lake.state_path("submissions")).glob("*.json"))
    assert len(records) == 1  # the partial file was never taken: only the whole bundle has a record
    assert "member 'students.csv': a symbolic link" in json.loads(records[0].read_text())["reason"]
    nothing_in_stages(lake)


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tgz"])
def test_watch_leaves_an_incomplete_bundle_in_the_inbox_and_takes_it_once_complete(lake, tmp_path, gz):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    whole = whole_tar(tmp_path)
    name = "b.tgz" if gz else "b.tar"
    final = gzip.compress(whole) if gz else whole
    (inbox / name).write_bytes(final[: len(final) // 2] if gz else cut(whole, "at a member boundary"))
    first = watch_inbox(lake, LocalInbox(str(inbox)), limits=SubmissionLimits(), interval=0.05, once=True)
    assert first.submissions == [] and first.left == [name]
    assert os.listdir(inbox) == [name] and not os.path.exists(lake.state_path("submissions"))
    (inbox / name).write_bytes(final)
    second = watch_inbox(lake, LocalInbox(str(inbox)), limits=SubmissionLimits(), interval=0.05, once=True)
    assert [s.status for s in second.submissions] == ["rejected"] and second.left == []
    assert os.listdir(inbox / "rejected") == [name]
    assert "unknown pipeline 'nope_v1'" in second.submissions[0].reason


def test_a_running_watcher_tries_an_incomplete_bundle_again_only_once_it_changes(lake, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="oea")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    whole = whole_tar(tmp_path)
    (inbox / "b.tar").write_bytes(cut(whole, "inside a member's data"))
    stop = threading.Event()
    watcher = threading.Thread(target=watch_inbox, args=(lake, LocalInbox(str(inbox))),
                               kwargs={"limits": SubmissionLimits(), "interval": 0.02, "stop": stop})
    watcher.start()
    try:
        _wait_for(lambda: "looks incomplete" in caplog.text)
        time.sleep(0.3)  # many polls
        assert caplog.text.count("looks incomplete") == 1
        (inbox / "b.tar").write_bytes(whole)
        _wait_for(lambda: (inbox / "rejected" / "b.tar").exists())
    finally:
        stop.set()
        watcher.join(10)
    assert len(list(Path(lake.state_path("submissions")).glob("*.json"))) == 1


def test_watch_takes_a_bundle_only_once_it_was_still_for_the_settle_time(lake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OEA_WATCH_SETTLE", "3600")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.tar").write_bytes(whole_tar(tmp_path))
    assert main(["--lake", str(lake.root), "watch", str(inbox), "--once", "--interval", "0.05"]) == 1
    assert "1 left for a later run: b.tar" in capsys.readouterr().out
    assert os.listdir(inbox) == ["b.tar"] and not os.path.exists(lake.state_path("submissions"))
    written = time.time() - 7200  # last written two hours ago: still for longer than the settle time
    os.utime(inbox / "b.tar", (written, written))
    assert main(["--lake", str(lake.root), "watch", str(inbox), "--once", "--interval", "0.05"]) == 0
    assert os.listdir(inbox / "rejected") == ["b.tar"]


def test_the_settle_time_comes_from_the_argument_then_the_setting_then_the_default(lake, tmp_path, monkeypatch,
                                                                                   capsys):
    from oea_core.submissions.inbox import DEFAULT_SETTLE, settle_seconds
    monkeypatch.delenv("OEA_WATCH_SETTLE")
    assert settle_seconds() == DEFAULT_SETTLE == 30
    assert settle_seconds({"OEA_WATCH_SETTLE": "2.5"}) == 2.5
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.tar").write_bytes(whole_tar(tmp_path))
    summary = watch_inbox(lake, LocalInbox(str(inbox)), limits=SubmissionLimits(), interval=0.05, once=True)
    assert summary.left == ["b.tar"]  # the default: a file written just now waits
    assert watch_inbox(lake, LocalInbox(str(inbox)), limits=SubmissionLimits(), interval=0.05, once=True,
                       settle=0).submissions[0].status == "rejected"
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("OEA_WATCH_SETTLE", bad)
        assert main(["--lake", str(lake.root), "watch", str(inbox), "--once"]) == 1
        err = capsys.readouterr().err
        assert f"OEA_WATCH_SETTLE={bad!r} is not a number of seconds of 0 or more" in err


def test_watch_once_on_an_empty_or_missing_inbox(lake, tmp_path, capsys):
    (tmp_path / "inbox").mkdir()
    assert main(["--lake", str(lake.root), "watch", str(tmp_path / "inbox"), "--once", "--interval", "0.1"]) == 0
    assert "no bundles" in capsys.readouterr().out
    assert main(["--lake", str(lake.root), "watch", str(tmp_path / "nowhere"), "--once"]) == 1
    assert "is not a folder: create it" in capsys.readouterr().err


# accepted bundles: real land and ingest ------------------------------------------------------------
def rows(lake: LakePaths, stage: str, source: str, table: str) -> int:
    return DeltaTable(lake.table(stage, source, table)).to_pyarrow_table().num_rows


@pytest.mark.usefixtures("spark", "salted")
def test_a_clever_bundle_lands_and_ingests_once_through_submit(lake, tmp_path, capsys):
    bundle = make_bundle(tmp_path / "clever-2022-01.tar.gz", CLEVER_CONFIG, folder=CLEVER)
    assert main(["--lake", str(lake.root), "submit", str(bundle)]) == 0
    out = capsys.readouterr().out
    submission_sha = read_record(lake, Path(out.split("Record: ")[1].strip()).stem)
    assert "accepted by clever_ingress_v1 as batch sub-" in out
    assert rows(lake, "stage2p", "clever", "daily_participation_pseudo") > 0
    assert rows(lake, "stage2p", "clever", "resource_usage_pseudo") > 0
    batch = submission_sha["batch_id"]
    assert os.path.isdir(lake.path("stage1np", "clever", "daily-participation", batch))
    assert submission_sha["status"] == "accepted" and submission_sha["options"] == {"max_reject_share": 0.1}
    assert any(line.startswith("clever land: landed 18 files as batch " + batch) for line in submission_sha["summaries"])
    assert any("clever ingest with the delta-rs Delta engine" in line for line in submission_sha["log"])
    before = digest(Path(lake.root))
    assert main(["--lake", str(lake.root), "submit", str(bundle)]) == 0
    assert "already submitted (accepted); nothing done" in capsys.readouterr().out
    assert digest(Path(lake.root)) == before


@pytest.mark.usefixtures("spark", "salted")
def test_an_edfi_bundle_lands_ingests_and_refines(lake, tmp_path):
    files = {p.relative_to(EDFI).as_posix(): p.read_bytes() for resource in ("students", "schools")
             for p in sorted((EDFI / resource).rglob("*.json"))}  # two resources: the pipeline, not every table
    bundle = make_bundle(tmp_path / "edfi.tar.gz", {"pipeline": "edfi_ingress_v1"}, files)
    submission = submit_bundle(lake, bundle)
    assert submission.status == "accepted", submission.reason
    assert rows(lake, "stage2p", "edfi", "students") > 0
    assert rows(lake, "stage2np", "edfi", "students") > 0
    landed = os.listdir(lake.path("stage1np", "edfi", "ed-fi", "students"))
    assert all(name.startswith(submission.batch_id + "_") for name in landed)  # one batch per rundate
    assert not any(name.startswith("pipeline-config") for name in os.listdir(lake.path("stage1np", "edfi", "ed-fi")))


@pytest.mark.usefixtures("spark", "salted")
def test_watch_once_moves_accepted_and_rejected_bundles(lake, tmp_path, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_bundle(inbox / "a-good.tar.gz", CLEVER_CONFIG, folder=CLEVER)
    bad_rows = (b"date,sis_id,clever_user_id,clever_school_id,school_name,active,num_logins,num_resources_accessed\n"
                + b"".join(b"not-a-date,S%d,u%d,s1,Lincoln,true,1,1\n" % (n, n) for n in range(10)))
    make_bundle(inbox / "b-bad-rows.tar", {"pipeline": "clever_ingress_v1", "options": {"max_reject_share": 0}},
                {"daily-participation/2022-02-01-daily-participation-students.csv": bad_rows}, gz=False)
    make_bundle(inbox / "c-device.tgz", CLEVER_CONFIG, extra=hostile("character device")[1])
    assert main(["--lake", str(lake.root), "watch", str(inbox), "--once", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "1 accepted, 2 rejected" in out
    assert os.listdir(inbox / "processed") == ["a-good.tar.gz"]
    assert sorted(os.listdir(inbox / "rejected")) == ["b-bad-rows.tar", "c-device.tgz"]
    reasons = {r["bundle"]: r["reason"] for r in map(json.loads, map(
        Path.read_text, Path(lake.state_path("submissions")).glob("*.json")))}
    assert reasons["a-good.tar.gz"] is None
    assert "daily_participation batch sub-" in reasons["b-bad-rows.tar"]
    assert "10 of 10 rows" in reasons["b-bad-rows.tar"]
    assert "member 'null': a character device" in reasons["c-device.tgz"]


# a cloud inbox, and a cloud lake's records, on Azurite ---------------------------------------------
@pytest.fixture
def account(azurite, monkeypatch):
    """Azurite's account through its connection string, with an empty ``inbox`` container."""
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    fs = adlfs.AzureBlobFileSystem(**resolve_credentials("devstoreaccount1").adlfs_kwargs())
    for container in ("inbox", "oea-framework"):
        if fs.exists(container):
            fs.rm(container, recursive=True)
    fs.mkdir("inbox")
    fs.invalidate_cache()
    return fs


def blobs(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.split("/", 1)[1] for p in fs.find(prefix))


def test_watch_once_takes_bundles_from_a_folder_on_the_account(account, lake, tmp_path, capsys):
    url = "abfss://inbox@devstoreaccount1.dfs.core.windows.net/drop"
    bundle = make_bundle(tmp_path / "fifo.tar.gz", CLEVER_CONFIG, extra=hostile("FIFO")[1])
    account.put_file(str(bundle), "inbox/drop/fifo.tar.gz")
    account.put_file(str(make_bundle(tmp_path / "x.tgz", {"pipeline": "sis_v1"})), "inbox/drop/x.tgz")
    account.pipe_file("inbox/drop/notes.txt", b"not a bundle")
    account.pipe_file("inbox/drop/rejected/fifo.tar.gz", b"an older bundle of that name")
    assert main(["--lake", str(lake.root), "watch", url, "--once", "--interval", "0.1"]) == 0
    assert "2 rejected" in capsys.readouterr().out
    moved = blobs(account, "inbox/drop")
    assert "drop/notes.txt" in moved and "drop/rejected/x.tgz" in moved and "drop/rejected/fifo.tar.gz" in moved
    assert [p for p in moved if p.endswith("-fifo.tar.gz")]  # the name was taken: a time prefix
    assert not [p for p in moved if p.count("/") == 1 and p.endswith((".tgz", ".tar.gz"))]
    reasons = sorted(r["reason"] for r in map(json.loads, map(
        Path.read_text, Path(lake.state_path("submissions")).glob("*.json"))))
    assert "member 'pipe': a FIFO" in reasons[0] and "unknown pipeline 'sis_v1'" in reasons[1]
    nothing_in_stages(lake)


def test_a_cloud_lake_keeps_its_submission_records_in_the_account(account, tmp_path, capsys, monkeypatch):
    lake_url = "abfss://stage1np@devstoreaccount1.dfs.core.windows.net"
    bundle = make_bundle(tmp_path / "b.tar.gz", CLEVER_CONFIG, extra=hostile("absolute path")[1])
    stages = {stage: blobs(account, stage) if account.exists(stage) else [] for stage in STAGES}  # other tests'
    assert main(["--lake", lake_url, "submit", str(bundle)]) == 1
    assert "member '/etc/cron.d/evil.csv': an absolute path" in capsys.readouterr().out
    records = [p for p in blobs(account, "oea-framework") if p.startswith("submissions/")]
    assert len(records) == 1
    record = json.loads(account.cat_file(f"oea-framework/{records[0]}"))
    assert record["status"] == "rejected"
    assert {stage: blobs(account, stage) if account.exists(stage) else [] for stage in STAGES} == stages
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / "second-machine"))  # an empty working copy: pulled first
    assert main(["--lake", lake_url, "submit", str(bundle)]) == 1
    assert "already submitted (rejected" in capsys.readouterr().out


# the lock, and Ctrl-C --------------------------------------------------------------------------------
def _oea_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "oea_core.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_bundle_is_left_in_the_inbox_while_another_run_holds_the_submissions_lock(lake, tmp_path, capsys,
                                                                                   caplog):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_bundle(inbox / "b.tar.gz", {"pipeline": "sis_v1"})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from oea_core import LakePaths; from oea_core.lake.lock import lake_lock\n"
        f"with lake_lock(LakePaths.from_setting({str(lake.root)!r}), 'submissions', 'watch elsewhere'):\n"
        "    print('held', flush=True); time.sleep(60)")], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--lake", str(lake.root), "watch", str(inbox), "--once", "--interval", "0.1"]) == 1
        assert "1 left for a later run: b.tar.gz" in capsys.readouterr().out
        assert "watch elsewhere already running since" in caplog.text
        assert os.listdir(inbox) == ["b.tar.gz"] and not os.path.exists(lake.state_path("submissions"))
    finally:
        holder.kill()
        holder.wait()
    assert main(["--lake", str(lake.root), "watch", str(inbox), "--once", "--interval", "0.1"]) == 0
    assert os.listdir(inbox / "rejected") == ["b.tar.gz"]


def test_ctrl_c_stops_a_running_watcher_cleanly(lake, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = _oea_process("--lake", str(lake.root), "watch", str(inbox), "--interval", "0.1")
    try:
        assert "watching" in watcher.stderr.readline()
        make_bundle(tmp_path / "dev.tar", CLEVER_CONFIG, extra=hostile("block device")[1], gz=False)
        os.replace(tmp_path / "dev.tar", inbox / "dev.tar")
        _wait_for(lambda: (inbox / "rejected" / "dev.tar").exists())
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    assert "stopped (Ctrl-C)" in err and "1 rejected" in out


def test_extraction_gives_private_modes_and_refuses_a_name_the_file_system_cannot_hold(tmp_path):
    def odd_modes(tar):
        _add(tar, "locked", type=tarfile.DIRTYPE, mode=0o000)
        _add(tar, "locked/daily-participation-students.csv", CSV, mode=0o4777)

    bundle = make_bundle(tmp_path / "modes.tar", CLEVER_CONFIG, extra=odd_modes, gz=False)
    dest = tmp_path / "out"
    dest.mkdir()
    extract_bundle(str(bundle), str(dest), SubmissionLimits())
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "locked", "locked/daily-participation-students.csv"]  # the config is not among the data files
    assert (dest / "locked").stat().st_mode & 0o7777 == 0o700
    assert (dest / "locked" / "daily-participation-students.csv").stat().st_mode & 0o7777 == 0o600
    long_name = "x" * 300 + ".csv"
    bundle = make_bundle(tmp_path / "long.tar", CLEVER_CONFIG, {long_name: CSV}, gz=False)
    with pytest.raises(SubmissionError, match=r"cannot be extracted \(File name too long\)") as caught:
        extract_bundle(str(bundle), str(tmp_path / "out"), SubmissionLimits())
    assert caught.value.member == long_name


@pytest.mark.parametrize(("args", "message"), [
    (["submit"], "oea submit needs a BUNDLE (.tar or .tar.gz), or --print-schema"),
    (["submit", "no-such.tar.gz"], "no-such.tar.gz is not a file"),
    (["watch", "abfss://inbox/drop", "--once"], "inbox 'abfss://inbox/drop' is not of the form abfss://"),
    (["submit", "x.tar", "--max-members", "0"], "submission max members is 0"),
])
def test_cli_usage_errors_are_one_line(lake, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.tar").write_bytes(b"")
    assert main(["--lake", str(lake.root), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
