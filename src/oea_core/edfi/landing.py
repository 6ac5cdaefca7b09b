"""Landing Ed-Fi data into ``stage1np/edfi/<namespace>/<resource>/<batch>/{upserts,deletes,keyChanges}/``.

Two ways in: from an Ed-Fi API (pages streamed to JSON Lines, with the change-version range
in the batch's ``_manifest.json``; later runs fetch only what changed since the last landed
range, plus deletes and key changes), or from files on disk (API JSON as arrays or JSON Lines,
including OEA's ``<resource>/incremental/{upserts|deletes|keyChanges}/rundate=YYYY-MM-DD/*.json``
layout, one batch per rundate). Each batch is written to a temporary folder and renamed into place, so a
half-landed batch is never seen; a file whose bytes were landed before is skipped. A landed
file is named ``<sequence>-<export file name>``, so Spark reads any name, hidden ones included;
links, special files and names Spark cannot read are refused as for every source
(:mod:`oea_core.intake.landing`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LandingError
from ..intake.landing import (
    ExportFile,
    name_problem,
    new_batch_id,
    open_export_file,
    refuse,
    scan_export,
    sha256_export_file,
)
from ..intake.spark_paths import shown
from ..lake.paths import check_name
from .landed import (
    KINDS,
    SOURCE,
    BatchWriter,
    LandedBatch,
    batch_files,
    batches,
    landed_hashes,
    landed_name,
    landed_resources,
    last_change_version,
    manifest,
    resource_root,
)
from .openapi import land_openapi

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..lake.paths import LakePaths
    from .api import EdFiClient, Resource

# what is landed, and the batch writer, live in .landed; these names stay importable from here
__all__ = ["DEFAULT_NAMESPACE", "KINDS", "READS", "RECORDS_PER_FILE", "SOURCE", "SUFFIXES", "EdFiLandResult",
           "LandedBatch", "Terminated", "batch_files", "batches", "classify_file", "land_api", "land_files",
           "landed_name", "landed_resources", "last_change_version", "manifest", "resource_root"]

log = logging.getLogger("oea")
DEFAULT_NAMESPACE = "ed-fi"
SUFFIXES = (".json", ".jsonl", ".ndjson")
RECORDS_PER_FILE = 50_000
READS = 3  # a resource whose read loses records to data changing under it is read this many times in all
_RUNDATE = re.compile(r"^rundate=(\d{4}-\d{2}-\d{2})$")
_SEPARATORS = "|".join(re.escape(sep) for sep in {os.sep, os.altsep or os.sep})  # on POSIX a "\\" is part of a name


@dataclass(frozen=True)
class EdFiLandResult:
    """What a land call did."""

    batches: tuple[LandedBatch, ...] = ()
    already_landed: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    from_api: bool = False
    openapi: str | None = None  # the folder the API's OpenAPI document was stored in, when it was

    @property
    def batch_ids(self) -> list[str]:
        return sorted({b.batch_id for b in self.batches})

    def summary(self) -> str:
        """One line: what was landed, as which batches, and what had been landed before."""
        stored = "; stored the API's OpenAPI document" if self.openapi else ""
        if not self.batches:
            return "nothing new" + (f": all {len(self.already_landed)} files were landed before"
                                    if self.already_landed else "") + stored
        records = sum(sum(b.records.values()) for b in self.batches)
        key_changes = sum(b.records.get("keyChanges", 0) for b in self.batches)
        return (f"landed {len(self.batches)} resource batches ({sum(b.files for b in self.batches)} files"
                + (f", {records} records" if self.from_api else "")
                + (f" of which {key_changes} key changes" if key_changes else "") + f") as {', '.join(self.batch_ids)}"
                + (f"; {len(self.already_landed)} files already landed" if self.already_landed else "") + stored)


class Terminated(KeyboardInterrupt):
    """A SIGTERM during a land: unwinds as Ctrl-C does, so the half-written batch is removed and the lock freed."""


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While landing (in the main thread), a SIGTERM raises :class:`Terminated` instead of ending the process on
    the spot, which would leave a ``_landing_<batch>`` folder for the next run to remove."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# files -------------------------------------------------------------------------------------------
def classify_file(relative_path: str) -> tuple[str, str, str, str | None]:
    """``(namespace, resource, kind, rundate)`` of an export file from its path.

    ``students/incremental/deletes/rundate=2024-01-02/x.json`` -> ``("ed-fi", "students", "deletes",
    "2024-01-02")``; ``tpdm/candidates/x.jsonl`` -> ``("tpdm", "candidates", "upserts", None)``;
    ``students.json`` -> ``("ed-fi", "students", "upserts", None)``; ``sessions_keyChanges.json`` ->
    ``("ed-fi", "sessions", "keyChanges", None)``.
    """
    parts = [p for p in re.split(_SEPARATORS, relative_path) if p]
    folders, name = parts[:-1], parts[-1]
    rundate = next((m.group(1) for p in folders if (m := _RUNDATE.match(p))), None)
    kind = _kind_of(folders, name)
    plain = [p for p in folders if p not in ("incremental", "full", *KINDS) and not _RUNDATE.match(p)]
    if plain:
        resource = plain[-1]
        namespace = plain[-2] if len(plain) >= 2 else DEFAULT_NAMESPACE
    else:
        resource = re.sub(r"[._-]?(deletes?|keyChanges?)$", "", name.split(".")[0], flags=re.IGNORECASE)
        namespace = DEFAULT_NAMESPACE
    return namespace, resource, kind, rundate


def _kind_of(folders: list[str], name: str) -> str:
    """The kind of changes an export file holds, from its folders or, failing that, its name."""
    for kind, pattern in (("keyChanges", r"keyChanges?(\.|$)"), ("deletes", r"deletes?(\.|$)")):
        if kind in folders or re.search(pattern, name, re.IGNORECASE):
            return kind
    return "upserts"


def _is_empty(file: ExportFile) -> bool:
    with open_export_file(file) as handle:
        head = handle.read(64)
    return head.removeprefix(b"\xef\xbb\xbf").strip() in (b"", b"[]")


@_sigterm_unwinds()
def land_files(lake: LakePaths, src: str, batch_id: str | None = None) -> EdFiLandResult:
    """Land an Ed-Fi export folder (one batch per rundate); raises LandingError when it holds no JSON."""
    if lake.root is None:
        raise LandingError("landing into a cloud lake without a working copy (Synapse) runs in the Synapse "
                           "pipeline; give --lake abfss://... to land through a working copy")
    if not os.path.isdir(src):
        raise LandingError(f"source folder {src} does not exist: give the folder of the Ed-Fi export", path=src)
    base = check_name(batch_id or new_batch_id(), "batch id")
    files, refused = scan_export(src)
    wanted: list[tuple[ExportFile, tuple[str, str, str, str | None]]] = []
    ignored: list[str] = []
    for file in files:
        if not file.relative.lower().endswith(SUFFIXES):
            ignored.append(file.relative)
            continue
        problem = name_problem(file.relative, landed_name(0, file.path))
        if problem:
            refused.append(f"{shown(file.relative)}: {problem}")
            continue
        where = classify_file(file.relative)
        check_name(where[1], f"resource of {file.relative}")
        wanted.append((file, where))
    refuse(src, refused)
    seen = landed_hashes(lake)
    plan: dict[tuple[str, str, str], list[tuple[str, ExportFile, str]]] = {}
    already, empty = [], []
    for file, (namespace, resource, kind, rundate) in wanted:
        if _is_empty(file):
            empty.append(file.relative)
            continue
        digest = sha256_export_file(file)
        if digest in seen:
            already.append(file.relative)
            continue
        seen.add(digest)
        group = f"{base}_{rundate}" if rundate else base
        plan.setdefault((group, namespace, resource), []).append((kind, file, digest))
    if not plan and not already and not empty:
        raise LandingError(f"no Ed-Fi JSON files (*.json, *.jsonl, *.ndjson) under {shown(src)}; "
                           f"ignored: {[shown(i) for i in ignored[:5]]}", path=src)
    writers: list[BatchWriter] = []
    try:  # every batch is copied before any is renamed into place, so a failed copy lands nothing
        for (group, namespace, resource), entries in sorted(plan.items()):
            writers.append(BatchWriter(lake, namespace, resource, group))
            for kind, file, digest in sorted(entries, key=lambda e: (KINDS.index(e[0]), e[1].path)):
                writers[-1].copy(kind, file, digest)
    except BaseException:
        for writer in writers:
            writer.abandon()
        raise
    landed = [writer.commit({"kind": "files", "folder": os.path.abspath(src)}) for writer in writers]
    for relative in empty:
        log.info("%s is empty; nothing to land", shown(relative))
    return EdFiLandResult(tuple(landed), tuple(already), tuple(empty), tuple(ignored))


# API ---------------------------------------------------------------------------------------------
@_sigterm_unwinds()
def land_api(lake: LakePaths, client: EdFiClient, resources: list[str] | None = None,
             batch_id: str | None = None, *, strict: bool = True, reads: int = READS) -> EdFiLandResult:
    """Land every resource (or those named) from the API in dependency order.

    The first run pages through each resource completely; later runs fetch the changes
    since the change version landed for that resource, its deletes and its key changes (a
    resource without a ``/keyChanges`` endpoint has none). Each resource's
    batch is landed atomically, so an interrupted run can simply be run again. The API's OpenAPI
    document is stored too, when it changed (:mod:`.openapi`). With ``strict``
    a named resource the API does not have is an error; otherwise it is skipped.
    """
    if lake.root is None:
        raise LandingError("landing into a cloud lake without a working copy (Synapse) runs in the Synapse "
                           "pipeline; give --lake abfss://... to land through a working copy")
    base = check_name(batch_id or new_batch_id(), "batch id")
    wanted = set(resources) if resources else None
    order = [r for r in client.dependencies() if wanted is None or r.name in wanted]
    if wanted:
        unknown = wanted - {r.name for r in order}
        if unknown and not strict:
            log.info("the API has no %s; skipped", ", ".join(sorted(unknown)))
        elif unknown:
            raise LandingError(f"the API at {client.base_url} has no resources {sorted(unknown)}; "
                               "check the names against its dependency list")
    newest = client.newest_change_version()
    openapi = land_openapi(lake, client, base)
    landed = []
    for number, resource in enumerate(order, start=1):
        log.info("[%d/%d] %s/%s", number, len(order), resource.namespace, resource.name)
        batch = _land_resource(lake, client, resource, base, newest, reads)
        if batch is not None:
            landed.append(batch)
    return EdFiLandResult(tuple(landed), from_api=True, openapi=openapi)


def _land_resource(lake: LakePaths, client: EdFiClient, resource: Resource, batch_id: str,
                   newest: int | None, reads: int = READS) -> LandedBatch | None:
    last = last_change_version(lake, resource.namespace, resource.name) if newest is not None else None
    if last is not None and newest is not None and last >= newest:
        log.info("%s: nothing new since change version %d", resource.name, last)
        return None
    low = None if last is None else last + 1
    writer = BatchWriter(lake, resource.namespace, resource.name, batch_id)
    try:
        kinds = KINDS if low is not None else ("upserts",)
        for kind in kinds:
            _land_kind(writer, client, resource, kind, low, newest, reads)
        if not writer.entries and low is not None:
            writer.abandon()
            log.info("%s: no changes between change versions %s and %s", resource.name, low, newest)
            return None
        change_versions = None if newest is None else {"min": low, "max": newest}
        return writer.commit({"kind": "api", "url": client.base_url}, change_versions)
    except BaseException:
        writer.abandon()
        raise


def _land_kind(writer: BatchWriter, client: EdFiClient, resource: Resource, kind: str, low: int | None,
               newest: int | None, reads: int) -> None:
    """Land one kind of a resource's changes in the window ``low``..``newest``, checked against the API's count.

    Within a fixed window records can only leave it (an update moves a record's change version past ``newest``, a
    delete removes it), which shifts the offsets of later pages down and skips records. So the distinct ids landed
    (entries, for deletes and key changes) must reach the ``Total-Count`` the API gave for the window; a shortfall
    is read again, up to ``reads`` times in all, then fails the resource by name.
    """
    name = f"{resource.namespace}/{resource.name}" + ("" if kind == "upserts" else f"/{kind}")
    landed = total = 0
    reads = max(1, reads)
    for read in range(1, reads + 1):
        paged = client.pages(resource, kind=kind, min_change_version=low, max_change_version=newest)
        ids: set = set()
        entries = 0
        buffer: list[dict] = []
        for page in paged:
            ids.update(_record_id(r) or f"#{entries + n}" for n, r in enumerate(page))  # no id: counted apart
            buffer += page
            entries += len(page)
            if len(buffer) >= RECORDS_PER_FILE:
                writer.write_records(kind, buffer)
                buffer = []
        if buffer:
            writer.write_records(kind, buffer)
        landed = len(ids) if kind == "upserts" else entries
        if paged.total is None or landed >= paged.total:
            if paged.total is None and entries:
                log.debug("%s: the API gave no Total-Count; %d records landed unchecked", name, landed)
            return
        total = paged.total
        writer.drop(kind)
        if read < reads:
            log.warning("%s: landed %d of the %d records the API counted between change versions %s and %s; the "
                        "data changed while it was paged, so it is read again (%d of %d)", name, landed, total,
                        low or 0, newest, read + 1, reads)
    raise LandingError(f"Ed-Fi {name}: read {reads} times between change versions {low or 0} and {newest}, and every "
                       f"read lost records while it was paged (the last: {landed} of the {total} the API counted), "
                       f"as the API's data kept changing; nothing of {resource.name} was landed: run again when the "
                       "API is quieter")


def _record_id(record) -> str | None:
    return (record.get("id") or record.get("Id")) if isinstance(record, dict) else None

