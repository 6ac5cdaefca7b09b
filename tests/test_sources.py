"""The module contract: the registry of descriptors, and each module's notebook order declared once."""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import pytest

from oea_core import ModuleDescriptor, ModuleNotFoundInCatalog, OEAError, SourceModule, sources
from oea_core.errors import LakePathError
from oea_core.flow import load_flow
from oea_core.notebook_run import notebook_parameters
from oea_core.source_module import CliOption
from oea_core.sources import SourceRegistry
from oea_core.synapse.template import build_template

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
MODULES = sources.names()


def test_the_registry_holds_one_descriptor_per_module():
    assert MODULES == ["clever", "edfi"]
    for descriptor in sources:
        module = descriptor.create(lake="/tmp/never-written")
        assert isinstance(module, SourceModule) and module.source == descriptor.name
        assert module.outputs(), descriptor.name
    with pytest.raises(ModuleNotFoundInCatalog, match="unknown source module 'canvas'; known modules: clever, edfi"):
        sources.get("canvas")


def test_a_second_module_of_one_name_and_a_bad_name_are_refused():
    registry = SourceRegistry()
    registry.register(sources.get("clever"))
    with pytest.raises(OEAError, match="'clever' is already registered"):
        registry.register(sources.get("clever"))
    with pytest.raises(LakePathError, match="must be lower-case"):
        ModuleDescriptor("Canvas-LMS", "Canvas", module=sources.get("clever").module)


def test_a_module_that_skips_part_of_the_contract_cannot_be_made():
    class Incomplete(SourceModule):
        source = "incomplete"

        def land(self, src=None, *, batch_id=None):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(lake="/tmp/never-written")


def test_cli_options_know_where_argparse_puts_them():
    parser = argparse.ArgumentParser()
    options = sources.get("edfi").land_options
    for option in options:
        option.add_to(parser)
    args = parser.parse_args(["--api", "http://x", "--resources", "students, schools", "--page-size", "7"])
    assert sources.get("edfi").land_kwargs(args) == {"api": "http://x", "resources": ["students", "schools"],
                                                     "page_size": 7}
    assert CliOption(("-n", "--max-rows")).dest == "max_rows"


def _flow_notebooks(flow_file: Path, group: str | None = None) -> list[str]:
    """The flow's notebook steps (of ``group``) in order, as paths under notebooks/; checks each follows the last."""
    flow = load_flow(flow_file)
    steps = [s for s in flow.steps.values() if s.kind == "notebook" and (group is None or s.group == group)]
    for before, after in itertools.pairwise(steps):
        assert before.name in after.depends_on, f"{flow_file.name}: {after.name} must follow {before.name}"
    return [os.path.relpath(s.target, NOTEBOOKS) for s in steps]


@pytest.mark.parametrize("name", MODULES)
def test_the_notebook_order_is_the_descriptors_in_flows_and_synapse(name):
    """The descriptor declares the order; `oea run` and the Synapse template read it, and the flow files are
    checked against it here."""
    order = [step.path for step in sources.get(name).notebooks]
    assert order, name
    assert _flow_notebooks(REPO / "flows" / f"{name}_flow.yaml") == order
    assert _flow_notebooks(REPO / "flows" / "main_flow.yaml", group=f"{name}_module") == order
    arm = build_template(name)[f"{name}_main_pipeline.json"]
    pipeline = next(r for r in arm["resources"] if r["type"].endswith("/pipelines"))
    activities = [a["typeProperties"]["notebook"]["referenceName"] for a in pipeline["properties"]["activities"]
                  if a["type"] == "SynapseNotebook"]
    assert activities == [Path(p).stem for p in order]


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_a_descriptor_passes_is_declared_by_its_notebook(name):
    for step in sources.get(name).notebooks:
        declared = notebook_parameters(str(NOTEBOOKS / step.path))
        passed = {*step.takes, *step.synapse, "lake_path"}  # keyvault_name: added to the Synapse copy
        assert passed <= set(declared), (step.path, passed - set(declared))
