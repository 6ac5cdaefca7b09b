"""Landing an export folder into stage1np exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
from pathlib import Path

import pytest

from oea_core import LandingError
from oea_core.clever import CleverModule
from oea_core.edfi import landing as edfi_landing
from oea_core.intake.landing import MANIFEST, land_folder, list_batches
from oea_core.intake.spark_paths import shown


def export(tmp_path, files: dict[str, str]) -> str:
    root = tmp_path / "export"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


DAILY = "date,sis_id,clever_user_id\n2022-01-09,s1,u1\n"


def test_land_copies_files_by_report_and_role_with_a_manifest(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/2022-01-09-daily-participation-students.csv": DAILY,
                            "daily-participation/2022-01-09-daily-participation-teachers.csv": DAILY + "x\n",
                            "resource-usage/staff/usage.csv": "date\n", "notes.txt": "not data"})
    result = CleverModule(lake).land(src, batch_id="b1")
    assert result.batch_id == "b1" and len(result.landed) == 3
    assert result.ignored == ("notes.txt",)
    base = lake.path("stage1np", "clever")
    assert os.path.exists(os.path.join(base, "daily-participation", "b1", "students",
                                       "2022-01-09-daily-participation-students.csv"))
    assert os.path.exists(os.path.join(base, "daily-participation", "b1", "teachers",
                                       "2022-01-09-daily-participation-teachers.csv"))
    assert os.path.exists(os.path.join(base, "resource-usage", "b1", "staff", "usage.csv"))
    with open(os.path.join(base, "daily-participation", "b1", MANIFEST)) as fh:
        manifest = json.load(fh)
    assert {f["path"] for f in manifest["files"]} == {
        "students/2022-01-09-daily-participation-students.csv",
        "teachers/2022-01-09-daily-participation-teachers.csv"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])


def test_landing_the_same_bytes_again_is_a_no_op(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students.csv": DAILY})
    module = CleverModule(lake)
    first = module.land(src)
    again = module.land(src)
    assert first.batch_id and again.batch_id is None and again.already_landed == ("daily-participation/students.csv",)
    renamed = export(tmp_path / "other", {"daily-participation/copy-students.csv": DAILY})
    assert module.land(renamed).batch_id is None, "same SHA-256 under another name is the same file"
    assert list_batches(lake, "clever", "daily-participation") == [first.batch_id]


def test_only_new_files_make_a_new_batch(lake, tmp_path):
    module = CleverModule(lake)
    module.land(export(tmp_path, {"daily-participation/students.csv": DAILY}), batch_id="b1")
    result = module.land(export(tmp_path / "2", {"daily-participation/students.csv": DAILY,
                                                 "daily-participation/staff.csv": DAILY + "y\n"}), batch_id="b2")
    assert [f.relative_path for f in result.landed] == ["daily-participation/b2/staff/staff.csv"]


def test_a_file_without_a_role_is_refused_before_anything_lands(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/report.csv": DAILY})
    with pytest.raises(LandingError, match="cannot tell the role of daily-participation/report.csv"):
        CleverModule(lake).land(src)
    assert not os.path.exists(lake.path("stage1np", "clever"))


def test_missing_or_empty_source_folder(lake, tmp_path):
    with pytest.raises(LandingError, match="does not exist"):
        CleverModule(lake).land(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LandingError, match="no clever files found"):
        CleverModule(lake).land(tmp_path / "empty")


def test_bad_batch_id_is_refused(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students.csv": DAILY})
    with pytest.raises(Exception, match="batch id '../x' is not a valid lake name"):
        CleverModule(lake).land(src, batch_id="../x")


# landing reads only the export -------------------------------------------------------------------
@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail instead of hanging (opening a FIFO for reading blocks until someone writes to it)."""
    def expired(signum, frame):
        raise TimeoutError(f"landing still running after {seconds} s: it opened a FIFO or a device")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make_entry(kind: str, path: Path, outside: Path) -> None:
    """Put a non-regular entry of ``kind`` at ``path`` (``outside`` is a folder beside the export)."""
    (outside / "elsewhere.csv").write_text(DAILY + "2022-01-10,secret,u9\n")
    (outside / "elsewhere.json").write_text('{"id": "secret"}\n')
    if kind == "link to /etc/passwd":
        path.symlink_to("/etc/passwd")
    elif kind == "link to a file outside":
        path.symlink_to(outside / ("elsewhere" + path.suffix))
    elif kind == "link to a file inside":
        path.symlink_to(path.parent.parent / "inside.data")
    elif kind == "link to a folder outside":
        path.with_suffix("").symlink_to(outside, target_is_directory=True)
    elif kind == "link to a folder inside":
        path.with_suffix("").symlink_to(path.parent.parent, target_is_directory=True)
    elif kind == "broken link":
        path.symlink_to(outside / "missing.csv")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(path.parent)  # a socket path is limited to ~108 bytes
        try:
            server.bind(path.name)
        finally:
            os.chdir(cwd)
        server.close()
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        except PermissionError:
            pytest.skip("creating a device file needs CAP_MKNOD, which this user lacks")


KINDS = ["link to /etc/passwd", "link to a file outside", "link to a file inside", "link to a folder outside",
         "link to a folder inside", "broken link", "FIFO", "socket", "device"]
SHOWN = {"FIFO": "a FIFO", "socket": "a socket", "device": "a character device"}


