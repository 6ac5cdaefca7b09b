"""oea_core: lake paths, schemas, pseudonymization, Delta IO, ingestion, the gold layer and SQL views for OEA-style
lakes."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import moved
from .delta import DeltaRsStore, DeltaStore, SparkDeltaStore, WriteResult, delta_store, engine_name
from .errors import (
                     CommitConflictError,
                     DataQualityError,
                     DeltaEngineError,
                     DeltaTableError,
                     EdFiApiError,
                     FlowError,
                     GoldError,
                     IngestError,
                     KeyVaultError,
                     LakeLockError,
                     LakePathError,
                     LakeStorageError,
                     LandingError,
                     MissingExtraError,
                     ModuleNotFoundInCatalog,
                     NotebookRunError,
                     OEAError,
                     PublishError,
                     RejectedRowsError,
                     SaltError,
                     SchemaError,
                     SftpError,
                     SqlPreviewError,
                     StorageCredentialError,
                     SubmissionError,
                     UsageError,
)
from .gold import GoldResult, build_star, build_vault
from .intake.csv_ingest import CsvTableDef, ingest_csv_table
from .intake.landing import LandResult, land_folder
from .intake.sftp import RetryPolicy, SftpLandResult, SftpSource, land_sftp
from .lake.paths import STAGES, LakePaths
from .privacy.pseudonymize import pseudonym, to_lookup, to_pseudonymized
from .privacy.salt import Salt, get_salt
from .schema import ColumnSpec, PseudoOp, TableSchema, safe_column_name, safe_table_name
from .source_module import CliOption, IngestResult, ModuleDescriptor, NotebookStep, SourceModule
from .sources import SourceRegistry, sources
from .spark import get_spark
from .sql.preview import SqlPreview
from .sql.view_sets import view_set_script
from .sql.views import lake_database_ddl, views_script

if TYPE_CHECKING:
    from .district import DistrictExport, generate_district
    from .publish import PublishResult, publish_postgres
    from .submissions import (
                     PipelineConfig,
                     Submission,
                     SubmissionLimits,
                     SubmissionPipeline,
                     pipeline_config_schema,
                     submit_bundle,
                     watch_inbox,
    )

# Heavy optional parts load when first used: publishing (psycopg), submissions (jsonschema) and the district
# generator (both modules' generators). ``from oea_core import publish_postgres`` works as before.
_LAZY = {
    "DistrictExport": ".district", "generate_district": ".district",
    "PublishResult": ".publish", "publish_postgres": ".publish",
    **dict.fromkeys(("PipelineConfig", "Submission", "SubmissionLimits", "SubmissionPipeline",
                     "pipeline_config_schema", "submit_bundle", "watch_inbox"), ".submissions"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'oea_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


moved.install()

__all__ = [
                     "STAGES",
                     "CliOption",
                     "ColumnSpec",
                     "CommitConflictError",
                     "CsvTableDef",
                     "DataQualityError",
                     "DeltaEngineError",
                     "DeltaRsStore",
                     "DeltaStore",
                     "DeltaTableError",
                     "DistrictExport",
                     "EdFiApiError",
                     "FlowError",
                     "GoldError",
                     "GoldResult",
                     "IngestError",
                     "IngestResult",
                     "KeyVaultError",
                     "LakeLockError",
                     "LakePathError",
                     "LakePaths",
                     "LakeStorageError",
                     "LandResult",
                     "LandingError",
                     "MissingExtraError",
                     "ModuleDescriptor",
                     "ModuleNotFoundInCatalog",
                     "NotebookRunError",
                     "NotebookStep",
                     "OEAError",
                     "PipelineConfig",
                     "PseudoOp",
                     "PublishError",
                     "PublishResult",
                     "RejectedRowsError",
                     "RetryPolicy",
                     "Salt",
                     "SaltError",
                     "SchemaError",
                     "SftpError",
                     "SftpLandResult",
                     "SftpSource",
                     "SourceModule",
                     "SourceRegistry",
                     "SparkDeltaStore",
                     "SqlPreview",
                     "SqlPreviewError",
                     "StorageCredentialError",
                     "Submission",
                     "SubmissionError",
                     "SubmissionLimits",
                     "SubmissionPipeline",
                     "TableSchema",
                     "UsageError",
                     "WriteResult",
                     "build_star",
                     "build_vault",
                     "delta_store",
                     "engine_name",
                     "generate_district",
                     "get_salt",
                     "get_spark",
                     "ingest_csv_table",
                     "lake_database_ddl",
                     "land_folder",
                     "land_sftp",
                     "pipeline_config_schema",
                     "pseudonym",
                     "publish_postgres",
                     "safe_column_name",
                     "safe_table_name",
                     "sources",
                     "submit_bundle",
                     "to_lookup",
                     "to_pseudonymized",
                     "view_set_script",
                     "views_script",
                     "watch_inbox",
]
