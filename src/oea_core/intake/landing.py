"""Landing: copy an export folder into ``stage1np/<source>/<table>/<batch>/`` exactly once.

A batch is written under a temporary ``_landing_<batch>`` folder, together with a
``_manifest.json`` holding each file's SHA-256, and renamed into place in one step, so a
half-copied batch is never seen by ingestion. A file whose bytes were landed before (same
SHA-256, in any batch) is skipped, so landing the same export twice changes nothing.

Landing reads only the export: every entry under the export folder must be a folder or a
regular file. A symbolic link (to a file or a folder, inside or outside the export), a FIFO,
a socket or a device, and a data file whose name Spark would not read
(:func:`~oea_core.intake.spark_paths.unreadable_reason`), is refused: the land fails, names every
refused path and why, and lands nothing. Files are opened without following links and checked
again once open, and the manifest's SHA-256 is computed from the very bytes copied.

A caller may attach facts to a file's manifest entry (``file_facts``, by the file's path in the export):
:mod:`oea_core.intake.sftp` records where a downloaded file came from there, so that record is committed
with the batch, in the same rename. Manifests without them read as before.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import LandingError
from ..lake.paths import MANIFEST, LakePaths, check_name
from .spark_paths import shown, unreadable_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger("oea")


@dataclass(frozen=True)
class LandedFile:
    """Where a landed file came from and where it went."""

    source_path: str
    table: str
    relative_path: str
    sha256: str


@dataclass(frozen=True)
class LandResult:
    """What one land call did: the batch id (None when nothing was new) and the files."""

    source: str
    batch_id: str | None
    landed: tuple[LandedFile, ...] = ()
    already_landed: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    tables: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line: the files landed, as which batch, and what had been landed before."""
        if self.batch_id:
            return (f"landed {len(self.landed)} files as batch {self.batch_id} "
                    f"({len(self.already_landed)} already landed)")
        return f"nothing new: all {len(self.already_landed)} files were landed before"


def new_batch_id(now: dt.datetime | None = None) -> str:
    """A sortable UTC batch id such as ``20260115T101502123456Z``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# reading an export ------------------------------------------------------------------------------
# O_NOFOLLOW: a file swapped for a link after the scan is not followed; O_NONBLOCK: nor does a FIFO block
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
_MAX_LISTED = 20
_NAME_MAX = 255  # bytes in one file name, on the file systems a lake lives on


@dataclass(frozen=True)
class ExportFile:
    """A regular file of an export: its path, its path inside the export, and its identity when scanned."""

    path: str
    relative: str
    device: int
    inode: int


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def scan_export(src: str) -> tuple[list[ExportFile], list[str]]:
    """The regular files under ``src`` in path order, and why each other entry (link, FIFO, ...) is refused.

    Links are never followed: a link to a folder is refused, not walked into.
    """
    files: list[ExportFile] = []
    refused: list[str] = []

    def unreadable(exc: OSError) -> None:
        refused.append(f"{shown(os.path.relpath(exc.filename or src, src))}: cannot be read ({exc.strerror})")

    for parent, dirs, names in os.walk(src, onerror=unreadable):
        for name in sorted(dirs):
            if os.path.islink(os.path.join(parent, name)):
                refused.append(f"{shown(os.path.relpath(os.path.join(parent, name), src))}: a symbolic link")
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(parent, d)))
        for name in sorted(names):
            path = os.path.join(parent, name)
            relative = os.path.relpath(path, src)
            try:
                info = os.lstat(path)
            except OSError as exc:
                refused.append(f"{shown(relative)}: cannot be read ({exc.strerror})")
                continue
            if stat.S_ISREG(info.st_mode):
                files.append(ExportFile(path, relative, info.st_dev, info.st_ino))
            else:
                refused.append(f"{shown(relative)}: {_kind(info.st_mode)}")
    return files, refused


def name_problem(relative: str, landed_name: str) -> str | None:
    """Why a file at ``relative`` in the export cannot land as ``landed_name`` (None when it can)."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "its path is not valid UTF-8, so it cannot be named in messages, manifests or Spark"
    if len(os.fsencode(landed_name)) > _NAME_MAX:
        return f"it would land as a name longer than {_NAME_MAX} bytes ({shown(landed_name)}); shorten it"
    return unreadable_reason(landed_name)


