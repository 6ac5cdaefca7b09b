"""Synapse pipeline templates, generated from the module definitions so they cannot drift.

``build_template(module)`` returns the ARM deployment template Synapse's "Import from pipeline
template" takes (pipelines, notebooks, datasets and a Spark pool, with the linked services as
parameters) and its ``manifest.json``; ``write_template`` zips them after validating them.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import OEAError
from ..notebook_run import default_notebooks_dir
from ..source_module import ModuleDescriptor, Pipeline
from ..sources import sources
from .notebooks import notebook_parameters, synapse_notebook
from .validate import validate_template

SCHEMA = "https://schema.management.azure.com/schemas/2015-01-01/deploymentTemplate.json#"
API_VERSION = "2019-06-01-preview"
POOL = "spark3p5sm"
WHEEL = "oea_core-0.1.0-py3-none-any.whl"
LS_ADLS, LS_SQL = "LS_ADLS", "LS_SQL_Serverless"
LINKED_SERVICE_TYPES = {LS_ADLS: "AzureBlobFS", LS_SQL: "AzureSqlDatabase"}
ACCOUNT = Pipeline.ACCOUNT
LAKE_PATH = f"@concat('abfss://stage1np@', {ACCOUNT}, '.dfs.core.windows.net')"
_Json = dict[str, Any]  # an object of the template's JSON


@dataclass(frozen=True)
class _Notebook:
    """A notebook activity: its repository path and the values the pipeline passes."""

    activity: str
    path: str  # relative to notebooks/
    parameters: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


def _expr(value: str) -> _Json:
    return {"value": value, "type": "Expression"}


def _value(value: object) -> object:
    return _expr(value) if isinstance(value, str) and value.startswith("@") else value


def module_steps(descriptor: ModuleDescriptor) -> list[_Notebook]:
    """The module's notebook activities in order, from its descriptor (lake and Key Vault passed to each)."""
    common = {"lake_path": _expr(LAKE_PATH), "keyvault_name": _expr("@pipeline().parameters.keyVaultName")}
    return [_Notebook(step.activity, step.path, {**common, **{k: _value(v) for k, v in step.synapse.items()}})
            for step in descriptor.notebooks]


def linked_services(descriptor: ModuleDescriptor) -> list[str]:
    """The linked services a module's template asks for at import.

    None for SFTP: in ``sftp`` mode the notebook lands from the server itself (``oea_core.intake.sftp``, with the
    password and host key from Key Vault), so no Copy activity and no SFTP linked service are needed.
    """
    return [LS_ADLS, LS_SQL]


LAKE_DB_STEP = _Notebook("Create lake database", "oea/OEA_lake_database.ipynb", {
    "lake_path": _expr(LAKE_PATH), "module": "", "storage_account": _expr(f"@{ACCOUNT}"),
    "workspace": _expr("@pipeline().parameters.workspace"), "keyvault_name": _expr("@pipeline().parameters.keyVaultName"),
})


def _notebook_parameter(value: object) -> _Json:
    if isinstance(value, dict):
        return {"value": value, "type": "string"}
    if isinstance(value, bool):
        return {"value": value, "type": "bool"}
    if isinstance(value, int):
        return {"value": value, "type": "int"}
    if isinstance(value, float):
        return {"value": value, "type": "float"}
    return {"value": value, "type": "string"}


def _ls(name: str, **parameters: object) -> _Json:
    ref: _Json = {"referenceName": f"[parameters('{name}')]", "type": "LinkedServiceReference"}
    if parameters:
        ref["parameters"] = parameters
    return ref


def _notebook_activity(step: _Notebook, depends_on: list[_Json]) -> _Json:
    return {
        "name": step.activity, "type": "SynapseNotebook", "dependsOn": depends_on,
        "policy": {"timeout": "0.12:00:00", "retry": 0, "retryIntervalInSeconds": 30, "secureOutput": False,
                   "secureInput": False},
        "userProperties": [],
        "typeProperties": {
            "notebook": {"referenceName": step.name, "type": "NotebookReference"},
            "parameters": {k: _notebook_parameter(v) for k, v in step.parameters.items()},
            "sparkPool": {"referenceName": _expr("@pipeline().parameters.sparkPool"), "type": "BigDataPoolReference"},
        },
    }


def _after(*names: str) -> list[_Json]:
    return [{"activity": n, "dependencyConditions": ["Succeeded"]} for n in names]


