"""Synapse pipeline templates: Microsoft's models accept them, references resolve, nothing drifts."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import stat
import sys
import types
import zipfile
from pathlib import Path

import pytest

from oea_core.cli import main
from oea_core.errors import OEAError
from oea_core.synapse import (
    SYNAPSE_SECRET_FILES,
    SYNAPSE_SECRETS,
    build_template,
    read_template,
    write_template,
)
from oea_core.synapse.notebooks import SYNAPSE_SETUP
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
    expected = {"LS_ADLS", "LS_SQL_Serverless"}  # no LS_SFTP: Clever's notebook lands from SFTP itself
    assert {p for p in arm["parameters"] if p.startswith("LS_")} == expected
    assert set(files["manifest.json"]["requires"]["linkedservices"]) == expected
    pool = next(r for r in arm["resources"] if r["type"].endswith("/bigDataPools"))
    assert pool["properties"]["customLibraries"][0]["name"] == WHEEL


_FUNCTIONS = {"if": lambda c, a, b: a if c else b, "equals": lambda a, b: a == b, "concat": lambda *a: "".join(a),
              "and": lambda *a: all(a), "not": lambda a: not a, "startsWith": lambda a, b: a.startswith(b)}


def evaluate(expression: str, parameters: dict, run_id: str = "run-1") -> object:
    """A pipeline expression's value: the functions the templates use, string literals and pipeline()."""
    assert expression.startswith("@"), expression
    text = expression[1:]

    def parse(pos: int) -> tuple[object, int]:
        while text[pos] == " ":
            pos += 1
        if text[pos] == "'":
            end = pos + 1
            while not (text[end] == "'" and text[end + 1:end + 2] != "'"):
                end += 2 if text[end] == "'" else 1
            return text[pos + 1:end].replace("''", "'"), end + 1
        name = re.match(r"\w+", text[pos:]).group()
        pos += len(name)
        assert text[pos] == "(", text[pos:]
        if name == "pipeline":
            member = re.match(r"\(\)\.(RunId|parameters\.(\w+))", text[pos:])
            return (run_id if member.group(1) == "RunId" else parameters[member.group(2)]), pos + member.end()
        args, pos = [], pos + 1
        while text[pos] != ")":
            value, pos = parse(pos)
            args.append(value)
            pos = pos + 1 if text[pos] == "," else pos
        return _FUNCTIONS[name](*args), pos + 1

    value, end = parse(0)
    assert end == len(text), text[end:]
    return value


CLEVER_PARAMETERS = {"landFrom": "test_data", "sftpUrl": "", "sourceContainer": "oea", "storageAccount": "acct01",
                     "sourceFolder": "test_data/clever"}


def test_clever_in_sftp_mode_lands_from_the_url_in_its_notebook_with_no_copy_activity():
    files = build_template("clever")
    pipeline = pipeline_of(files)
    activities = all_activities(pipeline["activities"])
    assert not [a for a in activities if a["type"] == "Copy"]
    assert pipeline["parameters"]["sftpUrl"] == {"type": "string", "defaultValue": ""}
    text = json.dumps(files)
    for gone in ("LS_SFTP", "sftp_folder", "SftpLocation", "SftpReadSettings", "inbox/"):
        assert gone not in text
    land = next(a for a in activities if a["name"] == "Land and ingest Clever")
    source = land["typeProperties"]["parameters"]["source_path"]["value"]
    assert source["type"] == "Expression"
    url = "sftp://clever@sftp.example.org:2222/exports"
    assert evaluate(source["value"], {**CLEVER_PARAMETERS, "landFrom": "sftp", "sftpUrl": url}) == url
    assert evaluate(source["value"], CLEVER_PARAMETERS) == "abfss://oea@acct01.dfs.core.windows.net/test_data/clever"
    assert land["dependsOn"] == [{"activity": "Check SFTP URL", "dependencyConditions": ["Succeeded"]}]


@pytest.mark.parametrize("land_from, url, stops", [("sftp", "", True), ("sftp", "/exports", True),
                                                   ("sftp", "sftp://u@h/exports", False), ("test_data", "", False)])
def test_an_sftp_run_without_an_sftp_url_stops_before_any_notebook(land_from, url, stops):
    check = next(a for a in pipeline_of(build_template("clever"))["activities"] if a["name"] == "Check SFTP URL")
    expression = check["typeProperties"]["expression"]["value"]
    assert evaluate(expression, {**CLEVER_PARAMETERS, "landFrom": land_from, "sftpUrl": url}) is stops
    fail = check["typeProperties"]["ifTrueActivities"][0]
    assert fail["type"] == "Fail" and "sftp://USER@HOST[:PORT]/PATH" in fail["typeProperties"]["message"]


