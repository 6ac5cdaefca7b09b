"""The Ed-Fi module: land (API or files) -> ingest (current state) -> refine (pseudonymized flat tables).

Outputs:
- ``stage1np/edfi/<namespace>/<resource>/<batch>/``: landed JSON, as received;
- ``stage2np/edfi/<resource>``: the current version of every record (raw JSON, upserts and deletes applied);
- ``stage2p/edfi/<entity>``: flattened, typed and pseudonymized, one table per resource and per array;
- ``stage2np/edfi/<entity>_lookup``: identifiers next to their pseudonyms (students, staffs);
- ``stage2np/edfi/<resource>_rejected`` / ``_not_refined``: what could not be read, with the reason.
- ``stage2np/edfi/<resource>_tombstones``: every delete, so a late upsert of a deleted record is ignored.
- ``stage2np/edfi/<resource>_key_changes``: every key change (a natural key rewritten), and whether it was applied.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import TYPE_CHECKING

from ..errors import LandingError
from ..lake.cloud import open_cloud
from ..lake.lock import LANDING, source_run
from ..schema import PseudoOp
from ..source_module import DEFAULT_MAX_REJECT_SHARE, IngestResult, SourceModule
from . import landing
from .api import DEFAULT_PAGE_SIZE, EdFiClient
from .ingest import SOURCE, ingest_app_id, ingest_resource, resource_table
from .metadata import EdFiMetadata, is_descriptor, table_name
from .openapi import entity_columns, latest_openapi
from .refine import refine_resource

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from pyspark.sql import DataFrame, SparkSession

    from ..lake.paths import LakePaths
    from ..privacy.salt import Salt

log = logging.getLogger("oea")
PARALLEL_SETTING = "OEA_PARALLEL"  # resources ingested or refined at a time
# Descriptors that the supported resources use; landed from the API by default with them.
DESCRIPTORS = (
    "academicSubjectDescriptors", "addressTypeDescriptors", "attendanceEventCategoryDescriptors",
    "classroomPositionDescriptors", "courseIdentificationSystemDescriptors", "educationOrganizationCategoryDescriptors",
    "electronicMailTypeDescriptors", "entryTypeDescriptors", "exitWithdrawTypeDescriptors", "gradeLevelDescriptors",
    "gradeTypeDescriptors", "gradingPeriodDescriptors", "localEducationAgencyCategoryDescriptors",
    "schoolCategoryDescriptors", "sexDescriptors", "stateAbbreviationDescriptors", "termDescriptors",
)


class EdFiModule(SourceModule):
    """Land, ingest, refine and query the Ed-Fi module's tables in one lake."""

    source = SOURCE

    def __init__(self, lake: LakePaths | str | None = None, spark: SparkSession | None = None,
                 salt: Salt | None = None, engine: str | None = None, metadata: EdFiMetadata | str | None = None) -> None:
        super().__init__(lake, spark, salt, engine)
        self.metadata = metadata if isinstance(metadata, EdFiMetadata) else EdFiMetadata.load(metadata)

    def supported_resources(self) -> list[str]:
        return [*self.metadata.resources(), *DESCRIPTORS]

    # land ----------------------------------------------------------------------------------------
    def land(self, src: str | os.PathLike[str] | None = None, *, batch_id: str | None = None, api: str | None = None,
             client: EdFiClient | None = None, resources: list[str] | None = None,
             page_size: int = DEFAULT_PAGE_SIZE) -> landing.EdFiLandResult:
        """Land an export folder ``src``, or from the API at ``api`` (credentials from the environment).

        From the API, ``resources`` defaults to every resource the API lists (all are refined).
        """
        if src is not None and (client is not None or api):
            raise LandingError("give either an Ed-Fi export folder or --api URL, not both")
        if client is not None or api:
            client = client or EdFiClient(str(api), page_size=page_size)
            with source_run(self.lake, SOURCE, "edfi land", stages=LANDING):
                return landing.land_api(self.lake, client, resources, batch_id=batch_id)
        if src is None:
            raise LandingError("give an Ed-Fi export folder, or --api URL to land from an Ed-Fi API")
        with source_run(self.lake, SOURCE, "edfi land", stages=LANDING):
            return landing.land_files(self.lake, os.fspath(src), batch_id=batch_id)

    # ingest and refine ---------------------------------------------------------------------------
    def ingest(self, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, refine: bool = True, *,
               batches: Collection[str] | None = None) -> list[IngestResult]:
        """Apply every new landed batch to the current-state tables, each judged on its own reject share, then
        refine (unless ``refine=False``). With ``batches``, only those, and every resource's part of them is
        judged before any is applied: rejected, they leave every table as it was."""
        if self.lake.account is None and not landing.landed_resources(self.lake):
            return []  # nothing landed in a local lake: no lock taken, no folder made (a cloud lake: pulled first)
        with source_run(self.lake, SOURCE, "edfi ingest"):
            landed = landing.landed_resources(self.lake)
            if not landed:
                return []
            store = self.store
            log.info("edfi ingest with the %s Delta engine", store.name)

            def ingest(check_only: bool) -> list[IngestResult]:
                return [result for found in _each("checked" if check_only else "ingested", landed,
                                                  lambda namespace, resource: [ingest_resource(
                                                      self.spark, self.lake, store, namespace, resource,
                                                      max_reject_share=max_reject_share, batches=batches,
                                                      check_only=check_only)])
                        for result in found]

            if batches is not None:
                ingest(check_only=True)
            results = ingest(check_only=False)
            if refine:
                results += self.refine(max_reject_share=max_reject_share)
            return results

    def batches_of(self, batch_id: str) -> list[str]:
        """The landed batches of a ``land(..., batch_id=batch_id)``: ``batch_id`` and ``<batch_id>_<rundate>``."""
        return sorted({b for namespace, resource in landing.landed_resources(self.lake)
                       for b in landing.batches(self.lake, namespace, resource)
                       if b == batch_id or b.startswith(f"{batch_id}_")})

    def discard_batches(self, batches: Collection[str]) -> list[str]:
        """Remove the landed ``batches`` from stage1np where no current-state table holds them; the folders."""
        with source_run(self.lake, SOURCE, "edfi discard", stages=LANDING):
            removed = []
            for namespace, resource in landing.landed_resources(self.lake):
                state_path = self.lake.table("stage2np", SOURCE, resource_table(namespace, resource))
                for batch_id in batches:
                    folder = os.path.join(landing.resource_root(self.lake, namespace, resource), batch_id)
                    if not os.path.isdir(folder) or self.store.exists(state_path) and self.store.applied(
                            state_path, ingest_app_id(namespace, resource, batch_id)):
                        continue
                    shutil.rmtree(folder)
                    removed.append(folder)
            return removed

    def refine(self, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> list[IngestResult]:
        """Bring the refined tables of every landed resource up to its current state (declared or not)."""
        if self.lake.account is None and not landing.landed_resources(self.lake):
            return []
        results = []
        with source_run(self.lake, SOURCE, "edfi refine"):
            landed = landing.landed_resources(self.lake)
            if not landed:
                return []
            salt = self.salt()
            store = self.store
            document = latest_openapi(self.lake)
            api_types = entity_columns(document) if document else None
            undeclared = [resource for _, resource in landed if not self.metadata.supports(resource)]
            results = [result for found in _each("refined", landed, lambda namespace, resource: refine_resource(
                self.spark, self.lake, store, self.metadata, namespace, resource, salt,
                max_reject_share=max_reject_share, api_types=api_types)) for result in found]
        if undeclared:
            log.info("refined by the privacy rules (not in the metadata CSV): %s", ", ".join(undeclared))
        return results

    # outputs -------------------------------------------------------------------------------------
    def outputs(self) -> list[tuple[str, str]]:
        """``(stage, table)`` of every refined table and lookup (for SQL views).

        Once refined, the tables that exist (every resource is refined, declared or not, and an
        entity without rows has no table); before, every table the metadata CSV declares.
        """
        declared = []
        for resource in self.supported_resources():
            for entity in self.metadata.entities_of(resource):
                schema = self.metadata.schema(entity)
                declared.append(("stage2p", schema.table))
                if schema.with_ops(PseudoOp.HASH):
                    declared.append(("stage2np", f"{schema.table}_lookup"))
        if self.lake.account and self.lake.root:  # a cloud lake: what the account holds, not the working copy
            existing = open_cloud(self.lake).table_folders(SOURCE)
        elif self.lake.root is None:  # the Synapse form: no listing here
            return declared
        else:
            existing = {(stage, name) for stage in ("stage2p", "stage2np")
                        if os.path.isdir(folder := self.lake.path(stage, SOURCE))
                        for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name, "_delta_log"))}
        refined = {(stage, t) for stage, t in existing if stage == "stage2p" or t.endswith("_lookup")}
        # the declared tables in the metadata's order, then the others by name
        return [t for t in declared if t in refined] + sorted(refined - set(declared)) if refined else declared

    def current(self, resource: str) -> DataFrame:
        """The current state of a resource (``stage2np/edfi/<resource>``)."""
        return self.read("stage2np", table_name(resource))


