"""Check a pipeline template against Microsoft's own models (``azure-synapse-artifacts``).

Every resource must deserialize into its specific model type (no activity, dataset or setting
falls back to a generic base class, no property is unknown to the model), and every reference
(``dependsOn``, notebooks, datasets, linked services, pipeline and dataset parameters,
``activity('...')``) must resolve inside the template.
"""

from __future__ import annotations

import copy
import os
import re
from typing import TYPE_CHECKING, Any

from ..extras import require
from .notebooks import notebook_parameters

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.synapse.artifacts._serialization import Model

# a template's JSON objects (resources, activities, references), as json.load gives them
_Json = dict[str, Any]

_NAME = re.compile(r"^\[concat\(parameters\('workspaceName'\), '/([A-Za-z0-9_ -]+)'\)\]$")
_REF = re.compile(r"^\[concat\(variables\('workspaceId'\), '/(\w+)/([A-Za-z0-9_ -]+)'\)\]$")
_LS = re.compile(r"^\[parameters\('(\w+)'\)\]$")
_KINDS = {"pipelines", "notebooks", "datasets", "bigDataPools"}


def _models() -> dict[str, type[Model]]:
    models = require("azure.synapse.artifacts").models
    return {"pipelines": models.PipelineResource, "notebooks": models.NotebookResource,
            "datasets": models.DatasetResource, "bigDataPools": models.BigDataPoolResourceInfo}


def _walk_models(obj: object, where: str, problems: list[str]) -> None:
    """Flag generic base classes and properties the models do not know, anywhere in ``obj``."""
    from azure.synapse.artifacts._serialization import Model

    if isinstance(obj, Model):
        cls = type(obj)
        if cls.__dict__.get("_subtype_map"):
            problems.append(f"{where}: deserialized as the generic {cls.__name__} (type "
                            f"{getattr(obj, 'type', None)!r} is not a known specific type)")
        extra = getattr(obj, "additional_properties", None)
        if extra:
            problems.append(f"{where}: properties unknown to {cls.__name__}: {sorted(extra)}")
        for attr in cls._attribute_map:
            if attr != "additional_properties":
                _walk_models(getattr(obj, attr, None), f"{where}.{attr}", problems)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            label = getattr(item, "name", None) or i
            _walk_models(item, f"{where}[{label}]", problems)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _walk_models(value, f"{where}.{key}", problems)


def _lost_keys(given: object, kept: object, where: str, problems: list[str]) -> None:
    """Flag keys of the input that the model did not keep (nested properties it does not know)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                problems.append(f"{where}: property {key!r} is unknown to the model (dropped on deserializing)")
            else:
                _lost_keys(value, kept[key], f"{where}.{key}", problems)
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept)):
            _lost_keys(a, b, f"{where}[{i}]", problems)


def _strings(obj: object, found: list[str]) -> list[str]:
    if isinstance(obj, str):
        found.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _strings(value, found)
    elif isinstance(obj, list):
        for value in obj:
            _strings(value, found)
    return found


def _dict_refs(obj: object, ref_type: str, found: list[_Json]) -> list[_Json]:
    """Every ``{"referenceName": ..., "type": ref_type}`` object in ``obj``."""
    if isinstance(obj, dict):
        if obj.get("type") == ref_type and "referenceName" in obj:
            found.append(obj)
        for value in obj.values():
            _dict_refs(value, ref_type, found)
    elif isinstance(obj, list):
        for value in obj:
            _dict_refs(value, ref_type, found)
    return found


def _activity_lists(activities: list[_Json], where: str) -> Iterator[tuple[str, list[_Json]]]:
    """Each list of sibling activities (the top level, and inside IfCondition/ForEach/...)."""
    yield where, activities
    for act in activities:
        props = act.get("typeProperties", {})
        for key in ("ifTrueActivities", "ifFalseActivities", "activities"):
            if key in props:
                yield from _activity_lists(props[key], f"{where}/{act['name']}.{key}")


def validate_template(files: dict[str, _Json], notebooks_dir: str | None = None) -> list[str]:
    """Every problem found in a template's files (``manifest.json`` and the pipeline JSON); empty when valid."""
    problems: list[str] = []
    manifest = files.get("manifest.json")
    arms = {k: v for k, v in files.items() if k != "manifest.json"}
    if manifest is None or len(arms) != 1:
        return [f"a template holds manifest.json and one pipeline JSON (found {sorted(files)})"]
    (arm_name, arm), = arms.items()
    if not str(arm.get("$schema", "")).endswith("/2015-01-01/deploymentTemplate.json#"):
        problems.append(f"{arm_name}: $schema is not an ARM deployment template")
    arm_params = arm.get("parameters", {})
    if "workspaceName" not in arm_params:
        problems.append(f"{arm_name}: no workspaceName parameter")
    resources: dict[tuple[str, str], _Json] = {}
    for res in arm.get("resources", []):
        kind = res.get("type", "").removeprefix("Microsoft.Synapse/workspaces/")
        match = _NAME.match(res.get("name", ""))
        if kind not in _KINDS or not match:
            problems.append(f"{arm_name}: resource {res.get('name')!r} of type {res.get('type')!r} is not a "
                            f"workspace {', '.join(sorted(_KINDS))} resource named [concat(parameters('workspaceName'), '/...')]")
            continue
        resources[(kind, match.group(1))] = res
    linked_params: set[str] = set()
    models = _models()
    for (kind, name), res in resources.items():
        where = f"{kind}/{name}"
        body = {"name": name, "properties": copy.deepcopy(res["properties"])}  # msrest pops keys
        if kind == "bigDataPools":
            body["location"] = res.get("location")
        try:
            model = models[kind].deserialize(body)
        except Exception as error:  # noqa: BLE001 - the models raise several types; report any
            problems.append(f"{where}: does not deserialize as {models[kind].__name__}: {error}")
            continue
        _walk_models(model, where, problems)
        _lost_keys(body, model.serialize(keep_readonly=True), where, problems)
        for dep in res.get("dependsOn", []):
            dep_match = _REF.match(dep)
            if not dep_match or (dep_match.group(1), dep_match.group(2)) not in resources:
                problems.append(f"{where}: dependsOn {dep!r} is not a resource in the template")
        for ls in _dict_refs(res["properties"], "LinkedServiceReference", []):
            match = _LS.match(str(ls["referenceName"]))
            if not match or match.group(1) not in arm_params:
                problems.append(f"{where}: linked service {ls['referenceName']!r} is not a template parameter")
            else:
                linked_params.add(match.group(1))
        for ref in _dict_refs(res["properties"], "DatasetReference", []):
            ds = resources.get(("datasets", ref["referenceName"]))
            if ds is None:
                problems.append(f"{where}: dataset {ref['referenceName']!r} is not in the template")
                continue
            declared = set(ds["properties"].get("parameters", {}))
            given = set(ref.get("parameters", {}))
            if declared != given:
                problems.append(f"{where}: dataset {ref['referenceName']!r} takes parameters {sorted(declared)}, "
                                f"given {sorted(given)}")
        for ref in _dict_refs(res["properties"], "BigDataPoolReference", []):
            if isinstance(ref["referenceName"], str) and ("bigDataPools", ref["referenceName"]) not in resources:
                problems.append(f"{where}: Spark pool {ref['referenceName']!r} is not in the template")
        if kind == "datasets":
            declared = set(res["properties"].get("parameters", {}))
            for text in _strings(res["properties"], []):
                for used in re.findall(r"dataset\(\)\.(\w+)", text):
                    if used not in declared:
                        problems.append(f"{where}: uses dataset().{used}, which it does not declare")
        if kind == "pipelines":
            problems += _check_pipeline(where, res, resources, notebooks_dir)
    requires = set(manifest.get("requires", {}).get("linkedservices", {}))
    if requires != linked_params:
        problems.append(f"manifest.json: requires linked services {sorted(requires)}, the template uses "
                        f"{sorted(linked_params)}")
    unused = {p for p in arm_params if p.startswith("LS_")} - linked_params
    if unused:
        problems.append(f"{arm_name}: linked-service parameters {sorted(unused)} are not used")
    return list(dict.fromkeys(problems))