def test_edfi_api_mode_is_unchanged_and_has_no_sftp_parameter():
    pipeline = pipeline_of(build_template("edfi"))
    assert "sftpUrl" not in pipeline["parameters"]
    land = next(a for a in pipeline["activities"] if a["name"] == "Land Ed-Fi")
    api = land["typeProperties"]["parameters"]["api_url"]["value"]["value"]
    assert evaluate(api, {"landFrom": "api", "apiUrl": "https://ods.example.org"}) == "https://ods.example.org"
    assert evaluate(api, {"landFrom": "test_data", "apiUrl": "https://ods.example.org"}) == ""


def setup_cells() -> list[tuple[str, str]]:
    """``(notebook, code of its Key Vault set-up cell)`` for every notebook of every module's template."""
    cells = []
    for module in MODULES:
        arm = build_template(module)[f"{module}_main_pipeline.json"]
        for res in arm["resources"]:
            if res["type"].endswith("/notebooks"):
                code = ["".join(c["source"]) for c in res["properties"]["cells"] if c["cell_type"] == "code"]
                cells.append((res["name"], code[1]))
    return cells


def test_every_setup_cell_reads_exactly_the_synapse_secrets():
    assert SYNAPSE_SECRETS == (("OEA_SALT", "oeaSalt"), ("OEA_EDFI_CLIENT_ID", "oeaEdFiClientId"),
                               ("OEA_EDFI_CLIENT_SECRET", "oeaEdFiClientSecret"),
                               ("OEA_SFTP_PASSWORD", "oeaSftpPassword"),
                               ("OEA_SFTP_KNOWN_HOSTS", "oeaSftpKnownHosts"))
    assert set(SYNAPSE_SECRET_FILES) == {"OEA_SFTP_KNOWN_HOSTS"}
    cells = setup_cells()
    assert len(cells) >= 5
    for name, code in cells:
        assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.walk(ast.parse(code))
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ("secrets", "files")}
        assert assigned == {"secrets": SYNAPSE_SECRETS, "files": SYNAPSE_SECRET_FILES}, name
        assert code == SYNAPSE_SETUP, name


def _run_setup_cell(monkeypatch, vault: dict[str, str], keyvault_name: str = "oea-kv") -> list[tuple[str, str]]:
    """Run the set-up cell with a fake ``notebookutils``; returns the ``(vault, secret)`` it asked for."""
    asked = []

    def get_secret(vault_name: str, secret: str) -> str:
        asked.append((vault_name, secret))
        if secret not in vault:
            raise RuntimeError(f"secret {secret} not found")
        return vault[secret]

    fake = types.ModuleType("notebookutils")
    fake.mssparkutils = types.SimpleNamespace(credentials=types.SimpleNamespace(getSecret=get_secret))
    monkeypatch.setitem(sys.modules, "notebookutils", fake)
    for env, _ in SYNAPSE_SECRETS:  # set, then removed: the undo then also removes what the cell sets
        monkeypatch.setenv(env, "")
        monkeypatch.delenv(env)
    exec(compile(SYNAPSE_SETUP, "setup cell", "exec"), {"keyvault_name": keyvault_name})  # noqa: S102
    return asked


def test_the_setup_cell_puts_each_secret_in_its_variable_and_known_hosts_in_a_private_file(monkeypatch, capsys):
    known_hosts = "sftp.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    vault = {"oeaSalt": "salt-value", "oeaEdFiClientId": "edfi-id", "oeaEdFiClientSecret": "edfi-secret",
             "oeaSftpPassword": "sftp-password", "oeaSftpKnownHosts": known_hosts}
    asked = _run_setup_cell(monkeypatch, vault)
    assert asked == [("oea-kv", secret) for _, secret in SYNAPSE_SECRETS]
    assert {env: os.environ[env] for env in ("OEA_SALT", "OEA_EDFI_CLIENT_ID", "OEA_EDFI_CLIENT_SECRET",
                                             "OEA_SFTP_PASSWORD")} == {
        "OEA_SALT": "salt-value", "OEA_EDFI_CLIENT_ID": "edfi-id", "OEA_EDFI_CLIENT_SECRET": "edfi-secret",
        "OEA_SFTP_PASSWORD": "sftp-password"}
    path = Path(os.environ["OEA_SFTP_KNOWN_HOSTS"])
    try:
        assert path.read_text(encoding="utf-8") == known_hosts
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        path.unlink()
    assert capsys.readouterr() == ("", "")  # nothing printed, least of all a secret


def test_the_setup_cell_skips_missing_secrets_and_does_nothing_without_a_vault(monkeypatch):
    asked = _run_setup_cell(monkeypatch, {"oeaSalt": "salt-value"})
    assert len(asked) == len(SYNAPSE_SECRETS)
    assert [env for env, _ in SYNAPSE_SECRETS if env in os.environ] == ["OEA_SALT"]
    assert _run_setup_cell(monkeypatch, {"oeaSalt": "salt-value"}, keyvault_name="") == []
    assert not [env for env, _ in SYNAPSE_SECRETS if env in os.environ]


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
