"""Synapse pipeline templates: Microsoft's models accept them, references resolve, nothing drifts."""

from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

import pytest

from oea_core.cli import main
from oea_core.errors import OEAError
from oea_core.synapse import build_template, read_template, write_template
from oea_core.synapse.template import WHEEL, split_views_script
from oea_core.synapse.validate import validate_template

REPO = Path(__file__).parents[2]
NOTEBOOKS = str(REPO / "notebooks")
MODULES = ["clever", "edfi"]


def pipeline_of(files: dict) -> dict:
    arm = next(v for k, v in files.items() if k != "manifest.json")
    return next(r for r in arm["resources"] if r["type"].endswith("/pipelines"))["properties"]


def all_activities(activities: list[dict]) -> list[dict]:
    found = []
    for act in activities:
        found.append(act)
        for key in ("ifTrueActivities", "ifFalseActivities", "activities"):
            found += all_activities(act.get("typeProperties", {}).get(key, []))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_template_is_valid_against_the_synapse_models(module):
    from azure.synapse.artifacts import models

    files = build_template(module)
    assert validate_template(files, NOTEBOOKS) == []
    pipeline = models.PipelineResource.deserialize({"name": "p", "properties": copy.deepcopy(pipeline_of(files))})
    kinds = {type(a).__name__ for a in pipeline.activities}
    assert {"SynapseNotebookActivity", "IfConditionActivity"} <= kinds
    assert "Activity" not in kinds and "ExecutionActivity" not in kinds


@pytest.mark.parametrize("module", MODULES)
def test_committed_template_is_what_the_generator_writes(module, tmp_path):
    committed = REPO / "pipeline_templates" / module / f"{module}_pipeline_template.zip"
    assert read_template(str(committed)) == json.loads(json.dumps(build_template(module))), \
        f"regenerate with `oea synapse template {module}` and review"
    first = write_template(module, str(tmp_path / "a"))
    second = write_template(module, str(tmp_path / "b"))
    assert Path(first).read_bytes() == Path(second).read_bytes() == committed.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert sorted(archive.namelist()) == [f"{module}_main_pipeline/{module}_main_pipeline.json",
                                              f"{module}_main_pipeline/manifest.json"]


@pytest.mark.parametrize("module", MODULES)
def test_every_notebook_called_is_included_and_generated_from_the_repository(module):
    import nbformat

    files = build_template(module)
    arm = files[f"{module}_main_pipeline.json"]
    included = {r["name"].split("/")[-1][:-3]: r["properties"] for r in arm["resources"]
                if r["type"].endswith("/notebooks")}
    called = {a["typeProperties"]["notebook"]["referenceName"] for a in all_activities(pipeline_of(files)["activities"])
              if a["type"] == "SynapseNotebook"}
    assert called == set(included) and "OEA_lake_database" in called
    for name, notebook in included.items():
        path = next(Path(NOTEBOOKS).rglob(f"{name}.ipynb"))
        repo_code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        synapse_code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
        assert synapse_code[0].startswith(repo_code[0]) and "keyvault_name" in synapse_code[0]
        assert "mssparkutils.credentials.getSecret" in synapse_code[1]
        assert synapse_code[2:] == repo_code[1:]
        assert all(not c.get("outputs") for c in notebook["cells"])


@pytest.mark.parametrize("module", MODULES)
def test_parameters_and_linked_services_are_declared(module):
    files = build_template(module)
    pipeline = pipeline_of(files)
    used = set(re.findall(r"pipeline\(\)\.parameters\.(\w+)", json.dumps(pipeline)))
    assert used == set(pipeline["parameters"]) - {"__none__"}
    for name in ("storageAccount", "workspace", "sourceFolder", "sparkPool", "createS2pDb", "createS2npDb",
                 "createLakeDb", "landFrom"):
        assert name in pipeline["parameters"]
    arm = files[f"{module}_main_pipeline.json"]
    expected = {"clever": {"LS_ADLS", "LS_SQL_Serverless", "LS_SFTP"}, "edfi": {"LS_ADLS", "LS_SQL_Serverless"}}
    assert {p for p in arm["parameters"] if p.startswith("LS_")} == expected[module]
    assert set(files["manifest.json"]["requires"]["linkedservices"]) == expected[module]
    pool = next(r for r in arm["resources"] if r["type"].endswith("/bigDataPools"))
    assert pool["properties"]["customLibraries"][0]["name"] == WHEEL


