"""The source module contract: what every module (Clever, Ed-Fi, ...) is, and the descriptor that declares it.

A module is a ``SourceModule``: it lands an export into stage1np, ingests what is new into stage 2,
names the tables it writes for analysts, and closes the Spark session it started. Its
``ModuleDescriptor`` is the one place that declares the module's facts the tools need: its
notebooks in order (for ``oea run``, flows and Synapse), its Synapse pipeline parameters and
its extra command-line options. ``sources.py`` is the registry of descriptors.
"""

from __future__ import annotations

import abc
import argparse
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .delta import DeltaStore, delta_store, read_table
from .errors import LakePathError
from .lake.paths import LakePaths
from .privacy.salt import Salt, check_salt_fingerprint, get_salt
from .spark import get_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from typing_extensions import Self

DEFAULT_MAX_REJECT_SHARE = 0.05  # a batch with more rejected rows than this share is refused


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one table did."""

    table: str
    batches: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    rows: int = 0
    rejected: int = 0
    versions: dict[str, int | None] = field(default_factory=dict)
    kind: str = "ingested"  # "ingested": landed batches into a table; "refined": a table rebuilt from another

    @property
    def nothing_new(self) -> bool:
        return not self.batches

    def describe(self) -> str:
        """One line for the terminal: the table, what was written and what was set aside."""
        label = f"{self.table} ({self.kind})" if self.kind != "ingested" else self.table
        if self.nothing_new:
            return f"{label}: nothing new"
        if self.kind == "refined":
            return f"{label}: {self.rows} rows written, {self.rejected} set aside"
        return f"{label}: {len(self.batches)} batches, {self.rows} rows written, {self.rejected} rejected"


class Landed(Protocol):
    """What a ``land`` call returns: anything that can say, in one line, what it landed."""

    def summary(self) -> str: ...


class SourceModule(abc.ABC):
    """One source system's module over one lake: land, ingest, outputs, close.

    Subclasses set ``source`` and implement ``land``, ``ingest`` and ``outputs``; the Spark
    session, the Delta store, the salt check and ``read`` are shared here.
    """

    source: str = ""

    def __init__(self, lake: LakePaths | str | None = None, spark: SparkSession | None = None,
                 salt: Salt | None = None, engine: str | None = None) -> None:
        self.lake = lake if isinstance(lake, LakePaths) else LakePaths.from_setting(lake)
        self._spark = spark
        self._own_spark = False
        self._salt = salt
        self.engine = engine  # None: --engine / $OEA_ENGINE / the session's default (oea_core.delta)

    # the contract ------------------------------------------------------------------------------
    @abc.abstractmethod
    def land(self, src: str | os.PathLike[str] | None = None, *, batch_id: str | None = None) -> Landed:
        """Copy an export into ``stage1np/<source>/``; landing the same files again lands nothing."""

    @abc.abstractmethod
    def ingest(self, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
               batches: Collection[str] | None = None) -> list[IngestResult]:
        """Write every landed batch not yet written into stage 2, each judged on its own reject share; one result
        per table. With ``batches``, only those, and all or nothing: rejected, they leave every table as it was."""

    def batches_of(self, batch_id: str) -> list[str]:
        """The landed batch ids that a ``land(..., batch_id=batch_id)`` makes (this default: ``batch_id``)."""
        return [batch_id]

    def discard_batches(self, batches: Collection[str]) -> list[str]:
        """Remove the landed ``batches`` that reached no table from stage1np (a rejected submission's batch, so
        that the fixed bundle sent again is written once); the folders removed. This default removes nothing."""
        return []

    @abc.abstractmethod
    def outputs(self) -> list[tuple[str, str]]:
        """``(stage, table)`` of every table the module writes for analysts (the SQL views' tables)."""

    def close(self) -> None:
        """Stop the Spark session if this module started it (a session passed in is left running)."""
        if self._own_spark and self._spark is not None:
            self._spark.stop()
            self._spark, self._own_spark = None, False

    # shared members ----------------------------------------------------------------------------
    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            from pyspark.sql import SparkSession

            # close() stops only a session this module started, never one that was already running
            # (a notebook's, a test suite's, the platform's): get_spark() returns that one.
            self._own_spark = SparkSession.getActiveSession() is None
            self._spark = get_spark()
        return self._spark

    @property
    def store(self) -> DeltaStore:
        return delta_store(self.spark, self.engine)

    def salt(self) -> Salt:
        """The lake's salt: the one given to the module (checked against the lake), else ``get_salt``'s."""
        if self._salt is None:
            return get_salt(self.lake)  # checks the salt it finds against the lake's fingerprint
        check_salt_fingerprint(self.lake, self._salt)
        return self._salt

    def read(self, stage: str, table: str) -> DataFrame:
        """A module table as a Spark DataFrame, e.g. ``read("stage2p", "students")``."""
        return read_table(self.spark, self.lake.table(stage, self.source, table))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CliOption:
    """An extra option of one of a module's commands: ``add_argument(*flags, **kwargs)``."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value under."""
        if "dest" in self.kwargs:
            return str(self.kwargs["dest"])
        long = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return long.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(*self.flags, **self.kwargs)


class Pipeline:
    """Synapse pipeline expressions a descriptor's notebook steps use (a value starting with ``@`` is one)."""

    RUN_ID = "@pipeline().RunId"
    MAX_REJECT_SHARE = "@pipeline().parameters.maxRejectShare"
    ACCOUNT = "pipeline().parameters.storageAccount"
    SOURCE_ROOT = (f"concat('abfss://', pipeline().parameters.sourceContainer, '@', {ACCOUNT}, "
                   "'.dfs.core.windows.net/')")
    SOURCE_FOLDER = f"@concat({SOURCE_ROOT}, pipeline().parameters.sourceFolder)"
    SFTP_URL = "pipeline().parameters.sftpUrl"  # declared by the template of a module that lands from sftp


@dataclass(frozen=True)
class NotebookStep:
    """One of a module's notebooks, in the order the module runs them.

    ``takes``: the run's values ``oea run`` passes (``lake_path``, ``source_path``); ``synapse``: the
    values its Synapse pipeline passes for its other parameters. Every name must be a parameter the
    notebook declares (checked before it runs, and by the template validator).
    """

    path: str  # under notebooks/
    activity: str  # the activity's name in the Synapse pipeline
    takes: tuple[str, ...] = ("lake_path",)
    synapse: Mapping[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


Generator = Callable[[str, argparse.Namespace], str]  # (out folder, options) -> what was written, one line


@dataclass(frozen=True)
class ModuleDescriptor:
    """Everything the tools know about a module, declared once.

    - ``module``: the ``SourceModule`` class (called with ``lake=``, ``spark=``, ``salt=``, ``engine=``);
    - ``notebooks``: what ``oea run``, the Synapse template and the module's flow run, in order;
    - ``land_from``: where its Synapse pipeline can land from (``test_data``, ``sftp``, ``api``);
    - ``pipeline_parameters``: its Synapse pipeline's own parameters, beyond the common ones;
    - ``land_options`` / ``generate_options``: extra options of ``oea land <name>`` / ``oea generate <name>``,
      passed to ``land`` as keyword arguments / to ``generate`` in the namespace;
    - ``generate``: writes a synthetic export (``oea generate <name> OUT``), if the module has one.
    """

    name: str
    title: str
    module: Callable[..., SourceModule]
    notebooks: tuple[NotebookStep, ...] = ()
    land_from: tuple[str, ...] = ("test_data",)
    pipeline_parameters: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    land_options: tuple[CliOption, ...] = ()
    generate: Generator | None = None
    generate_options: tuple[CliOption, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise LakePathError(f"module name {self.name!r} must be lower-case letters, digits and _ "
                                "(it names lake folders, SQL databases and CLI commands)")

    def create(self, **kwargs: Any) -> SourceModule:
        """The module over ``lake=`` (and ``spark=``, ``salt=``, ``engine=``)."""
        return self.module(**kwargs)

    def land_kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        """The values of ``land_options`` in parsed ``args``, for ``land(**kwargs)``."""
        return {option.dest: getattr(args, option.dest) for option in self.land_options}
