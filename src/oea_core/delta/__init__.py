"""Delta table IO: one contract (:class:`DeltaStore`), two engines, chosen by name.

- ``spark-delta``: Delta Lake's own Spark writer (:class:`SparkDeltaStore`), what Synapse and
  Databricks run; the default in any session oea did not start that has Delta.
- ``delta-rs``: Spark writes Parquet, delta-rs commits it (:class:`DeltaRsStore`); works in any
  session.

The engine is ``oea --engine NAME``, else ``$OEA_ENGINE``, else the default above; on oea's local
session the default is :data:`LOCAL_DEFAULT`, the faster one in ``benchmarks/results/clever.md``.
Both engines write tables the other (and any Delta reader) reads and appends to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import DeltaEngineError
from ..registry import Registry
from .base import DeltaStore, Staged, WriteMode, WriteResult, collect_arrow
from .rs import DeltaRsStore
from .spark_delta import SparkDeltaStore, spark_has_delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENGINE_SETTING = "OEA_ENGINE"
# The local session's default engine: the faster at 5M rows in benchmarks/results/clever.md.
LOCAL_DEFAULT = "delta-rs"
# Set by oea_core.spark on the sessions it starts; any other session is the platform's (Synapse, Databricks).
EMBEDDED_CONF = "spark.oea.embedded"


class DeltaEngines(Registry[type[DeltaStore]]):
    """The Delta engines by name (sorted); a second engine of one name is an error, an unknown name
    raises DeltaEngineError naming the known ones."""

    def __init__(self) -> None:
        super().__init__("Delta engine", duplicate=lambda name: DeltaEngineError(
            f"a Delta engine named {name!r} is already registered; give the new engine another name", engine=name),
            unknown=lambda name, known: DeltaEngineError(
                f"unknown Delta engine {name!r} (from --engine or ${ENGINE_SETTING}); known engines: "
                f"{', '.join(known)}", engine=name))


engines = DeltaEngines()
engines.register(SparkDeltaStore)
engines.register(DeltaRsStore)


def engine_name(spark: SparkSession, requested: str | None = None) -> str:
    """The engine to use: ``requested``, else ``$OEA_ENGINE``, else the session's default."""
    name = requested or os.environ.get(ENGINE_SETTING) or ""
    if name:
        engines.get(name)
        return name
    embedded = (spark.conf.get(EMBEDDED_CONF, "false") or "false") == "true"
    if not embedded:
        return SparkDeltaStore.name if spark_has_delta(spark) else DeltaRsStore.name
    return LOCAL_DEFAULT if LOCAL_DEFAULT == DeltaRsStore.name or spark_has_delta(spark) else DeltaRsStore.name


def read_table(spark: SparkSession, path: str) -> DataFrame:
    """A Delta table as the platform reads it: ``spark.read.format("delta")`` where the session has
    Delta (Synapse, Databricks, oea's local session), else the files delta-rs lists.

    Raises DeltaTableError when there is no table at ``path``.
    """
    return (SparkDeltaStore(spark) if spark_has_delta(spark) else DeltaRsStore(spark)).read(path)


def delta_store(spark: SparkSession, engine: str | None = None) -> DeltaStore:
    """The Delta engine for ``spark`` (see :func:`engine_name`)."""
    return engines.get(engine_name(spark, engine))(spark)


__all__ = [
    "ENGINE_SETTING", "LOCAL_DEFAULT", "DeltaEngines", "DeltaRsStore", "DeltaStore", "SparkDeltaStore", "Staged",
    "WriteMode", "WriteResult", "collect_arrow", "delta_store", "engine_name", "engines", "read_table",
    "spark_has_delta",
]
