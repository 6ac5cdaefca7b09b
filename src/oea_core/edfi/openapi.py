"""The Ed-Fi API's OpenAPI document: landed with the data, and read as the columns of the flattened tables.

``land_api`` stores the API's Resources document (Swagger 2 or OpenAPI 3) at
``stage1np/edfi/_openapi/<batch>/openapi.json``, its ``_manifest.json`` written last, so a cloud
lake syncs it like a batch and a half-written copy is never read. A landing whose document is the
same as the newest stored one stores nothing. The folder's name starts with ``_``, so it is never
taken for a namespace to ingest.

:func:`entity_columns` reads a document as the entities and columns :func:`.flatten.flatten_record`
makes of that API's records, typed as Spark SQL types.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import TYPE_CHECKING

from ..errors import LandingError
from ..intake.landing import MANIFEST
from ..lake.paths import check_name
from .flatten import DROPPED, EXT, ORDINAL, REFERENCE, reference_column

if TYPE_CHECKING:
    from ..lake.paths import LakePaths
    from .api import EdFiClient

log = logging.getLogger("oea")
FOLDER = "_openapi"
DOCUMENT = "openapi.json"
_HTTP_METHODS = ("get", "post", "put")


def openapi_root(lake: LakePaths) -> str:
    return lake.path("stage1np", "edfi", FOLDER)


def stored_batches(lake: LakePaths) -> list[str]:
    """Batch ids of the stored documents, oldest first (only those whose manifest was written)."""
    root = openapi_root(lake)
    if not os.path.isdir(root):
        return []
    return sorted(b for b in os.listdir(root)
                  if not b.startswith(("_", ".")) and os.path.exists(os.path.join(root, b, MANIFEST)))


def latest_openapi(lake: LakePaths) -> dict | None:
    """The newest OpenAPI document landed from the Ed-Fi API, or None before the first."""
    found = stored_batches(lake)
    if not found:
        return None
    with open(os.path.join(openapi_root(lake), found[-1], DOCUMENT), encoding="utf-8") as handle:
        return json.load(handle)


def land_openapi(lake: LakePaths, client: EdFiClient, batch_id: str) -> str | None:
    """Store the API's Resources document as batch ``batch_id``; its folder, or None when the API has
    none or it is the same as the newest stored one. Raises LandingError when that batch exists."""
    document = client.openapi_document()
    if document is None:
        return None
    payload = json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")
    digest = hashlib.sha256(payload).hexdigest()
    root = openapi_root(lake)
    newest = stored_batches(lake)[-1:]
    if newest and _manifest(root, newest[0]).get("sha256") == digest:
        log.info("the Ed-Fi API's OpenAPI document is unchanged since batch %s; not stored again", newest[0])
        return None
    final = os.path.join(root, check_name(batch_id, "batch id"))
    if os.path.exists(final):
        raise LandingError(f"the OpenAPI document's batch {batch_id} already exists at {final}: use a new batch id",
                           path=final)
    temp = os.path.join(root, f"_landing_{batch_id}")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    try:
        with open(os.path.join(temp, DOCUMENT), "wb") as handle:
            handle.write(payload)
        with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump({"batch_id": batch_id, "source": "edfi", "kind": "openapi", "url": client.base_url,
                       "sha256": digest, "files": [{"path": DOCUMENT, "sha256": digest}]}, handle, indent=1)
        os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    log.info("stored the Ed-Fi API's OpenAPI document in stage1np/edfi/%s/%s", FOLDER, batch_id)
    return final


def _manifest(root: str, batch_id: str) -> dict:
    with open(os.path.join(root, batch_id, MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)


# reading a document --------------------------------------------------------------------------
def entity_columns(doc: dict) -> dict[tuple[str, str], dict[str, str]]:
    """``{(namespace, entity): {column: Spark SQL type}}`` for every resource of an OpenAPI document.

    Entities and columns are those :func:`.flatten.flatten_record` makes of the resource's records:
    ``("ed-fi", "students")``, ``("ed-fi", "students_addresses")`` (keyed by ``id`` and
    ``addresses_ordinal``); a resource of another namespace keeps it: ``("tpdm", "candidates")``.
    """
    out: dict[tuple[str, str], dict[str, str]] = {}
    for path, operations in (doc.get("paths") or {}).items():
        parts = path.strip("/").split("/")
        if len(parts) != 2 or "{" in path or not isinstance(operations, dict):
            continue
        schema = _resource_schema(doc, operations)
        if schema is None:
            continue
        namespace, resource = parts
        entities: dict[str, dict[str, str]] = {}
        _entity(doc, resource, schema, {"id": "string"}, entities)
        out.update({(namespace, entity): columns for entity, columns in entities.items()})
    return out


def _resource_schema(doc: dict, operations: dict) -> dict | None:
    """The record schema of a resource path: its GET answer's items, else its POST or PUT body."""
    for method in _HTTP_METHODS:
        operation = operations.get(method)
        if not isinstance(operation, dict):
            continue
        if method == "get":
            answer = (operation.get("responses") or {}).get("200") or {}
            schema = answer.get("schema") or _content_schema(answer)
            schema = _resolve(doc, schema or {})
            if schema.get("type") == "array":
                return _resolve(doc, schema.get("items") or {})
            continue
        body = next((p.get("schema") for p in operation.get("parameters") or [] if p.get("in") == "body"), None)
        body = body or _content_schema(operation.get("requestBody") or {})
        if body:
            return _resolve(doc, body)
    return None


