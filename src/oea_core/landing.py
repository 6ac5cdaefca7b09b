"""Landing: copy an export folder into ``stage1np/<source>/<table>/<batch>/`` exactly once.

A batch is written under a temporary ``_landing_<batch>`` folder, together with a
``_manifest.json`` holding each file's SHA-256, and renamed into place in one step, so a
half-copied batch is never seen by ingestion. A file whose bytes were landed before (same
SHA-256, in any batch) is skipped, so landing the same export twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import LandingError
from .paths import LakePaths, check_name

log = logging.getLogger("oea")
MANIFEST = "_manifest.json"


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
    """Data files of a landed batch, sorted."""
    folder = lake.path("stage1np", source, table, batch_id)
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        found += [os.path.join(parent, f) for f in sorted(files)
                  if f.lower().endswith(suffix) and not f.startswith(("_", "."))]
    return found


def land_folder(lake: LakePaths, source: str, src: str,
                classify: Callable[[str], tuple[str, str] | None],
                batch_id: str | None = None, suffix: str = ".csv") -> LandResult:
    """Land every new ``*suffix`` file under ``src``.

    ``classify(relative_path)`` gives ``(table, relative_target)`` for a file, or None to ignore it.
    Raises LandingError when ``src`` is missing or holds no file of the source.
    """
    if not lake.is_local:
        raise LandingError("landing into an ADLS lake runs in the Synapse pipeline; land locally here")
    if not os.path.isdir(src):
        raise LandingError(f"source folder {src} does not exist: give the folder of the {source} export",
                           path=src)
    batch_id = check_name(batch_id or new_batch_id(), "batch id")
    seen = landed_hashes(lake, source)
    plan: dict[str, list[tuple[str, str, str]]] = {}
    already, ignored = [], []
    for parent, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            relative = os.path.relpath(path, src)
            target = classify(relative) if name.lower().endswith(suffix) else None
            if target is None:
                ignored.append(relative)
                continue
            digest = sha256_file(path)
            if digest in seen:
                already.append(relative)
                continue
            seen.add(digest)
            plan.setdefault(target[0], []).append((path, target[1], digest))
    if not plan and not already:
        raise LandingError(f"no {source} files found under {src}; ignored: {ignored[:5]}", path=src)
    landed: list[LandedFile] = []
    for table, entries in sorted(plan.items()):
        landed += _land_batch(lake, source, table, batch_id, entries)
    for relative in already:
        log.debug("%s: already landed (same SHA-256), skipped", relative)
    return LandResult(source, batch_id if landed else None, tuple(landed), tuple(already), tuple(ignored),
                      tuple(sorted(plan)))


def _land_batch(lake: LakePaths, source: str, table: str, batch_id: str,
                entries: list[tuple[str, str, str]]) -> list[LandedFile]:
    table_dir = lake.path("stage1np", source, check_name(table, "table"))
    final = os.path.join(table_dir, batch_id)
    if os.path.exists(final):
        raise LandingError(f"batch {batch_id} already exists at {final}: use a new batch id", path=final)
    temp = os.path.join(table_dir, f"_landing_{batch_id}")
    shutil.rmtree(temp, ignore_errors=True)
    landed = []
    try:
        for path, relative, digest in entries:
            target = os.path.join(temp, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
            landed.append(LandedFile(path, table, os.path.join(table, batch_id, relative), digest))
            log.debug("landed %s -> stage1np/%s/%s", path, source, landed[-1].relative_path)
        manifest = {"batch_id": batch_id, "source": source, "table": table,
                    "files": [{"path": os.path.relpath(f.relative_path, os.path.join(table, batch_id)),
                               "source_path": f.source_path, "sha256": f.sha256} for f in landed]}
        with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
        os.replace(temp, final)
        log.info("landed %d files into stage1np/%s/%s/%s", len(landed), source, table, batch_id)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise LandingError(f"landing into {final} failed, nothing was landed: {exc}", path=final) from exc
    return landed