def split_views_script(script: str) -> list[tuple[str, list[str]]]:
    """``(database, batches)`` in order from a views script: ``master`` batches and each database's."""
    groups: list[tuple[str, list[str]]] = []
    database = None
    for batch in re.split(r"^GO$", script, flags=re.MULTILINE):
        body = "\n".join(line for line in batch.strip().splitlines() if not line.startswith("--")).strip()
        use = re.fullmatch(r"USE \[([a-z0-9_]+)\];", body)
        if use:
            database = use.group(1)
            groups.append((database, []))
        elif body:
            if database is None:
                raise OEAError("a views script must start each database with USE [name]; regenerate it with "
                               "`oea views`")
            groups[-1][1].append(body)
    return [(db, batches) for db, batches in groups if batches]


def _interpolate(sql: str) -> _Json:
    """The batch as a pipeline string whose account and workspace come from the parameters."""
    text = sql.replace("@", "@@")
    text = text.replace("https://yourstorageaccount.", "https://@{pipeline().parameters.storageAccount}.")
    text = re.sub(r"\bsdb_dev_", "sdb_@{pipeline().parameters.workspace}_", text)
    return _expr(text)


def _sensitivity(database: str) -> str:
    """``p`` or ``np`` from a database name (``sdb_<ws>_s2p_<m>``) or a master batch that names one."""
    return "np" if re.search(r"_s[23]np_", database) else "p"


def _views_activities(views_sql: str, after: str) -> list[_Json]:
    """One IfCondition per sensitivity: create its databases on master, then the views in each."""
    groups = split_views_script(views_sql)
    activities = []
    for switch, sensitivity in (("createS2pDb", "p"), ("createS2npDb", "np")):
        inner: list[_Json] = []
        for database, batches in groups:
            target: str | _Json
            if database == "master":
                batches = [b for b in batches if _sensitivity(b) == sensitivity]
                name, target = f"Create {sensitivity} databases", "master"
            elif _sensitivity(database) == sensitivity:
                name, target = f"Create views in {database}", _interpolate(database)
            else:
                continue
            if not batches:
                continue
            if any(a["name"] == name for a in inner):
                name += f" ({len(inner) + 1})"
            inner.append({
                "name": name, "type": "Script", "dependsOn": _after(inner[-1]["name"]) if inner else [],
                "policy": {"timeout": "0.01:00:00", "retry": 1, "retryIntervalInSeconds": 30, "secureOutput": False,
                           "secureInput": False},
                "userProperties": [],
                "linkedServiceName": _ls(LS_SQL, DBName=target),
                "typeProperties": {"scripts": [{"type": "NonQuery", "text": _interpolate(b)} for b in batches],
                                   "scriptBlockExecutionTimeout": "02:00:00"},
            })
        activities.append({
            "name": f"If {switch}", "type": "IfCondition", "dependsOn": _after(after), "userProperties": [],
            "typeProperties": {"expression": _expr(f"@pipeline().parameters.{switch}"), "ifTrueActivities": inner},
        })
    return activities


def _sftp_url_check(after: str) -> _Json:
    """Stop an ``sftp`` run whose ``sftpUrl`` is not an ``sftp://`` URL, before any notebook starts."""
    return {
        "name": "Check SFTP URL", "type": "IfCondition", "dependsOn": _after(after), "userProperties": [],
        "typeProperties": {
            "expression": _expr(f"@and(equals(pipeline().parameters.landFrom, 'sftp'), "
                                f"not(startsWith({Pipeline.SFTP_URL}, 'sftp://')))"),
            "ifTrueActivities": [{
                "name": "SFTP URL missing", "type": "Fail", "dependsOn": [], "userProperties": [],
                "typeProperties": {
                    # the URL is not echoed: a mistyped one may hold a password
                    "message": "landFrom is sftp, so set sftpUrl to sftp://USER@HOST[:PORT]/PATH (the password "
                               "and the host key come from the Key Vault secrets oeaSftpPassword and "
                               "oeaSftpKnownHosts)",
                    "errorCode": "400"}}]}}


