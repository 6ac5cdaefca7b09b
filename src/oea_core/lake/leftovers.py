"""What an interrupted run leaves in a lake, found and removed.

A run killed at the wrong moment can leave: ``<table>/_staging/<id>`` folders (Parquet written
for a commit that never happened), data files in a table folder that no commit names (moved into
place, or written by a merge that lost a commit race, before the commit), and
``stage1np/<source>/<table>/_landing_<batch>`` folders of a half-copied batch. Readers of the
Delta log never see them, but a Parquet glob over the folder would, and they take space.

Each land, ingest and refine removes its source's leftovers while it holds the source's lake
lock (:mod:`oea_core.lake.lock`), before it starts and after it finishes; ``oea lake check
[--repair]`` reports (and removes) them for the whole lake. Local lakes only, for now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from .paths import LakePaths

log = logging.getLogger("oea")
DELTA_STAGES = ("stage2np", "stage2p", "stage3np", "stage3p")
_SKIP = ("_delta_log", "_change_data", "_staging")


@dataclass(frozen=True)
class Leftover:
    """A file or folder no commit or batch names: ``kind`` is staging, uncommitted or landing."""

    path: str
    kind: str
    size: int


def find_leftovers(lake: LakePaths, source: str | None = None) -> list[Leftover]:
    """Every leftover in the lake (or of one ``source``), sorted by path."""
    if lake.root is None:
        return []
    found: list[Leftover] = []
    for stage in DELTA_STAGES:
        for table in _tables(lake, stage, source):
            found += _table_leftovers(table)
    root = lake.stage_root("stage1np")
    for folder in [os.path.join(root, source)] if source else _subdirs(root):
        found += _landing_leftovers(folder, depth=3)  # <source>/<table>/_landing_<batch>, Ed-Fi one deeper
    return sorted(found, key=lambda item: item.path)


def _subdirs(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isdir(os.path.join(folder, n)) and not os.path.islink(os.path.join(folder, n))]


def _landing_leftovers(folder: str, depth: int) -> list[Leftover]:
    found = []
    for sub in _subdirs(folder):
        name = os.path.basename(sub)
        if name.startswith("_landing_"):
            found.append(Leftover(sub, "landing", _size(sub)))
        elif depth > 1 and not name[:1].isdigit():  # batch folders (timestamps) hold files, not batches
            found += _landing_leftovers(sub, depth - 1)
    return found


def remove_leftovers(leftovers: list[Leftover]) -> int:
    """Remove ``leftovers``; returns the bytes freed. Only call it holding the sources' lake locks."""
    freed = 0
    for item in leftovers:
        if os.path.isdir(item.path) and not os.path.islink(item.path):
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            try:
                os.remove(item.path)
            except FileNotFoundError:
                continue
        freed += item.size
        log.debug("removed %s (%s leftover)", item.path, item.kind)
        parent = os.path.dirname(item.path)
        while os.path.basename(parent) == "_staging" or (item.kind == "uncommitted" and "=" in
                                                           os.path.basename(parent)):
            try:
                os.rmdir(parent)  # empty staging and partition folders go too
            except OSError:
                break
            parent = os.path.dirname(parent)
    return freed


def clean_source(lake: LakePaths, source: str, when: str) -> None:
    """Remove ``source``'s leftovers (``when``: "before" or "after" a run), logging what went."""
    leftovers = find_leftovers(lake, source)
    if not leftovers:
        return
    freed = remove_leftovers(leftovers)
    kinds = sorted({item.kind for item in leftovers})
    log.info("%s: removed %d leftovers (%s, %.1f MB) %s", source, len(leftovers), ", ".join(kinds), freed / 1e6,
             "of an interrupted earlier run" if when == "before" else "of commits that lost a race")


def _tables(lake: LakePaths, stage: str, source: str | None) -> list[str]:
    root = lake.stage_root(stage)
    folders = [os.path.join(root, source)] if source else _subdirs(root)
    return [table for folder in folders for table in _subdirs(folder)]


def _table_leftovers(table: str) -> list[Leftover]:
    found = []
    staging = os.path.join(table, "_staging")
    if os.path.isdir(staging):
        found += [Leftover(os.path.join(staging, n), "staging", _size(os.path.join(staging, n)))
                  for n in sorted(os.listdir(staging))]
    log_dir = os.path.join(table, "_delta_log")
    if not os.path.isdir(log_dir) and not found and not _only_data_files(table):
        return found  # not a Delta table, nor one whose first commit never happened
    named = _named_files(table, log_dir)
    for parent, dirs, files in os.walk(table):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
        for name in sorted(files):
            full = os.path.join(parent, name)
            if name.startswith(".") and name.endswith(".crc"):  # Hadoop's checksum of a data file beside it
                name = name[1:-4]
            data = os.path.relpath(os.path.join(parent, name), table).replace(os.sep, "/")
            if data.endswith(".parquet") and data not in named:
                found.append(Leftover(full, "uncommitted", os.path.getsize(full)))
    return found


def _only_data_files(folder: str) -> bool:
    """True when ``folder`` holds Parquet files and nothing but them (and their checksums): the data of a table's
    first commit that never happened (a killed run, or on a cloud lake a push cut before the log entry)."""
    seen = False
    for _parent, _dirs, files in os.walk(folder):
        for name in files:
            if not name.endswith((".parquet", ".parquet.crc")):
                return False
            seen = seen or name.endswith(".parquet")
    return seen


def _named_files(table: str, log_dir: str) -> set[str]:
    """Paths (relative to the table) every add or remove action in the log names, checkpoints included."""
    named: set[str] = set()
    if not os.path.isdir(log_dir):
        return named
    for name in os.listdir(log_dir):
        path = os.path.join(log_dir, name)
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith(('{"add"', '{"remove"')):
                        action = json.loads(line)
                        named.add(_relative(table, (action.get("add") or action.get("remove"))["path"]))
        elif ".checkpoint" in name and name.endswith(".parquet"):
            import pyarrow.parquet as pq

            columns = [c for c in ("add", "remove") if c in pq.read_schema(path).names]
            actions = pq.read_table(path, columns=columns)
            for column in columns:
                named.update(_relative(table, item["path"]) for item in actions.column(column).to_pylist() if item)
    return named


def _relative(table: str, path: str) -> str:
    """A log path as a path relative to the table (the log percent-encodes; absolute URIs are rare)."""
    if "://" in path or path.startswith("file:"):
        return os.path.relpath(unquote(urlparse(path).path), os.path.abspath(table)).replace(os.sep, "/")
    return unquote(path)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(p, f)) for p, _d, files in os.walk(path) for f in files)
