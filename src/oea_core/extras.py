"""Optional packages: each is imported where it is needed, and its absence names the extra to install."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import MissingExtraError

if TYPE_CHECKING:
    from types import ModuleType

# package -> (extra of oea-core that installs it, what needs it)
EXTRAS = {
    "duckdb": ("preview", "the SQL preview (oea sql)"),
    "azure.identity": ("azure", "signing in to Azure (Key Vault secrets, an ADLS Gen2 lake)"),
    "azure.core.exceptions": ("azure", "telling Key Vault's errors apart (not found, forbidden, unreachable)"),
    "adlfs": ("azure", "an ADLS Gen2 lake (--lake abfss://...)"),
    "azure.keyvault.secrets": ("azure", "reading Key Vault secrets (the salt, a flow datasource's password)"),
    "azure.synapse.artifacts": ("synapse", "validating Synapse pipeline templates (oea synapse template)"),
    "graphviz": ("flows", "drawing flows (oea flow graph)"),
    "paramiko": ("sftp", "landing from an SFTP server (oea land clever sftp://...)"),
}


def require(package: str) -> ModuleType:
    """Import optional ``package`` (a key of ``EXTRAS``); MissingExtraError names the extra when it is missing."""
    extra, purpose = EXTRAS[package]
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs the {package.split('.')[0]} package, which is not installed: "
                                f"pip install 'oea-core[{extra}]' (or ./scripts/setup.sh, which installs "
                                "everything)") from None