def _pipeline(pipeline: ModuleDescriptor, views_sql: str) -> _Json:
    m = pipeline.name
    activities: list[_Json] = [{
        "name": "Check source folder", "type": "IfCondition", "dependsOn": [], "userProperties": [],
        "typeProperties": {
            "expression": _expr("@equals(pipeline().parameters.landFrom, 'test_data')"),
            "ifTrueActivities": [
                {"name": "Source folder metadata", "type": "GetMetadata", "dependsOn": [], "userProperties": [],
                 "policy": {"timeout": "0.00:10:00", "retry": 0, "retryIntervalInSeconds": 30,
                            "secureOutput": False, "secureInput": False},
                 "typeProperties": {
                     "dataset": {"referenceName": f"DS_{m}_adls_folder", "type": "DatasetReference",
                                 "parameters": {"fileSystem": _expr("@pipeline().parameters.sourceContainer"),
                                                "directory": _expr("@pipeline().parameters.sourceFolder")}},
                     "fieldList": ["exists"],
                     "storeSettings": {"type": "AzureBlobFSReadSettings", "recursive": True},
                     "formatSettings": {"type": "BinaryReadSettings"}}},
                {"name": "Stop when the source folder is missing", "type": "IfCondition",
                 "dependsOn": _after("Source folder metadata"), "userProperties": [],
                 "typeProperties": {
                     "expression": _expr("@not(activity('Source folder metadata').output.exists)"),
                     "ifTrueActivities": [{
                         "name": "Source folder missing", "type": "Fail", "dependsOn": [], "userProperties": [],
                         "typeProperties": {
                             "message": _expr("@concat('no folder ', pipeline().parameters.sourceFolder, ' in "
                                              "container ', pipeline().parameters.sourceContainer, ': upload the "
                                              f"module test data (test_data/{m}) there, or set sourceFolder')"),
                             "errorCode": "404"}}]}},
            ]}}]
    last = "Check source folder"
    if "sftp" in pipeline.land_from:
        activities.append(_sftp_url_check(last))
        last = "Check SFTP URL"
    for step in module_steps(pipeline):
        activities.append(_notebook_activity(step, _after(last)))
        last = step.activity
    lake_db = _Notebook(LAKE_DB_STEP.activity, LAKE_DB_STEP.path, {**LAKE_DB_STEP.parameters, "module": m})
    activities.append({
        "name": "If createLakeDb", "type": "IfCondition", "dependsOn": _after(last), "userProperties": [],
        "typeProperties": {"expression": _expr("@pipeline().parameters.createLakeDb"),
                           "ifTrueActivities": [_notebook_activity(lake_db, [])]}})
    activities += _views_activities(views_sql, last)
    default_folder = f"test_data/{m}"
    parameters = {
        "storageAccount": {"type": "string", "defaultValue": "yourstorageaccount"},
        "workspace": {"type": "string", "defaultValue": "dev"},
        "sparkPool": {"type": "string", "defaultValue": POOL},
        "landFrom": {"type": "string", "defaultValue": "test_data"},
        **({"sftpUrl": {"type": "string", "defaultValue": ""}} if "sftp" in pipeline.land_from else {}),
        "sourceContainer": {"type": "string", "defaultValue": "oea"},
        "sourceFolder": {"type": "string", "defaultValue": default_folder},
        "keyVaultName": {"type": "string", "defaultValue": ""},
        "maxRejectShare": {"type": "float", "defaultValue": 0.05},
        "createLakeDb": {"type": "bool", "defaultValue": True},
        "createS2pDb": {"type": "bool", "defaultValue": True},
        "createS2npDb": {"type": "bool", "defaultValue": True},
        **pipeline.pipeline_parameters,
    }
    return {
        "description": f"{pipeline.title}: land ({' or '.join(pipeline.land_from)}), ingest with the module "
                       "notebooks, then create the lake database and the serverless SQL views. "
                       "Generated by `oea synapse template`.",
        "activities": activities,
        "parameters": parameters,
        "folder": {"name": f"OEA/{m}"},
        "annotations": ["oea", m],
    }


def _dataset_folder(m: str) -> _Json:
    return {"linkedServiceName": _ls(LS_ADLS), "parameters": {"fileSystem": {"type": "string"},
                                                              "directory": {"type": "string"}},
            "annotations": [], "folder": {"name": f"OEA/{m}"}, "type": "Binary",
            "typeProperties": {"location": {"type": "AzureBlobFSLocation",
                                            "fileSystem": _expr("@dataset().fileSystem"),
                                            "folderPath": _expr("@dataset().directory")}}}


def _resource(kind: str, name: str, properties: _Json, depends_on: list[str]) -> _Json:
    return {"name": f"[concat(parameters('workspaceName'), '/{name}')]",
            "type": f"Microsoft.Synapse/workspaces/{kind}", "apiVersion": API_VERSION,
            "properties": properties, "dependsOn": depends_on}


def _ref(kind: str, name: str) -> str:
    return f"[concat(variables('workspaceId'), '/{kind}/{name}')]"


