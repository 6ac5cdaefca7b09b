"""Which dbt models a publish can build: those whose sources the lake holds.

A lake without Clever has no ``fact_digital_activity``, one with Ed-Fi students, schools and enrollments only
no ``fact_attendance``. Every source table of the dbt project (schema ``source``) that this publish does not
load is excluded from ``dbt build`` with everything downstream of it (``--exclude source:<s>.<t>+``: its
tests, the models built from it, theirs); each model left out is named with the tables it lacks, from dbt's
``manifest.json``, and dropped from dev's ``transformed`` so prod never keeps a report of data no longer there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import PublishError
from .load import SOURCE_SCHEMA


@dataclass(frozen=True)
class SkippedModel:
    """A model not built: the ``source`` tables it needs and the lake lacks, and its relation in dev."""

    model: str
    missing: tuple[str, ...]
    schema: str
    relation: str


def _yaml_files(project_dir: str) -> list[str]:
    with open(os.path.join(project_dir, "dbt_project.yml"), encoding="utf-8") as f:
        settings = yaml.safe_load(f) or {}
    found = []
    for folder in settings.get("model-paths") or ["models"]:
        for parent, dirs, names in sorted(os.walk(os.path.join(project_dir, str(folder)))):
            dirs.sort()
            found += [os.path.join(parent, n) for n in sorted(names) if n.endswith((".yml", ".yaml"))]
    return found


def project_sources(project_dir: str) -> dict[str, str]:
    """``table in schema source -> dbt selector`` (``source:star.fact_attendance``) of each source table the
    project's YAML declares in schema ``source``."""
    sources: dict[str, str] = {}
    for path in _yaml_files(project_dir):
        try:
            with open(path, encoding="utf-8") as f:
                document = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as exc:
            raise PublishError(f"{path} cannot be read as YAML ({str(exc).splitlines()[0]}): fix the dbt "
                               "project") from exc
        for source in (document.get("sources") or []) if isinstance(document, dict) else []:
            if not isinstance(source, dict) or str(source.get("schema", source.get("name"))) != SOURCE_SCHEMA:
                continue
            for table in source.get("tables") or []:
                if isinstance(table, dict) and table.get("name"):
                    sources[str(table.get("identifier", table["name"]))] = f"source:{source['name']}.{table['name']}"
    return sources


def exclusions(project_dir: str, present: set[str]) -> tuple[str, ...]:
    """The ``--exclude`` selectors of the project's source tables not in ``present`` (and all downstream)."""
    return tuple(f"{selector}+" for table, selector in sorted(project_sources(project_dir).items())
                 if table not in present)


def skipped_models(manifest_path: str, present: set[str]) -> tuple[SkippedModel, ...]:
    """The models of ``manifest.json`` built (directly or not) from a ``source`` table not in ``present``;
    () without a manifest (no build yet)."""
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return ()
    parents: dict[str, list[str]] = manifest.get("parent_map") or {}
    missing = {uid: str(s.get("identifier") or s.get("name")) for uid, s in (manifest.get("sources") or {}).items()
               if s.get("schema") == SOURCE_SCHEMA and str(s.get("identifier") or s.get("name")) not in present}
    skipped = []
    for uid, node in sorted((manifest.get("nodes") or {}).items()):
        if node.get("resource_type") != "model":
            continue
        seen, stack = set(), list(parents.get(uid, []))
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack += parents.get(parent, [])
        lacking = tuple(sorted({missing[p] for p in seen if p in missing}))
        if lacking:
            skipped.append(SkippedModel(str(node.get("name")), lacking, str(node.get("schema")),
                                        str(node.get("alias") or node.get("name"))))
    return tuple(sorted(skipped, key=lambda s: s.model))