def refuse(src: str, refused: list[str]) -> None:
    """Raise one LandingError naming every refused entry of the export (nothing is landed)."""
    if not refused:
        return
    listed = "; ".join(refused[:_MAX_LISTED]) + (f"; and {len(refused) - _MAX_LISTED} more"
                                                  if len(refused) > _MAX_LISTED else "")
    raise LandingError(
        f"{len(refused)} entries of the export {shown(src)} were refused, so nothing was landed: {listed}. "
        "Landing reads only regular files inside the export folder: replace links and special files with "
        "the files themselves, rename files Spark cannot read, and land again", path=src)


def open_export_file(file: ExportFile) -> BinaryIO:
    """Open a scanned export file for reading, without following a link; LandingError if it was replaced."""
    try:
        fd = os.open(file.path, _OPEN_FLAGS)
    except OSError as exc:
        what = "was replaced by a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise LandingError(f"{shown(file.path)} {what} while landing; nothing was landed. Land again once the "
                           "export is complete", path=file.path) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (file.device, file.inode):
        os.close(fd)
        raise LandingError(f"{shown(file.path)} was replaced by another file while landing; nothing was landed. "
                           "Land again once the export is complete", path=file.path)
    return os.fdopen(fd, "rb")


def sha256_export_file(file: ExportFile) -> str:
    """SHA-256 of a scanned export file (see :func:`open_export_file`)."""
    digest = hashlib.sha256()
    with open_export_file(file) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_export_file(file: ExportFile, target: str, expected: str) -> None:
    """Copy a scanned export file to ``target``, hashing the bytes copied; LandingError unless they hash to
    ``expected`` (the file changed since it was hashed)."""
    digest = hashlib.sha256()
    with open_export_file(file) as handle, open(target, "xb") as out:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != expected:
        raise LandingError(f"{shown(file.path)} changed while landing; nothing was landed. Land again once the "
                           "export is complete", path=file.path)


def landed_hashes(lake: LakePaths, source: str) -> set[str]:
    """SHA-256 of every file already landed for ``source`` (from the batch manifests)."""
    root = lake.path("stage1np", source)
    hashes: set[str] = set()
    if not os.path.isdir(root):
        return hashes
    for table in os.listdir(root):
        for batch in list_batches(lake, source, table):
            manifest = os.path.join(root, table, batch, MANIFEST)
            if os.path.exists(manifest):
                with open(manifest, encoding="utf-8") as handle:
                    hashes.update(entry["sha256"] for entry in json.load(handle)["files"])
    return hashes


def list_batches(lake: LakePaths, source: str, table: str) -> list[str]:
    """Landed batch ids of a table, oldest first (folders starting with ``_`` or ``.`` are not batches)."""
    folder = lake.path("stage1np", source, table)
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(("_", ".")) and os.path.isdir(os.path.join(folder, name)))


def batch_files(lake: LakePaths, source: str, table: str, batch_id: str, suffix: str = ".csv") -> list[str]:
    """Data files of a landed batch, sorted (every one: a name Spark would skip is an error when read)."""
    folder = lake.path("stage1np", source, table, batch_id)
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        found += [os.path.join(parent, f) for f in sorted(files) if f.lower().endswith(suffix)]
    return found


