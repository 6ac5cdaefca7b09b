"""One registry shape: a second thing of one name is refused, an unknown name lists the known ones."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from oea_core.delta import DeltaEngines, DeltaRsStore, SparkDeltaStore, engines
from oea_core.errors import DeltaEngineError, FlowError, ModuleNotFoundInCatalog, OEAError, SubmissionError
from oea_core.flow import step_kinds
from oea_core.flow.steps import StepKinds
from oea_core.registry import Registry
from oea_core.sources import SourceRegistry, sources
from oea_core.submissions.pipelines import PipelineRegistry, pipelines


@dataclass(frozen=True)
class Thing:
    name: str
    size: int = 0


def test_a_second_thing_of_one_name_is_refused_and_the_first_kept():
    things = Registry[Thing]("thing")
    first = things.register(Thing("b", 1))
    assert first == Thing("b", 1)
    with pytest.raises(OEAError, match=r"^a thing named 'b' is already registered"):
        things.register(Thing("b", 2))
    assert things.get("b") is first and len(things) == 1


def test_an_unknown_name_lists_the_known_ones():
    things = Registry[Thing]("thing")
    for name in ("b", "a"):
        things.register(Thing(name))
    with pytest.raises(OEAError, match=r"^unknown thing 'c'; known: a, b$"):
        things.get("c")


def test_names_and_iteration_are_sorted_or_in_registration_order():
    by_name, in_order = Registry[Thing]("thing"), Registry[Thing]("thing", ordered=True)
    for name in ("b", "c", "a"):
        by_name.register(Thing(name))
        in_order.register(Thing(name))
    assert by_name.names() == ["a", "b", "c"] and [t.name for t in by_name] == ["a", "b", "c"]
    assert in_order.names() == ["b", "c", "a"] and [t.name for t in in_order] == ["b", "c", "a"]
    assert "a" in by_name and "d" not in by_name


def test_unregister_frees_the_name_and_iteration_survives_it():
    things = Registry[Thing]("thing")
    for name in ("a", "b"):
        things.register(Thing(name))
    for thing in things:
        things.unregister(thing.name)
    things.unregister("never")
    assert things.names() == [] and len(things) == 0
    things.register(Thing("a", 3))
    assert things.get("a").size == 3


def test_a_registry_raises_its_own_errors_and_keys_by_its_own_name():
    def twice(name: str) -> Exception:
        return KeyError(f"twice: {name}")

    def missing(name: str, known: list[str]) -> Exception:
        return LookupError(f"no {name} among {known}")

    sizes = Registry[Thing]("thing", key=lambda t: str(t.size), duplicate=twice, unknown=missing)
    sizes.register(Thing("a", 1))
    with pytest.raises(KeyError, match="twice: 1"):
        sizes.register(Thing("b", 1))
    with pytest.raises(LookupError, match=r"no 2 among \['1'\]"):
        sizes.get("2")


def test_each_registry_of_the_package_refuses_a_second_of_one_name():
    source_registry = SourceRegistry()
    source_registry.register(sources.get("clever"))
    with pytest.raises(OEAError, match="a source module named 'clever' is already registered"):
        source_registry.register(sources.get("clever"))

    kinds = StepKinds()
    kinds.register(type(step_kinds.get("sql")))
    with pytest.raises(FlowError, match="a step kind named 'sql' is already registered"):
        kinds.register(type(step_kinds.get("sql")))

    delta_engines = DeltaEngines()
    delta_engines.register(DeltaRsStore)
    with pytest.raises(DeltaEngineError, match="a Delta engine named 'delta-rs' is already registered") as info:
        delta_engines.register(DeltaRsStore)
    assert info.value.engine == "delta-rs"

    pipeline_registry = PipelineRegistry()
    pipeline_registry.register(pipelines.get("clever_ingress_v1"))
    with pytest.raises(SubmissionError, match="a submission pipeline named 'clever_ingress_v1' is already registered"):
        pipeline_registry.register(pipelines.get("clever_ingress_v1"))


def test_the_package_registries_refuse_a_second_registration_of_what_they_hold():
    with pytest.raises(OEAError, match="'edfi' is already registered"):
        sources.register(sources.get("edfi"))
    with pytest.raises(FlowError, match="'python' is already registered"):
        step_kinds.register(type(step_kinds.get("python")))
    with pytest.raises(DeltaEngineError, match="'spark-delta' is already registered"):
        engines.register(SparkDeltaStore)
    with pytest.raises(SubmissionError, match="'edfi_ingress_v1' is already registered"):
        pipelines.register(pipelines.get("edfi_ingress_v1"))
    assert sources.names() == ["clever", "edfi"] and step_kinds.names() == ["notebook", "sql", "python"]
    assert engines.names() == ["delta-rs", "spark-delta"]
    assert pipelines.names() == ["clever_ingress_v1", "edfi_ingress_v1"]


def test_each_registry_of_the_package_names_the_known_ones_for_an_unknown_name():
    with pytest.raises(ModuleNotFoundInCatalog, match=r"^unknown source module 'canvas'; known modules: clever, edfi$"):
        sources.get("canvas")
    with pytest.raises(FlowError, match=r"^unknown step kind 'shell'; registered kinds: notebook, sql, python$"):
        step_kinds.get("shell")
    with pytest.raises(DeltaEngineError, match=r"^unknown Delta engine 'polars' \(from --engine or \$OEA_ENGINE\); "
                                               r"known engines: delta-rs, spark-delta$"):
        engines.get("polars")
    with pytest.raises(SubmissionError, match=r"^unknown pipeline 'x_v1' in pipeline-config.json; known pipelines: "
                                              r"clever_ingress_v1, edfi_ingress_v1$"):
        pipelines.get("x_v1")
