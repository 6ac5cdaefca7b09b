"""Lake paths: the one place that knows where stages, sources and tables live.

A lake is either a folder on local disk (the embedded default) or an ADLS Gen2 storage
account whose containers are the stages, as in OEA. Everything else asks this module
for locations, so the same code runs on a laptop and on Synapse.

An ``abfss://`` lake set with ``--lake``/``OEA_LAKE`` gets a local working copy (``root``, under
``$OEA_CACHE``, default ``~/.cache/oea``): commands read and write the working copy, and
:mod:`oea_core.lake.cloud` keeps it in step with the account (see ``docs/lake.md``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LakePathError

if TYPE_CHECKING:
    from collections.abc import Mapping

STAGES = ("stage1np", "stage2np", "stage2p", "stage3np", "stage3p")
FRAMEWORK_CONTAINER = "oea-framework"
MANIFEST = "_manifest.json"  # each landed batch's file list and checksums
FINGERPRINT_FILE = "salt_fingerprint.json"  # in the lake's bookkeeping: LakePaths.state_path
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")
_ABFSS = re.compile(
    r"^abfss://(?P<container>[a-z0-9-]+)@(?P<account>[a-z0-9]{3,24})\.dfs\.core\.windows\.net(?P<path>/.*)?$")
DEFAULT_LAKE = "./lake"
CACHE_SETTING = "OEA_CACHE"


def cache_root(environ: Mapping[str, str] | None = None) -> str:
    """Where working copies of cloud lakes live: ``$OEA_CACHE``, else ``$XDG_CACHE_HOME/oea``, else ``~/.cache/oea``."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_SETTING):
        return str(Path(env[CACHE_SETTING]).expanduser().resolve())
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return str(Path(base, "oea").resolve())


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe lake name (source, table, batch); raise LakePathError if not."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise LakePathError(
            f"{what} {value!r} is not a valid lake name: use letters, digits, '_', '-', '.', '=' "
            "and do not start with '.' or '-'",
            path=str(value),
        )
    return value


@dataclass(frozen=True)
class AbfssUrl:
    """The parts of ``abfss://<container>@<account>.dfs.core.windows.net/<path>``; ``path`` has no leading ``/``."""

    container: str
    account: str
    path: str = ""


def parse_abfss(url: str) -> AbfssUrl:
    """Split an ``abfss://`` URL into container, account and path; LakePathError if it is not one."""
    match = _ABFSS.match(url)
    if not match:
        raise LakePathError(
            f"lake URL {url!r} is not of the form "
            "abfss://<container>@<account>.dfs.core.windows.net; fix --lake or OEA_LAKE",
            path=url,
        )
    return AbfssUrl(match.group("container"), match.group("account"), (match.group("path") or "").lstrip("/"))


@dataclass(frozen=True)
class LakePaths:
    """Where a lake lives: ``root`` is a local folder, ``account`` names an ADLS Gen2 account.

    With both, ``root`` is the account's local working copy (paths point into it); with only
    ``account`` (Synapse, where Spark opens abfss:// itself) paths are abfss:// URLs.
    """

    root: str | None = None
    account: str | None = None

    @classmethod
    def from_setting(cls, setting: str | os.PathLike[str] | None = None) -> LakePaths:
        """Build from ``--lake``/``OEA_LAKE``/``./lake`` (a folder or an ``abfss://`` URL)."""
        value = os.fspath(setting) if setting is not None else os.environ.get("OEA_LAKE") or DEFAULT_LAKE
        if value.startswith("abfss://"):
            account = parse_abfss(value).account
            return cls(root=os.path.join(cache_root(), "lakes", account), account=account)
        if "://" in value:
            raise LakePathError(
                f"lake {value!r} uses an unsupported scheme: give a local folder or an abfss:// URL",
                path=value,
            )
        return cls(root=str(Path(value).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        """A folder on this machine, not a cloud lake."""
        return self.account is None

    @property
    def is_cloud(self) -> bool:
        """An ADLS Gen2 account (with or without a local working copy)."""
        return self.account is not None

    @property
    def setting(self) -> str:
        """The ``--lake`` value that names this lake: the folder, or ``abfss://stage1np@<account>...``."""
        if self.account is not None:
            return f"abfss://stage1np@{self.account}.dfs.core.windows.net"
        return str(self.root)

    @property
    def shown(self) -> str:
        """How messages name the lake: its folder, or its storage account."""
        return f"storage account {self.account!r}" if self.account else str(self.root)

    def stage_root(self, stage: str) -> str:
        """The root of a stage: a folder locally, a container on ADLS."""
        if stage not in STAGES and stage != FRAMEWORK_CONTAINER:
            raise LakePathError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}", path=stage)
        if self.root is not None:
            return os.path.join(self.root, stage)
        return f"abfss://{stage}@{self.account}.dfs.core.windows.net"

    def path(self, stage: str, source: str, *parts: str) -> str:
        """``<stage>/<source>/<parts...>``, each name checked."""
        names = [check_name(source, "source")] + [check_name(p, "path part") for p in parts]
        if self.root is not None:
            return os.path.join(self.stage_root(stage), *names)
        return "/".join([self.stage_root(stage), *names])

    def table(self, stage: str, source: str, table: str) -> str:
        """Location of the Delta table ``<stage>/<source>/<table>``."""
        return self.path(stage, source, check_name(table, "table"))

    def state_path(self, *parts: str) -> str:
        """Bookkeeping that belongs to no stage (OEA's ``oea-framework`` container)."""
        names = [check_name(p, "state name") for p in parts]
        if self.root is not None:
            return os.path.join(self.stage_root(FRAMEWORK_CONTAINER), *names)
        return "/".join([self.stage_root(FRAMEWORK_CONTAINER), *names])

    @property
    def secret_file(self) -> str:
        """The per-lake salt file: beside the stages, never inside one. Local lakes only."""
        if self.root is None or self.account is not None:
            raise LakePathError(
                "an ADLS lake has no local secret file: set OEA_SALT or OEA_KEYVAULT_URL", path=self.account
            )
        return os.path.join(self.root, ".oea", "salt")

    def https_url(self, stage: str, source: str, table: str, account: str | None = None) -> str:
        """The ``https://<account>.dfs.core.windows.net/<stage>/<source>/<table>/`` form serverless SQL uses."""
        account = account or self.account
        if not account:
            raise LakePathError(
                "a storage account is needed to address the lake from serverless SQL: "
                "pass --storage-account or set OEA_STORAGE_ACCOUNT",
            )
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise LakePathError(
                f"storage account {account!r} is not valid: 3-24 lower-case letters and digits", path=account
            )
        parts = [stage, check_name(source, "source"), check_name(table, "table")]
        return f"https://{account}.dfs.core.windows.net/" + "/".join(parts) + "/"