def build_template(module: str, notebooks_dir: str | None = None,
                   views_sql: str | None = None) -> dict[str, dict[str, Any]]:
    """``{"manifest.json": ..., "<pipeline>.json": ...}`` for a module's pipeline template.

    ``views_sql`` defaults to the committed ``sql_views/<module>_views.sql`` next to the notebooks,
    whose typed views ``oea run`` writes from the sample lake.
    """
    pipeline = sources.get(module)
    if not pipeline.notebooks:
        raise OEAError(f"module {module} declares no notebooks, and a Synapse pipeline runs a module's notebooks: "
                       "add them to its descriptor (see docs/adding_a_module.md)")
    notebooks_dir = notebooks_dir or default_notebooks_dir()
    if views_sql is None:
        path = os.path.join(os.path.dirname(os.path.abspath(notebooks_dir)), "sql_views", f"{module}_views.sql")
        if not os.path.exists(path):
            raise OEAError(f"no views script {path}: run `oea run` (or `oea views {module}`) first")
        with open(path, encoding="utf-8") as handle:
            views_sql = handle.read()
    name = f"{module}_main_pipeline"
    pool_ref = _ref("bigDataPools", POOL)
    resources = []
    steps = [*module_steps(pipeline), LAKE_DB_STEP]
    for step in steps:
        path = os.path.join(notebooks_dir, step.path)
        if not os.path.exists(path):
            raise OEAError(f"the {module} pipeline runs notebook {step.path}, which is not in {notebooks_dir}")
        resources.append(_resource("notebooks", step.name, synapse_notebook(path, POOL, f"OEA/{module}"), [pool_ref]))
    datasets = {f"DS_{module}_adls_folder": _dataset_folder(module)}
    for ds_name, props in datasets.items():
        resources.append(_resource("datasets", ds_name, props, []))
    resources.append({
        "name": f"[concat(parameters('workspaceName'), '/{POOL}')]", "type": "Microsoft.Synapse/workspaces/bigDataPools",
        "apiVersion": "2021-06-01", "location": "[parameters('location')]",
        "properties": {"autoPause": {"enabled": True, "delayInMinutes": 15},
                       "autoScale": {"enabled": True, "minNodeCount": 3, "maxNodeCount": 6},
                       "nodeSize": "Small", "nodeSizeFamily": "MemoryOptimized", "sparkVersion": "3.5",
                       "sessionLevelPackagesEnabled": True,
                       "customLibraries": [{"name": WHEEL, "path": f"libraries/{WHEEL}", "containerName": "prep",
                                            "type": "whl"}]},
        "dependsOn": []})
    pipeline_resource = _resource("pipelines", name, _pipeline(pipeline, views_sql),
                                  [_ref("notebooks", s.name) for s in steps] + [_ref("datasets", d) for d in datasets])
    resources.append(pipeline_resource)
    parameters = {"workspaceName": {"type": "string", "metadata": "Workspace name"},
                  "location": {"type": "string", "defaultValue": "[resourceGroup().location]",
                               "metadata": "Region of the Spark pool"}}
    for ls in linked_services(pipeline):
        parameters[ls] = {"type": "string", "metadata": f"{LINKED_SERVICE_TYPES[ls]} linked service"}
    arm = {"$schema": SCHEMA, "contentVersion": "1.0.0.0", "parameters": parameters,
           "variables": {"workspaceId": "[concat('Microsoft.Synapse/workspaces/', parameters('workspaceName'))]"},
           "resources": resources}
    manifest = {
        "name": f"OEA {pipeline.title}",
        "description": pipeline_resource["properties"]["description"],
        "image": "",
        "icons": [],
        "requires": {"linkedservices": {ls: {"supportTypes": [LINKED_SERVICE_TYPES[ls]]}
                                        for ls in linked_services(pipeline)}},
        "author": "oea-core",
        "annotations": ["OEA", pipeline.name],
        "services": ["Azure Synapse Analytics", "Azure Data Lake Storage Gen2"],
        "categories": ["Education"],
        "documentation": "docs/synapse.md",
    }
    return {"manifest.json": manifest, f"{name}.json": arm}


def template_path(module: str, out_dir: str) -> str:
    return os.path.join(out_dir, module, f"{module}_pipeline_template.zip")


def write_template(module: str, out_dir: str = "pipeline_templates", notebooks_dir: str | None = None) -> str:
    """Validate and write ``<out_dir>/<module>/<module>_pipeline_template.zip``; returns its path."""
    files = build_template(module, notebooks_dir)
    problems = validate_template(files, notebooks_dir or default_notebooks_dir())
    if problems:
        raise OEAError(f"the generated {module} template is not valid:\n  " + "\n  ".join(problems))
    path = template_path(module, out_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    folder = f"{module}_main_pipeline"
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, doc in files.items():
            info = zipfile.ZipInfo(f"{folder}/{filename}", date_time=(2020, 1, 1, 0, 0, 0))  # reproducible
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_template(path: str) -> dict[str, dict[str, Any]]:
    """The files of a template zip, by file name."""
    with zipfile.ZipFile(path) as archive:
        folders = {name.split("/", 1)[0] for name in archive.namelist()}
        if len(folders) != 1:
            raise OEAError(f"{path} must hold one folder with manifest.json and the pipeline (found {sorted(folders)})")
        return {name.split("/", 1)[1]: json.loads(archive.read(name)) for name in archive.namelist()
                if not name.endswith("/")}


__all__ = ["build_template", "linked_services", "module_steps", "notebook_parameters", "read_template",
           "write_template"]