def _each(done: str, resources: list[tuple[str, str]],
          work: Callable[[str, str], list[IngestResult]]) -> list[list[IngestResult]]:
    """``work(namespace, resource)`` for every resource, ``$OEA_PARALLEL`` (default 4) at a time, in order.

    Resources are independent tables, so while one waits on a Delta commit or a small Spark job
    another runs: on a few cores this is most of the gain on many small resources. Every resource
    is tried; the first failure (in resource order) is raised after the others finish, each
    resource's own work being atomic.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, int(os.environ.get(PARALLEL_SETTING, "4") or 4))
    started = time.monotonic()

    def timed(number: int, namespace: str, resource: str) -> list[IngestResult]:
        begun = time.monotonic()
        found = work(namespace, resource)
        rows = sum(r.rows for r in found)
        log.info("[%d/%d] %s %s: %d rows in %.1f s", number, len(resources), resource, done, rows,
                 time.monotonic() - begun)
        return found

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oea-edfi") as pool:
        futures = [pool.submit(timed, number, namespace, resource)
                   for number, (namespace, resource) in enumerate(resources, start=1)]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    log.info("edfi: %d resources %s in %.1f s", len(resources), done, time.monotonic() - started)
    return [f.result() for f in futures]


__all__ = ["DESCRIPTORS", "EdFiModule", "is_descriptor"]