def land_folder(lake: LakePaths, source: str, src: str,
                classify: Callable[[str], tuple[str, str] | None],
                batch_id: str | None = None, suffix: str = ".csv",
                file_facts: Mapping[str, Mapping[str, Any]] | None = None) -> LandResult:
    """Land every new ``*suffix`` file under ``src``.

    ``classify(relative_path)`` gives ``(table, relative_target)`` for a file, or None to ignore it.
    ``file_facts`` (by path under ``src``) adds ``"remote": <facts>`` to a landed file's manifest entry.
    Raises LandingError when ``src`` is missing or holds no file of the source, and, landing nothing,
    when it holds links or special files, files Spark could not read, or two files landing at one place.
    """
    if lake.root is None:
        raise LandingError("landing into a cloud lake without a working copy (Synapse) runs in the Synapse "
                           "pipeline; give --lake abfss://... to land through a working copy")
    if not os.path.isdir(src):
        raise LandingError(f"source folder {shown(src)} does not exist: give the folder of the {source} export",
                           path=src)
    batch_id = check_name(batch_id or new_batch_id(), "batch id")
    files, refused = scan_export(src)
    wanted: list[tuple[ExportFile, str, str]] = []
    ignored: list[str] = []
    targets: dict[tuple[str, str], str] = {}
    for file in files:
        target = classify(file.relative) if file.relative.lower().endswith(suffix) else None
        if target is None:
            ignored.append(file.relative)
            continue
        problem = name_problem(file.relative, target[1].split("/")[-1])
        first = targets.setdefault(target, file.relative)
        if problem is None and first != file.relative:
            problem = f"it would land at {target[0]}/{target[1]}, as {shown(first)} does"
        if problem:
            refused.append(f"{shown(file.relative)}: {problem}")
            continue
        wanted.append((file, *target))
    refuse(src, refused)
    seen = landed_hashes(lake, source)
    plan: dict[str, list[tuple[ExportFile, str, str]]] = {}
    already = []
    for file, table, relative in wanted:
        digest = sha256_export_file(file)
        if digest in seen:
            already.append(file.relative)
            continue
        seen.add(digest)
        plan.setdefault(table, []).append((file, relative, digest))
    if not plan and not already:
        raise LandingError(f"no {source} files found under {shown(src)}; ignored: "
                           f"{[shown(i) for i in ignored[:5]]}", path=src)
    staged: list[tuple[str, str]] = []
    landed: list[LandedFile] = []
    try:
        for table, entries in sorted(plan.items()):
            landed += _stage_batch(lake, source, table, batch_id, entries, staged, file_facts or {})
        for temp, final in staged:  # every table's batch is complete before any is renamed into place
            os.replace(temp, final)
    except BaseException as exc:
        for temp, _final in staged:
            shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LandingError(f"landing {source} batch {batch_id} failed, nothing was landed: {exc}",
                               path=exc.filename) from exc
        raise
    for table in sorted(plan):
        log.info("landed %d files into stage1np/%s/%s/%s", len(plan[table]), source, table, batch_id)
    for relative in already:
        log.debug("%s: already landed (same SHA-256), skipped", shown(relative))
    return LandResult(source, batch_id if landed else None, tuple(landed), tuple(already), tuple(ignored),
                      tuple(sorted(plan)))


def _stage_batch(lake: LakePaths, source: str, table: str, batch_id: str,
                 entries: list[tuple[ExportFile, str, str]], staged: list[tuple[str, str]],
                 file_facts: Mapping[str, Mapping[str, Any]]) -> list[LandedFile]:
    """Copy a table's files and manifest into its ``_landing_<batch>`` folder (added to ``staged``)."""
    table_dir = lake.path("stage1np", source, check_name(table, "table"))
    final = os.path.join(table_dir, batch_id)
    if os.path.exists(final):
        raise LandingError(f"batch {batch_id} already exists at {final}: use a new batch id", path=final)
    temp = os.path.join(table_dir, f"_landing_{batch_id}")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    staged.append((temp, final))
    landed = []
    records: list[dict[str, Any]] = []
    for file, relative, digest in entries:
        target = os.path.join(temp, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        copy_export_file(file, target, digest)
        landed.append(LandedFile(file.path, table, os.path.join(table, batch_id, relative), digest))
        records.append({"path": relative, "source_path": file.path, "sha256": digest})
        if file.relative in file_facts:
            records[-1]["remote"] = dict(file_facts[file.relative])
        log.debug("landed %s -> stage1np/%s/%s", shown(file.path), source, shown(landed[-1].relative_path))
    manifest = {"batch_id": batch_id, "source": source, "table": table, "files": records}
    with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    return landed
