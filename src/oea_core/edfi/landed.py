"""What of Ed-Fi is landed in ``stage1np/edfi/<namespace>/<resource>/<batch>/``, and the writer that lands a batch.

A batch is written to ``_landing_<batch>`` and renamed into place with its ``_manifest.json``, so a half-landed
batch is never seen (:mod:`.landing` lands export files and API pages through it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import LandingError
from ..intake.landing import MANIFEST, copy_export_file
from ..lake.paths import check_name

if TYPE_CHECKING:
    from ..intake.landing import ExportFile
    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
SOURCE = "edfi"
KINDS = ("upserts", "deletes", "keyChanges")  # keyChanges: a record's natural key changed (ODS/API 5.3+)


@dataclass(frozen=True)
class LandedBatch:
    """One resource's landed batch."""

    namespace: str
    resource: str
    batch_id: str
    files: int
    records: dict[str, int] = field(default_factory=dict)
    change_versions: dict | None = None


def resource_root(lake: LakePaths, namespace: str, resource: str) -> str:
    return lake.path("stage1np", SOURCE, check_name(namespace, "namespace"), check_name(resource, "resource"))


def landed_resources(lake: LakePaths) -> list[tuple[str, str]]:
    """``(namespace, resource)`` of everything landed."""
    root = lake.path("stage1np", SOURCE)
    found = []
    if os.path.isdir(root):
        for namespace in sorted(os.listdir(root)):
            if namespace.startswith(("_", ".")) or not os.path.isdir(os.path.join(root, namespace)):
                continue
            found += [(namespace, r) for r in sorted(os.listdir(os.path.join(root, namespace)))
                      if not r.startswith(("_", ".")) and os.path.isdir(os.path.join(root, namespace, r))]
    return found


def batches(lake: LakePaths, namespace: str, resource: str) -> list[str]:
    """Landed batch ids of a resource, in landing order."""
    root = resource_root(lake, namespace, resource)
    if not os.path.isdir(root):
        return []
    return sorted(b for b in os.listdir(root)
                  if not b.startswith(("_", ".")) and os.path.exists(os.path.join(root, b, MANIFEST)))


def manifest(lake: LakePaths, namespace: str, resource: str, batch_id: str) -> dict:
    with open(os.path.join(resource_root(lake, namespace, resource), batch_id, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def batch_files(lake: LakePaths, namespace: str, resource: str, batch_id: str) -> list[tuple[str, str]]:
    """``(kind, path)`` of a landed batch's files, upserts first, each kind in name order."""
    folder = os.path.join(resource_root(lake, namespace, resource), batch_id)
    return [(entry["kind"], os.path.join(folder, entry["path"]))
            for entry in sorted(manifest(lake, namespace, resource, batch_id)["files"],
                                key=lambda e: (KINDS.index(e["kind"]), e["path"]))]


def last_change_version(lake: LakePaths, namespace: str, resource: str) -> int | None:
    """The highest change version landed from the API for a resource; None before the first API land."""
    versions = [manifest(lake, namespace, resource, b).get("change_versions") or {}
                for b in batches(lake, namespace, resource)]
    landed = [v["max"] for v in versions if v.get("max") is not None]
    return max(landed) if landed else None


def landed_hashes(lake: LakePaths) -> set[str]:
    hashes: set[str] = set()
    for namespace, resource in landed_resources(lake):
        for batch_id in batches(lake, namespace, resource):
            hashes.update(f["sha256"] for f in manifest(lake, namespace, resource, batch_id)["files"])
    return hashes


class BatchWriter:
    """Writes one resource's batch into a temporary folder, then renames it into place."""

    def __init__(self, lake: LakePaths, namespace: str, resource: str, batch_id: str) -> None:
        self.namespace, self.resource, self.batch_id = namespace, resource, batch_id
        root = resource_root(lake, namespace, resource)
        self.final = os.path.join(root, check_name(batch_id, "batch id"))
        if os.path.exists(self.final):
            raise LandingError(f"batch {batch_id} of {namespace}/{resource} already exists at {self.final}: "
                               "use a new batch id", path=self.final)
        self.temp = os.path.join(root, f"_landing_{batch_id}")
        shutil.rmtree(self.temp, ignore_errors=True)
        os.makedirs(self.temp)
        self.entries: list[dict] = []
        self.records = {kind: 0 for kind in KINDS}

    def copy(self, kind: str, file: ExportFile, digest: str) -> None:
        name = landed_name(len(self.entries), file.path)
        os.makedirs(os.path.join(self.temp, kind), exist_ok=True)
        copy_export_file(file, os.path.join(self.temp, kind, name), digest)
        self.entries.append({"kind": kind, "path": f"{kind}/{name}", "sha256": digest, "source_path": file.path})

    def write_records(self, kind: str, records: list[dict]) -> None:
        name = f"part-{len(self.entries):05d}.jsonl"
        os.makedirs(os.path.join(self.temp, kind), exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        payload = data.encode("utf-8")
        with open(os.path.join(self.temp, kind, name), "wb") as handle:
            handle.write(payload)
        self.entries.append({"kind": kind, "path": f"{kind}/{name}", "sha256": hashlib.sha256(payload).hexdigest(),
                             "records": len(records)})
        self.records[kind] += len(records)

    def commit(self, origin: dict, change_versions: dict | None = None) -> LandedBatch:
        doc = {"batch_id": self.batch_id, "source": SOURCE, "namespace": self.namespace,
               "resource": self.resource, "origin": origin, "change_versions": change_versions,
               "files": self.entries}
        with open(os.path.join(self.temp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1)
        os.replace(self.temp, self.final)
        log.info("landed %d files into stage1np/%s/%s/%s/%s", len(self.entries), SOURCE, self.namespace,
                 self.resource, self.batch_id)
        return LandedBatch(self.namespace, self.resource, self.batch_id, len(self.entries),
                           {k: v for k, v in self.records.items() if v}, change_versions)

    def drop(self, kind: str) -> None:
        """Forget every file of ``kind`` written so far (a read that is done again)."""
        shutil.rmtree(os.path.join(self.temp, kind), ignore_errors=True)
        self.entries = [e for e in self.entries if e["kind"] != kind]
        self.records[kind] = 0

    def abandon(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def landed_name(sequence: int, path: str) -> str:
    """The name a file lands under: ``00003-students.json`` (so no landed name is hidden from Spark)."""
    return f"{sequence:05d}-{os.path.basename(path)}"