def _content_schema(part: dict) -> dict | None:
    """OpenAPI 3: the JSON schema of a response or request body."""
    content = part.get("content") or {}
    media: object = content.get("application/json") or next(iter(content.values()), {})
    return media.get("schema") if isinstance(media, dict) else None


def _resolve(doc: dict, schema: dict) -> dict:
    """``schema`` with ``$ref`` (``#/definitions/x``, ``#/components/schemas/x``) and ``allOf`` followed."""
    seen = set()
    while "$ref" in schema and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        target: object = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target if isinstance(target, dict) else {}
    if "allOf" in schema:
        merged: dict = {"type": "object", "properties": {}}
        for part in schema["allOf"]:
            merged["properties"].update(_resolve(doc, part).get("properties") or {})
        return merged
    return schema


def _is_object(schema: dict) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def _entity(doc: dict, entity: str, schema: dict, keys: dict[str, str], out: dict[str, dict[str, str]]) -> None:
    columns = out.setdefault(entity, dict(keys))
    properties = {k: _resolve(doc, v) for k, v in (schema.get("properties") or {}).items() if k not in DROPPED}
    for name, prop in properties.items():  # scalars first, as flatten_record takes them
        if name != EXT and not _is_object(prop) and prop.get("type") != "array":
            columns.setdefault(name, sql_type(prop))
    for name, prop in properties.items():
        if name == EXT:
            columns[EXT] = "string"
        elif name.endswith(REFERENCE) and len(name) > len(REFERENCE) and _is_object(prop):
            for key, value in (prop.get("properties") or {}).items():
                value = _resolve(doc, value)
                if key not in DROPPED and not _is_object(value) and value.get("type") != "array":
                    columns.setdefault(reference_column(name, key), sql_type(value))
        elif _is_object(prop):
            _object(doc, name, prop, columns)
        elif prop.get("type") == "array":
            child, child_keys = f"{entity}_{name}", {**keys, f"{name}{ORDINAL}": "int"}
            items = _resolve(doc, prop.get("items") or {})
            if _is_object(items):
                _entity(doc, child, items, child_keys, out)
            else:
                out.setdefault(child, child_keys)["value"] = "string" if items.get("type") == "array" else sql_type(
                    items)


def _object(doc: dict, prefix: str, schema: dict, columns: dict[str, str]) -> None:
    for key, value in (schema.get("properties") or {}).items():
        if key in DROPPED:
            continue
        value = _resolve(doc, value)
        if _is_object(value):
            _object(doc, f"{prefix}_{key}", value, columns)
        else:
            columns[f"{prefix}_{key}"] = "string" if value.get("type") == "array" else sql_type(value)


def sql_type(schema: dict) -> str:
    """The Spark SQL type of a scalar schema: string (date, timestamp), int, bigint, double, boolean."""
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "integer":
        return "bigint" if fmt == "int64" else "int"
    if kind == "number":
        return "double"
    if kind == "boolean":
        return "boolean"
    if kind == "string" and fmt == "date":
        return "date"
    if kind == "string" and fmt == "date-time":
        return "timestamp"
    return "string"
