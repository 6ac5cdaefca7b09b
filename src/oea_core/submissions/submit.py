"""One bundle, once: look it up by SHA-256, check it, extract it privately, run its pipeline, record the outcome.

Holding the lake's ``submissions`` lock (:mod:`oea_core.lake.lock`), :func:`submit_bundle`:

1. returns the recorded outcome, doing nothing else, when a bundle with the same SHA-256 was processed before;
2. checks every member's header and the config (:mod:`.bundle`, :mod:`.config`): a refused bundle writes
   nothing but its record;
3. extracts the data files into a private temporary folder and runs the pipeline with the batch id
   ``sub-<first 12 hex digits of the SHA-256>``, so a rerun after a crash lands and ingests the same batch;
4. records ``accepted``, or ``rejected`` with the reason when the data fails (a LandingError, an
   IngestError such as RejectedRowsError, a SchemaError or LakePathError): the lake is left as the module
   leaves it on failure. The record keeps the ``oea`` logger's lines of the run and the pipeline's summaries.

Other failures (the lake lock held by another run, storage or salt trouble, an interrupt) record nothing and
raise: the bundle is not at fault, and is processed again next time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import IngestError, LakePathError, LandingError, SchemaError, SubmissionError
from ..intake.landing import sha256_file
from ..lake.lock import lake_lock
from ..privacy.redaction import redact
from .bundle import SubmissionLimits, extract_bundle, inspect_bundle
from .config import parse_config
from .pipelines import PipelineRegistry, pipelines
from .records import read_record, record_path, records_synced, write_record

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
LOCK_NAME = "submissions"
REJECTING = (SubmissionError, LandingError, IngestError, SchemaError, LakePathError)
Status = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class Submission:
    """The outcome of one bundle: ``duplicate`` when it had been processed before (nothing was done now)."""

    bundle: str
    sha256: str
    status: Status
    reason: str | None
    pipeline: str | None
    batch_id: str
    record: str
    duplicate: bool = False
    summaries: tuple[str, ...] = field(default=())

    def line(self) -> str:
        """One line for the terminal."""
        head = f"bundle {self.bundle} (sha256 {self.sha256[:12]})"
        if self.duplicate:
            return (f"{head}: already submitted ({self.status}{': ' + self.reason if self.reason else ''}); "
                    f"nothing done. Record: {self.record}")
        if self.status == "accepted":
            return f"{head}: accepted by {self.pipeline} as batch {self.batch_id}. Record: {self.record}"
        return f"{head}: rejected: {self.reason}. Record: {self.record}"


def batch_id_of(sha256: str) -> str:
    """The batch id a bundle lands as: ``sub-`` and the first 12 hex digits of its SHA-256."""
    return f"sub-{sha256[:12]}"


class _Lines(logging.Handler):
    """Keeps the ``oea`` logger's lines (every thread's) while a pipeline runs, for the record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(redact(f"{record.levelname.lower()}: {record.getMessage()}"))


class _Forward(logging.Handler):
    """Passes on what the caller would have seen (records at its level or above) while the capture lowers it."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.level:
            logging.getLogger().handle(record)


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    """The ``oea`` logger's INFO lines and above, whatever level the terminal shows (``-q``, or none set)."""
    logger = logging.getLogger("oea")
    lines, shown_from = _Lines(), logger.getEffectiveLevel()
    level, propagate, forward = logger.level, logger.propagate, _Forward(shown_from)
    if shown_from > logging.INFO:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(forward)
    logger.addHandler(lines)
    try:
        yield lines.lines
    finally:
        logger.removeHandler(lines)
        logger.removeHandler(forward)
        logger.setLevel(level)
        logger.propagate = propagate


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def submit_bundle(lake: LakePaths, path: str | os.PathLike[str], *, limits: SubmissionLimits | None = None,
                  name: str | None = None, wait: float | None = None,
                  registry: PipelineRegistry = pipelines) -> Submission:
    """Process the bundle at ``path`` once (see the module docstring); ``name`` is how records and messages call
    it (default: its file name). Raises LakeLockError when another run holds the ``submissions`` lock longer
    than ``wait``, and, recording nothing, any error that is not the bundle's fault."""
    path = os.fspath(path)
    name = name or os.path.basename(path)
    limits = limits or SubmissionLimits.from_settings()
    sha256 = sha256_file(path)
    with lake_lock(lake, LOCK_NAME, f"submission {name}", wait=wait), records_synced(lake):
        previous = read_record(lake, sha256)
        if previous is not None:
            log.info("bundle %s (sha256 %s) was processed before (%s, %s); nothing to do", name, sha256[:12],
                     previous.get("status"), previous.get("finished"))
            return Submission(name, sha256, previous["status"], previous.get("reason"), previous.get("pipeline"),
                              previous.get("batch_id", batch_id_of(sha256)), record_path(lake, sha256), True,
                              tuple(previous.get("summaries", ())))
        return _process(lake, path, name, sha256, limits, registry)


def _process(lake: LakePaths, path: str, name: str, sha256: str, limits: SubmissionLimits,
             registry: PipelineRegistry) -> Submission:
    record: dict[str, Any] = {"sha256": sha256, "bundle": name, "path": os.path.abspath(path),
                              "bytes": os.path.getsize(path), "batch_id": batch_id_of(sha256), "received": _now(),
                              "pipeline": None, "options": None, "limits": vars(limits)}
    started = time.monotonic()
    summaries: list[str] = []
    status: Status = "accepted"
    reason = None
    with _captured() as lines:
        try:
            log.info("bundle %s (sha256 %s): checking it", name, sha256[:12])
            contents = inspect_bundle(path, limits)
            config = parse_config(contents.config, bundle=name, registry=registry)
            pipeline = registry.get(config.pipeline)
            record.update(pipeline=config.pipeline, options=dict(config.options), description=config.description,
                          members=contents.members, unpacked_bytes=contents.unpacked_bytes)
            log.info("bundle %s: %d data files for %s, batch %s", name, len(contents.data_files), pipeline.name,
                     record["batch_id"])
            with tempfile.TemporaryDirectory(prefix="oea-submission-") as private:  # mode 0700: this user's only
                os.mkdir(folder := os.path.join(private, "data"))
                extract_bundle(path, folder, limits)
                summaries = pipeline.run(lake, folder, batch_id=record["batch_id"], **config.options)
            for line in summaries:
                log.info("bundle %s: %s", name, line)
        except REJECTING as exc:
            status, reason = "rejected", redact(str(exc))
            log.warning("bundle %s rejected: %s", name, reason)
    record.update(status=status, reason=reason, summaries=summaries, log=lines, finished=_now(),
                  seconds=round(time.monotonic() - started, 3))
    written = write_record(lake, record)
    return Submission(name, sha256, status, reason, record["pipeline"], record["batch_id"], written, False,
                      tuple(summaries))

