"""Submission records: ``oea-framework/submissions/<sha256>.json``, one per bundle ever processed.

A record is written once, when a bundle's outcome is known (accepted, or rejected with the reason),
atomically (a temporary file renamed into place); its presence is what makes a bundle's second
submission a no-op. A run cut short (a crash, Ctrl-C, a lake lock held elsewhere) writes none, so the
bundle is processed again, under the same batch id. A cloud lake's records live in its account: they
are pulled before a bundle is looked up and pushed after its record is written.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import SubmissionError
from ..lake.cloud import open_cloud
from ..lake.paths import FRAMEWORK_CONTAINER, LakePaths

if TYPE_CHECKING:
    from collections.abc import Iterator

RECORDS = "submissions"


def record_path(lake: LakePaths, sha256: str) -> str:
    """Where the record of the bundle with this SHA-256 lives."""
    return lake.state_path(RECORDS, f"{sha256}.json")


def read_record(lake: LakePaths, sha256: str) -> dict[str, Any] | None:
    """The bundle's record, or None when it was never processed."""
    try:
        with open(record_path(lake, sha256), encoding="utf-8") as handle:
            record: dict[str, Any] = json.load(handle)
    except FileNotFoundError:
        return None
    return record


def write_record(lake: LakePaths, record: dict[str, Any]) -> str:
    """Write ``record`` (keyed by its ``sha256``) atomically; returns its path."""
    path = record_path(lake, record["sha256"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(path + ".tmp", path)
    return path


def all_records(lake: LakePaths) -> list[dict[str, Any]]:
    """Every record, newest first."""
    folder = lake.state_path(RECORDS)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                found.append(json.load(handle))
    return sorted(found, key=lambda r: str(r.get("finished", "")), reverse=True)


@contextlib.contextmanager
def records_synced(lake: LakePaths) -> Iterator[None]:
    """A cloud lake: pull the records, run the body, push them (only when it succeeded). Local lakes: the body."""
    if lake.root is None:
        raise SubmissionError(f"submissions need a local lake or a cloud lake's working copy; {lake.shown} has "
                              "none here: give --lake a folder or an abfss:// URL")
    if lake.account is None:
        yield
        return
    cloud = open_cloud(lake)
    cloud.ensure_containers()
    folder = cloud.folder(FRAMEWORK_CONTAINER, RECORDS, additive=True)
    folder.pull()
    yield
    folder.push()