def _mutations():
    def pipe(arm):
        return next(r for r in arm["resources"] if r["type"].endswith("/pipelines"))["properties"]

    def notebook_activity(arm):
        return next(a for a in pipe(arm)["activities"] if a["type"] == "SynapseNotebook")

    return [
        ("unknown activity type", lambda a: notebook_activity(a).__setitem__("type", "SynapseNotebok"),
         "generic Activity"),
        ("unknown nested property", lambda a: notebook_activity(a)["typeProperties"].__setitem__("sparkPol", 1),
         "'sparkPol' is unknown to the model"),
        ("unknown top-level property", lambda a: notebook_activity(a).__setitem__("bogus", 1), ("unknown to Synapse"
         "NotebookActivity: \\['bogus'\\]")),
        ("dangling dependsOn", lambda a: notebook_activity(a)["dependsOn"].append(
            {"activity": "Nope", "dependencyConditions": ["Succeeded"]}), "dependsOn 'Nope'"),
        ("undeclared parameter", lambda a: pipe(a)["parameters"].pop("workspace"),
         "pipeline\\(\\).parameters.workspace, which is not declared"),
        ("missing notebook", lambda a: a["resources"].pop(0), "is not in the template"),
        ("parameter the notebook lacks", lambda a: notebook_activity(a)["typeProperties"]["parameters"].__setitem__(
            "nope", {"value": 1, "type": "int"}), "passes \\['nope'\\]"),
        ("generic dataset", lambda a: next(r for r in a["resources"] if r["type"].endswith("/datasets"))[
            "properties"].__setitem__("type", "Binaryy"), "generic Dataset"),
        ("undeclared linked service", lambda a: a["parameters"].pop("LS_ADLS"), "is not a template parameter"),
        ("unknown cell property", lambda a: a["resources"][0]["properties"]["cells"][0].__setitem__(
            "execution_count", 1), "unknown to NotebookCell"),
        ("activity(...) of nothing", lambda a: notebook_activity(a)["typeProperties"]["parameters"]["lake_path"][
            "value"].__setitem__("value", "@activity('Ghost').output"), "activity\\('Ghost'\\)"),
    ]


@pytest.mark.parametrize("label, mutate, message", _mutations(), ids=[m[0] for m in _mutations()])
def test_the_validator_catches_each_kind_of_breakage(label, mutate, message):
    files = copy.deepcopy(build_template("clever"))
    mutate(files["clever_main_pipeline.json"])
    problems = validate_template(files, NOTEBOOKS)
    assert any(re.search(message, p) for p in problems), problems


def test_a_notebook_that_drifted_from_the_repository_is_caught(tmp_path):
    import shutil

    import nbformat

    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    files = build_template("clever", notebooks_dir=str(tmp_path / "notebooks"), views_sql="")
    path = tmp_path / "notebooks" / "clever" / "Clever_module_ingestion.ipynb"
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\nnew_setting = 1"
    nbformat.write(nb, path)
    assert any("has drifted" in p for p in validate_template(files, str(tmp_path / "notebooks")))


@pytest.mark.slow  # sqlfluff takes seconds per script
@pytest.mark.parametrize("module", MODULES)
def test_view_scripts_in_the_pipeline_parse_as_tsql_once_parameters_are_filled(module):
    import sqlfluff

    scripts = [s for a in all_activities(pipeline_of(build_template(module))["activities"]) if a["type"] == "Script"
               for s in a["typeProperties"]["scripts"]]
    committed = (REPO / "sql_views" / f"{module}_views.sql").read_text(encoding="utf-8")
    assert len(scripts) == sum(len(b) for _, b in split_views_script(committed))
    for script in scripts:
        text = (script["text"]["value"].replace("@{pipeline().parameters.storageAccount}", "acct01")
                .replace("@{pipeline().parameters.workspace}", "prod").replace("@@", "@"))
        assert "@{" not in text and "yourstorageaccount" not in text
        sqlfluff.parse(text + "\n", dialect="tsql")
    assert any("CREATE DATABASE [sdb_@{pipeline().parameters.workspace}_s2p_" in s["text"]["value"] for s in scripts)


def test_unknown_module_and_missing_notebook_say_what_to_do(tmp_path):
    with pytest.raises(OEAError, match="unknown source module 'nope'; known modules: clever, edfi"):
        build_template("nope")
    (tmp_path / "nb").mkdir()
    with pytest.raises(OEAError, match="runs notebook clever/Clever_module_ingestion.ipynb, which is not in"):
        build_template("clever", notebooks_dir=str(tmp_path / "nb"), views_sql="")


@pytest.mark.slow  # builds the wheel
def test_cli_writes_the_template_and_builds_the_wheel(tmp_path, capsys):
    assert main(["synapse", "template", "edfi", "--out", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "t" / "edfi" / "edfi_pipeline_template.zip")
    assert main(["synapse", "wheel", "--out", str(tmp_path / "dist")]) == 0
    wheel = Path(capsys.readouterr().out.strip())
    assert wheel.name == WHEEL
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"oea_core/edfi/metadata.csv", "oea_core/synapse/template.py", "oea_core/clever/module.py"} <= names
