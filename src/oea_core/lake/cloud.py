"""A cloud lake's local working copy, kept in step with the ADLS Gen2 account.

Commands against ``--lake abfss://...`` run the same code as on a local lake, on a working copy
of the parts of the lake they touch (``LakePaths.root``, under ``$OEA_CACHE``). Spark reads the
landed files and writes its Parquet there, where a local session can reach them; the account is
reached through adlfs (files) only here, and through delta-rs (table schemas, independent reads).
On Synapse, where Spark opens ``abfss://`` itself, no working copy is used.

One run of a source (``land``, ``ingest``, ``refine``), holding the source's lock, is:

1. **pull** each of its folders (``stage1np/<source>``, ``stage2np/<source>`` ...): every file the
   account holds is downloaded unless the working copy already has that version (same ETag, size
   and modification time as recorded at the last sync), and every local file the account does not
   hold is removed. The account is the truth; a working copy left by a failed or foreign run is
   reset. In ``stage1np`` only whole batches are pulled: a batch folder counts once its
   ``_manifest.json`` is there, so a landing cut short is never read.
2. the work, on the working copy (the lake's own code, leftovers removed before and after).
3. **push**, only when the work succeeded: new and changed files are uploaded in commit order,
   data first, then every batch ``_manifest.json`` (write-once: the batch's commit marker), then
   each Delta table's new ``_delta_log/<version>.json`` in version order (write-once: Delta's
   put-if-absent commit; one taken already means another writer committed, and the run stops
   with :class:`~oea_core.errors.LakeStorageError`), then checkpoints, and removals last.

A run cut short before its push leaves the account as it was (at most data files no commit or
manifest names, which the next run of the source removes). Sync state is kept per folder in
``<working copy>/.oea/sync/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from ..errors import LakeStorageError
from .paths import FINGERPRINT_FILE, FRAMEWORK_CONTAINER, STAGES, LakePaths
from .storage import (
    CREDENTIAL_SETTINGS,
    StorageCredentials,
    create_containers,
    lake_credentials,
    lake_filesystem,
    storage_errors,
)
from .synced_folder import SYNC_FOLDER, WRITE_ONCE, SyncedFolder, SyncResult, committed_batches

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec import AbstractFileSystem

# one folder's sync (SyncedFolder) lives in .synced_folder; its names stay importable from here
__all__ = ["SYNC_FOLDER", "WRITE_ONCE", "CloudLake", "SyncResult", "SyncedFolder", "committed_batches", "open_cloud",
           "pull_runs", "runs_synced"]

log = logging.getLogger("oea")


class CloudLake:
    """The account behind a cloud lake's working copy: its credential and file system, opened once."""

    def __init__(self, lake: LakePaths, credentials: StorageCredentials | None = None,
                 fs: AbstractFileSystem | None = None) -> None:
        if lake.account is None or lake.root is None:
            raise LakeStorageError(f"the lake {lake.shown} has no working copy to sync")
        self.lake = lake
        self.credentials = credentials or lake_credentials(lake)
        self.fs = fs or lake_filesystem(lake, self.credentials)
        self._containers_checked = False

    def folder(self, container: str, prefix: str, names: tuple[str, ...] = (), *,
               additive: bool = False) -> SyncedFolder:
        """One folder of the lake (``stage2p``, ``clever``), synced on its own; only ``names`` in it if given.

        An ``additive`` folder (the flows' run logs) never loses files in a sync, either way, and a pull leaves
        a file this machine changed since the last sync alone (a run here may be writing it).
        """
        return SyncedFolder(self, container, prefix.strip("/"), names, additive=additive)

    def runs_folder(self) -> SyncedFolder:
        """``oea-framework/runs``: the run logs of flows (and ``oea run``'s executed notebooks)."""
        return self.folder(FRAMEWORK_CONTAINER, "runs", additive=True)

    def source_folders(self, source: str, stages: tuple[str, ...] = STAGES) -> list[SyncedFolder]:
        """The folders a run of ``source`` reads or writes: its folder in each of ``stages``, and the salt
        fingerprint."""
        return [self.folder(stage, source) for stage in stages] + [
            self.folder(FRAMEWORK_CONTAINER, "", (FINGERPRINT_FILE,))]

    def table_folders(self, source: str, stages: tuple[str, ...] = ("stage2np", "stage2p")) -> set[tuple[str, str]]:
        """``(stage, table)`` of the folders under ``<stage>/<source>`` in the account."""
        found = set()
        with storage_errors(self.credentials):
            for stage in stages:
                with contextlib.suppress(FileNotFoundError):
                    found |= {(stage, path.rstrip("/").rsplit("/", 1)[-1])
                              for path in self.fs.ls(f"{stage}/{source}", detail=False, refresh=True)}
        return found

    def ensure_containers(self) -> None:
        """Create the stage and ``oea-framework`` containers that are missing (once per CloudLake)."""
        if not self._containers_checked:
            create_containers(self.fs, self.credentials)
            self._containers_checked = True


_OPENED: dict[tuple[LakePaths, tuple[str, ...]], CloudLake] = {}


def open_cloud(lake: LakePaths) -> CloudLake:
    """The :class:`CloudLake` of ``lake``, opened once per process and credential settings (the account is
    checked once: a refused credential is a StorageCredentialError here)."""
    key = (lake, tuple(os.environ.get(name, "") for name in CREDENTIAL_SETTINGS))
    if key not in _OPENED:
        _OPENED[key] = CloudLake(lake)
    return _OPENED[key]


def pull_runs(lake: LakePaths) -> None:
    """Bring the run logs of a cloud lake's flows into its working copy (nothing to do on a local lake)."""
    if lake.account is not None and lake.root is not None:
        open_cloud(lake).runs_folder().pull()


@contextlib.contextmanager
def runs_synced(lake: LakePaths) -> Iterator[None]:
    """Pull a cloud lake's run logs, run the body, and push them whatever its outcome (a failed night's log is
    the one to read elsewhere); a push that fails is a warning, never the run's outcome."""
    if lake.account is None or lake.root is None:
        yield
        return
    folder = open_cloud(lake).runs_folder()
    folder.pull()
    try:
        yield
    finally:
        try:
            folder.push()
        except Exception as exc:  # noqa: BLE001 -- the run's own outcome is what the caller must see
            log.warning("could not push the run logs to %s: %s; the next flow run pushes them", lake.shown, exc)
