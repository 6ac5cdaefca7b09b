"""The Ed-Fi module: land from an Ed-Fi ODS/API or export, apply upserts and deletes, refine."""

from ..errors import EdFiApiError
from .api import EdFiClient
from .descriptor import DESCRIPTOR
from .generator import EdFiDataset, generate_edfi, write_edfi_export
from .metadata import EdFiMetadata
from .module import EdFiModule

__all__ = ["DESCRIPTOR", "EdFiApiError", "EdFiClient", "EdFiDataset", "EdFiMetadata", "EdFiModule", "generate_edfi",
           "write_edfi_export"]
