"""``pipeline-config.json``: which pipeline handles a bundle, and its options, checked at one boundary.

The JSON Schema is built from the pipeline registry (:mod:`.pipelines`), one ``options`` schema per
pipeline, and shipped as ``schemas/pipeline-config.schema.json`` (a test keeps the file equal to
:func:`pipeline_config_schema`; ``oea submit --print-schema`` prints it). :func:`parse_config` turns the
bytes into a frozen :class:`PipelineConfig`, or raises a SubmissionError that names the field at fault.
A config nested more than 32 deep is refused before the schema sees it, and a reason echoes only a short
prefix of a bad value (:func:`~.bundle.clipped`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SubmissionError
from .bundle import CONFIG_NAME, clipped
from .pipelines import PipelineRegistry, pipelines

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jsonschema import ValidationError

SCHEMA_ID = "https://oea-core.local/schemas/pipeline-config.schema.json"
_MAX_LISTED = 10
MAX_DEPTH = 32  # arrays and objects inside each other; a config needs three or four
_MAX_MESSAGE = 300
_MAX_KEY = 60


@dataclass(frozen=True)
class PipelineConfig:
    """A bundle's pipeline (a registered name) and its options (checked against the pipeline's schema)."""

    pipeline: str
    options: Mapping[str, Any]
    description: str = ""


def pipeline_config_schema(registry: PipelineRegistry = pipelines) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``pipeline-config.json`` for every registered pipeline."""
    names = registry.names()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "pipeline-config.json of an oea submission bundle",
        "description": "Names the pipeline that handles the bundle's data files, and its options. "
                       "See docs/pipeline-config.md.",
        "type": "object",
        "required": ["pipeline"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string", "description": "this schema's URL, for editors"},
            "pipeline": {"enum": names, "description": "a registered pipeline and its version"},
            "options": {"type": "object", "description": "what the pipeline takes; see its definition below"},
            "description": {"type": "string", "maxLength": 1000, "description": "free text, kept in the record"},
        },
        "allOf": [{"if": {"properties": {"pipeline": {"const": name}}, "required": ["pipeline"]},
                   "then": {"properties": {"options": {"$ref": f"#/$defs/{name}"}}}} for name in names],
        "$defs": {p.name: {"description": p.description, **p.options_schema} for p in registry},
    }


def schema_text(registry: PipelineRegistry = pipelines) -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(pipeline_config_schema(registry), indent=2) + "\n"


def _field(path: Any) -> str:
    parts = [str(part) for part in path]
    return ".".join(part if len(part) <= _MAX_KEY else part[:_MAX_KEY] + "…" for part in parts) or "(the top level)"


def _depth(document: Any) -> int:
    """How deep arrays and objects nest in ``document`` (walked without recursion)."""
    deepest, todo = 0, [(document, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def _message(error: ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = "option" if list(error.absolute_path) == ["options"] else "field"
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        return (f"{_field(error.absolute_path)}: unknown {where}{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(clipped, unknown[:3]))}{more}; allowed: {', '.join(allowed) or 'none'}")
    # jsonschema's messages quote the whole bad value: keep a prefix of it
    text = error.message.replace(repr(error.instance), clipped(error.instance))
    text = text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"
    return f"{_field(error.absolute_path)}: {text}"


def parse_config(raw: bytes, *, bundle: str | None = None, registry: PipelineRegistry = pipelines
                 ) -> PipelineConfig:
    """The config in ``raw``; SubmissionError when it is not UTF-8 JSON, names an unknown pipeline, or fails the
    schema (every problem listed with its field, e.g. ``options.max_reject_share``)."""
    where = f"{CONFIG_NAME} of bundle {bundle}" if bundle else CONFIG_NAME
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8",
                              bundle=bundle, member=CONFIG_NAME) from exc
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              bundle=bundle, member=CONFIG_NAME) from exc
    except RecursionError:  # json's parser gives up on deep nesting this way
        document = None
        depth = MAX_DEPTH + 1
    else:
        depth = _depth(document)
    if depth > MAX_DEPTH:
        raise SubmissionError(f"{where} nests arrays or objects more than {MAX_DEPTH} deep: a pipeline config is an "
                              "object of a few plain fields (see docs/pipeline-config.md)", bundle=bundle,
                              member=CONFIG_NAME)
    name = document.get("pipeline") if isinstance(document, dict) else None
    if isinstance(name, str) and len(repr(name)) == len(clipped(name)):  # a long one: the schema's message, clipped
        registry.get(name)  # unknown: one line listing the known pipelines
    import jsonschema  # imported here: it takes seconds to load (its format checkers), and most runs need none

    validator = jsonschema.Draft202012Validator(pipeline_config_schema(registry))
    errors = sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        listed = "; ".join(_message(e) for e in errors[:_MAX_LISTED])
        raise SubmissionError(f"{where} does not match schemas/pipeline-config.schema.json: {listed} "
                              "(see docs/pipeline-config.md)", bundle=bundle, member=CONFIG_NAME)
    return PipelineConfig(document["pipeline"], dict(document.get("options", {})), document.get("description", ""))
