"""The pipelines a bundle's ``pipeline-config.json`` may name: name -> module, options schema, and run.

Each pipeline lands the bundle's data files into its source module as one batch and ingests them
(``with sources.create(...) as source: source.land(folder, batch_id=...); source.ingest(...)``). Its
options schema (``additionalProperties: false``) is part of ``schemas/pipeline-config.schema.json``
(:func:`oea_core.submissions.config.pipeline_config_schema`), so an option it does not take is refused
before it runs. A new pipeline (or a new version of one: ``clever_ingress_v2``) is one ``register`` line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RejectedRowsError, SubmissionError
from ..registry import Registry
from ..source_module import DEFAULT_MAX_REJECT_SHARE
from ..sources import sources

if TYPE_CHECKING:
    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
# (lake, folder of the data files, batch id, **options) -> summary lines (what was landed and ingested)
PipelineRun = Callable[..., list[str]]

MAX_REJECT_SHARE = {
    "type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_MAX_REJECT_SHARE,
    "description": "reject the bundle, writing nothing of it, when more than this share of its own rows in any "
                   "one table cannot be read (other batches are judged by their own)",
}


@dataclass(frozen=True)
class SubmissionPipeline:
    """A registered pipeline: its ``name`` (``<what>_v<version>``), the source module it feeds, the JSON Schema
    of its ``options``, and the function that runs it."""

    name: str
    module: str
    description: str
    options_schema: Mapping[str, Any]
    run: PipelineRun


class PipelineRegistry(Registry[SubmissionPipeline]):
    """Submission pipelines by name (sorted); a second one of one name, and an unknown name, are a
    SubmissionError (the latter listing the known ones)."""

    def __init__(self) -> None:
        super().__init__("submission pipeline", duplicate=lambda name: SubmissionError(
            f"a submission pipeline named {name!r} is already registered; give the new one another name (or "
            "version: _v2)"), unknown=lambda name, known: SubmissionError(
            f"unknown pipeline {name!r} in pipeline-config.json; known pipelines: {', '.join(known)}"))


def _ingress(module: str) -> PipelineRun:
    """Land ``folder`` into ``module`` as batch ``batch_id``, then ingest what is new."""

    def run(lake: LakePaths, folder: str, *, batch_id: str,
            max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> list[str]:
        with sources.create(module, lake=lake) as source:
            lines = [f"{module} land: {source.land(folder, batch_id=batch_id).summary()}"]
            own = source.batches_of(batch_id)  # only the bundle's own batches, judged by its own options
            try:
                results = source.ingest(max_reject_share=max_reject_share, batches=own)
            except RejectedRowsError:
                for removed in source.discard_batches(own):  # nothing of them was written; the bundle is kept
                    log.info("removed the rejected batch %s", removed)
                raise
            lines += [f"{module} ingest: {result.describe()}" for result in results]
        return lines

    return run


def _options(**properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": dict(properties)}


pipelines = PipelineRegistry()
pipelines.register(SubmissionPipeline(
    "clever_ingress_v1", "clever", "Clever Participation Reports (CSV, as `oea land clever` takes them): land as one "
    "batch, then ingest into stage2np/stage2p", _options(max_reject_share=MAX_REJECT_SHARE), _ingress("clever")))
pipelines.register(SubmissionPipeline(
    "edfi_ingress_v1", "edfi", "an Ed-Fi export (JSON, as `oea land edfi FOLDER` takes it): land (one batch per "
    "rundate), then ingest and refine into stage2np/stage2p", _options(max_reject_share=MAX_REJECT_SHARE),
    _ingress("edfi")))