def _check_pipeline(where: str, res: _Json, resources: dict[tuple[str, str], _Json],
                    notebooks_dir: str | None) -> list[str]:
    problems: list[str] = []
    props = res["properties"]
    declared = set(props.get("parameters", {}))
    names_seen: set[str] = set()
    all_names: set[str] = set()
    for _, siblings in _activity_lists(props.get("activities", []), where):
        all_names.update(a["name"] for a in siblings)
    for place, siblings in _activity_lists(props.get("activities", []), where):
        local = {a["name"] for a in siblings}
        for act in siblings:
            if act["name"] in names_seen:
                problems.append(f"{place}: activity name {act['name']!r} is used twice")
            names_seen.add(act["name"])
            if len(act["name"]) > 55:
                problems.append(f"{place}: activity name {act['name']!r} is longer than 55 characters")
            for dep in act.get("dependsOn", []):
                if dep["activity"] not in local:
                    problems.append(f"{place}/{act['name']}: dependsOn {dep['activity']!r}, not an activity "
                                    "at the same level")
            if act["type"] == "SynapseNotebook":
                problems += _check_notebook_activity(f"{place}/{act['name']}", act, resources, notebooks_dir)
    for text in _strings(props, []):
        for used in re.findall(r"pipeline\(\)\.parameters\.(\w+)", text):
            if used not in declared:
                problems.append(f"{where}: uses pipeline().parameters.{used}, which is not declared")
        for used in re.findall(r"activity\('([^']+)'\)", text):
            if used not in all_names:
                problems.append(f"{where}: uses activity('{used}'), which is not an activity of the pipeline")
    return problems


def _check_notebook_activity(where: str, act: _Json, resources: dict[tuple[str, str], _Json],
                             notebooks_dir: str | None) -> list[str]:
    problems: list[str] = []
    ref = act["typeProperties"]["notebook"]["referenceName"]
    notebook = resources.get(("notebooks", ref))
    if notebook is None:
        return [f"{where}: notebook {ref!r} is not in the template"]
    cells = notebook["properties"]["cells"]
    source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])),
                  None)
    if source is None:
        return [f"{where}: notebook {ref!r} has no parameters cell"]
    declared = set(re.findall(r"^(\w+)\s*=", source, flags=re.MULTILINE))
    passed = set(act["typeProperties"].get("parameters", {}))
    if passed - declared:
        problems.append(f"{where}: passes {sorted(passed - declared)}, which notebook {ref!r} does not declare")
    if notebooks_dir:
        matches = [os.path.join(d, f) for d, _, fs in os.walk(notebooks_dir) for f in fs if f == f"{ref}.ipynb"]
        if len(matches) != 1:
            problems.append(f"{where}: notebook {ref!r} is not (exactly once) in {notebooks_dir}")
        elif set(notebook_parameters(matches[0])) | {"keyvault_name"} != declared:
            problems.append(f"{where}: the template's {ref!r} has drifted from {matches[0]}: regenerate it")
    return problems