@pytest.mark.parametrize("kind", KINDS)
def test_links_and_special_files_in_a_clever_export_are_refused_and_nothing_lands(lake, tmp_path, kind):
    src = export(tmp_path, {"daily-participation/students/good.csv": DAILY, "daily-participation/inside.data": DAILY})
    outside = tmp_path / "outside"
    outside.mkdir()
    entry = Path(src) / "daily-participation" / "students" / "odd.csv"
    make_entry(kind, entry, outside)
    shown = "daily-participation/students/odd" + ("" if "folder" in kind else ".csv")
    with deadline(), pytest.raises(LandingError, match=f"{shown}: {SHOWN.get(kind, 'a symbolic link')}"):
        CleverModule(lake).land(src)
    assert not os.path.exists(lake.path("stage1np", "clever")), "nothing was landed"


@pytest.mark.parametrize("kind", KINDS)
def test_links_and_special_files_in_an_edfi_export_are_refused_and_nothing_lands(lake, tmp_path, kind):
    src = export(tmp_path, {"students/good.json": '{"id": "a"}\n', "inside.data": '{"id": "b"}\n'})
    outside = tmp_path / "outside"
    outside.mkdir()
    entry = Path(src) / "students" / "odd.json"
    make_entry(kind, entry, outside)
    shown = "students/odd" + ("" if "folder" in kind else ".json")
    with deadline(), pytest.raises(LandingError, match=f"{shown}: {SHOWN.get(kind, 'a symbolic link')}"):
        edfi_landing.land_files(lake, src)
    assert not os.path.exists(lake.path("stage1np", "edfi")), "nothing was landed"


UNREADABLE = [("..daily.csv", "hidden files"), (".hidden.csv", "hidden files"), ("_under.csv", "hidden files"),
              ("at 10:00.csv", "URI scheme"), (os.fsdecode(b"latin-1 caf\xe9.csv"), "not valid UTF-8")]


@pytest.mark.parametrize(("name", "reason"), UNREADABLE, ids=[ascii(n) for n, _ in UNREADABLE])
def test_a_name_spark_would_not_read_is_refused_at_land_with_the_reason(lake, tmp_path, name, reason):
    src = export(tmp_path, {"daily-participation/students/good.csv": DAILY})
    with open(os.path.join(os.fsencode(src), b"daily-participation", b"students", os.fsencode(name)), "w") as fh:
        fh.write(DAILY + "2022-01-10,s2,u2\n")
    with pytest.raises(LandingError, match=f"{re.escape(shown(os.path.join('daily-participation/students', name)))}"
                                           f": .*{reason}"):
        CleverModule(lake).land(src)
    assert not os.path.exists(lake.path("stage1np", "clever"))


@pytest.mark.parametrize(("name", "reason"), [("at 10:00.json", "URI scheme"),
                                              (os.fsdecode(b"caf\xe9.json"), "not valid UTF-8"),
                                              ("x" * 250 + ".json", "longer than 255 bytes")])
def test_an_edfi_name_that_cannot_be_landed_or_read_is_refused(lake, tmp_path, name, reason):
    src = export(tmp_path, {"students/good.json": '{"id": "a"}\n'})
    with open(os.path.join(os.fsencode(src), b"students", os.fsencode(name)), "w") as fh:
        fh.write('{"id": "b"}\n')
    with pytest.raises(LandingError, match=reason):
        edfi_landing.land_files(lake, src)
    assert not os.path.exists(lake.path("stage1np", "edfi"))


def test_every_refused_entry_is_listed_in_one_error(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students/good.csv": DAILY})
    folder = Path(src) / "daily-participation" / "students"
    (folder / "passwd.csv").symlink_to("/etc/passwd")
    os.mkfifo(folder / "pipe.csv")
    (folder / "_summary.csv").write_text(DAILY)
    with deadline(), pytest.raises(LandingError) as error:
        CleverModule(lake).land(src)
    message = str(error.value)
    assert message.startswith("3 entries of the export") and "nothing was landed" in message
    for part in ("students/passwd.csv: a symbolic link", "students/pipe.csv: a FIFO", "students/_summary.csv: Spark"):
        assert part in message
    assert "\n" not in message


def test_a_file_swapped_for_a_link_during_landing_is_not_followed(lake, tmp_path):
    """The file is checked when scanned, and again once opened (O_NOFOLLOW, same inode)."""
    src = export(tmp_path, {"daily-participation/students/good.csv": DAILY})
    target = os.path.join(src, "daily-participation", "students", "good.csv")

    def classify_and_swap(relative):
        os.replace(target, target + ".old")
        os.symlink("/etc/passwd", target)
        return "daily-participation", "students/good.csv"

    with pytest.raises(LandingError, match="good.csv was replaced by a symbolic link while landing"):
        land_folder(lake, "clever", src, classify_and_swap)
    assert not os.path.exists(lake.path("stage1np", "clever"))


def test_a_file_replaced_after_the_scan_is_refused(lake, tmp_path):
    src = export(tmp_path, {"daily-participation/students/good.csv": DAILY})
    target = os.path.join(src, "daily-participation", "students", "good.csv")

    def classify_and_replace(relative):
        os.replace(target, target + ".old")
        with open(target, "w") as handle:
            handle.write(DAILY + "2022-01-10,s9,u9\n")
        return "daily-participation", "students/good.csv"

    with pytest.raises(LandingError, match="good.csv was replaced by another file while landing"):
        land_folder(lake, "clever", src, classify_and_replace)
