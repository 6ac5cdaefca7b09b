"""A loopback HTTP server answering like an Ed-Fi ODS/API (v7), serving a generated dataset.

It serves the API root, ``/oauth/token`` (client credentials, HTTP Basic), the dependency
order, ``availableChangeVersions``, and each resource (and its ``/deletes`` and ``/keyChanges``)
with offset/limit paging, ``Total-Count`` and min/maxChangeVersion. A resource the dataset has no
key changes for answers 404 at ``/keyChanges``, as an API without that endpoint does. Its
OpenAPI metadata (``/metadata/``, then the Resources section's Swagger 2 document) is built from
the shapes of the dataset's records (:func:`swagger_document`). The data visible is the
dataset up to ``visible_batch``; failures can be queued per path, a record can be made to change
while a resource is paged (:meth:`EdFiTestApi.move_while_paging`), and every data answer can be
slowed by ``delay`` seconds.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oea_core.edfi.generator import RESOURCE_ORDER, EdFiDataset, Event

CLIENT_ID = "oea-test-client"
CLIENT_SECRET = "s3cr3t-edfi-client-Qx9"
MAX_LIMIT = 500


class EdFiTestApi:
    def __init__(self, dataset: EdFiDataset, *, expires_in: int = 1800) -> None:
        self.dataset = dataset
        self.openapi = swagger_document(dataset)
        self.visible_batch = 0
        self.expires_in = expires_in
        self.tokens: set[str] = set()
        self.token_count = 0
        self.failures: dict[str, list[tuple[int, dict, bytes | None]]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.revoke_after: int | None = None  # revoke every token after this many data requests
        self.delay = 0.0  # seconds every data answer waits
        self.moved: list[Event] = []  # updates made while a resource was paged
        self._moves: dict[str, list[int]] = {}  # path -> [after this many pages of a read, moves left]
        self._pages_served: dict[str, int] = {}
        self._data_requests = 0
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                api._handle(self, "GET")

            def do_POST(self):
                api._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, path: str, status: int, times: int = 1, headers: dict | None = None,
             body: bytes | None = None) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status`` (and ``body``, as raw bytes, if given)."""
        self.failures.setdefault(path, []).extend([(status, headers or {}, body)] * times)

    def move_while_paging(self, path: str, after_pages: int = 1, times: int = 1) -> None:
        """Let the data move under the next ``times`` reads of ``path``: once a read (paging from offset 0) has
        been served ``after_pages`` pages, the first record of the last page is updated. Its change version
        moves past every other, out of the window being read, and every later record's offset shifts down by one,
        as on an ODS/API written to while it is read without a snapshot."""
        self._moves[path] = [after_pages, times]

    # the data as of visible_batch ----------------------------------------------------------------
    def _visible(self) -> list[Event]:
        return [e for b in self.dataset.batches[: self.visible_batch + 1] for e in b] + self.moved

    def _newest(self) -> int:
        return max(e.change_version for e in self._visible())

    def _move(self, path: str, resource: str, offset: int, page: list[dict]) -> None:
        """Count a page served for :meth:`move_while_paging`, and update a record when it is time."""
        plan = self._moves.get(path)
        if not plan or not page:
            return
        with self._lock:
            served = self._pages_served[path] = 1 if offset == 0 else self._pages_served.get(path, 0) + 1
            if served != plan[0] or plan[1] <= 0:
                return
            plan[1] -= 1
            version = max(e.change_version for e in [*self.dataset.events(), *self.moved]) + 1
            record = {**page[0], "_etag": str(5250000000000000000 + version)}
            self.moved.append(Event(version, resource, "upsert", record))

    def _records(self, resource: str, low: int | None, high: int | None) -> list[dict]:
        alive: dict[str, tuple[int, dict]] = {}
        deleted: set[str] = set()
        for event in self._visible():
            if event.resource != resource:
                continue
            if event.kind == "upsert":
                current = alive.get(event.record["id"])
                # a late delivery (generate_edfi(history=True)) is nothing the API would serve
                if event.record["id"] not in deleted and (current is None or current[0] <= event.change_version):
                    alive[event.record["id"]] = (event.change_version, event.record)
            elif event.kind == "delete":
                alive.pop(event.record["id"], None)
                deleted.add(event.record["id"])
        return [r for cv, r in sorted(alive.values(), key=lambda x: x[0])
                if (low is None or cv >= low) and (high is None or cv <= high)]

    def _events(self, resource: str, kind: str, low: int | None, high: int | None) -> list[dict]:
        return [e.record for e in self._visible() if e.resource == resource and e.kind == kind
                and (low is None or e.change_version >= low) and (high is None or e.change_version <= high)]

    def _has_key_changes(self, resource: str) -> bool:
        return any(e.resource == resource and e.kind == "keyChange" for e in self.dataset.events())

    # HTTP ----------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        path, query = parsed.path, dict(urllib.parse.parse_qsl(parsed.query))
        with self._lock:
            self.requests.append((method, path, query))
            queued = self.failures.get(path)
            failure = queued.pop(0) if queued else None
        if failure and failure[2] is not None:
            return self._send_raw(handler, failure[0], failure[2], failure[1])
        if failure:
            return self._send(handler, failure[0], {"message": "injected failure"}, failure[1])
        if path == "/" and method == "GET":
            return self._send(handler, 200, {
                "version": "7.1", "apiMode": "Sandbox", "dataModels": [{"name": "Ed-Fi", "version": "5.0.0"}],
                "urls": {"dependencies": self.url + "/metadata/data/v3/dependencies",
                         "oauth": self.url + "/oauth/token", "dataManagementApi": self.url + "/data/v3/",
                         "changeQueries": self.url + "/changeQueries/v1/",
                         "openApiMetadata": self.url + "/metadata/"}})
        if path == "/oauth/token" and method == "POST":
            return self._token(handler)
        if not self._authorized(handler):
            return self._send(handler, 401, {"message": "Authorization denied. The access token is expired."})
        if path == "/metadata/data/v3/dependencies":
            return self._send(handler, 200, [{"resource": f"/ed-fi/{r}", "order": i + 1,
                                              "operations": ["Create", "Update"]}
                                             for i, r in enumerate(RESOURCE_ORDER)])
        if path == "/metadata/":
            return self._send(handler, 200, [
                {"name": "Resources", "endpointUri": self.url + "/metadata/data/v3/resources/swagger.json", "prefix": ""},
                {"name": "Descriptors", "endpointUri": self.url + "/metadata/data/v3/descriptors/swagger.json",
                 "prefix": ""}])
        if path == "/metadata/data/v3/resources/swagger.json":
            return self._send(handler, 200, self.openapi)
        if path == "/changeQueries/v1/availableChangeVersions":
            return self._send(handler, 200, {"oldestChangeVersion": 0, "newestChangeVersion": self._newest()})
        if path.startswith("/data/v3/ed-fi/"):
            return self._data(handler, path[len("/data/v3/ed-fi/"):], query)
        return self._send(handler, 404, {"message": f"no resource {path}"})

    def _token(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        form = dict(urllib.parse.parse_qsl(handler.rfile.read(length).decode()))
        auth = handler.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if auth != expected or form.get("grant_type") != "client_credentials":
            return self._send(handler, 401, {"error": "invalid_client"})
        with self._lock:
            self.token_count += 1
            token = f"token-{self.token_count}-abcdef"
            self.tokens.add(token)
        return self._send(handler, 200, {"access_token": token, "expires_in": self.expires_in,
                                         "token_type": "bearer"})

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            if token not in self.tokens:
                return False
            self._data_requests += 1
            if self.revoke_after and self._data_requests % self.revoke_after == 0:
                self.tokens.discard(token)  # this answer still succeeds; the next call with it fails
        return True

    def _data(self, handler: BaseHTTPRequestHandler, rest: str, query: dict) -> None:
        resource, _, kind = rest.partition("/")
        if resource not in RESOURCE_ORDER or kind not in ("", "deletes", "keyChanges"):
            return self._send(handler, 404, {"message": f"no resource {rest}"})
        if kind == "keyChanges" and not self._has_key_changes(resource):
            return self._send(handler, 404, {"message": f"no resource {rest}"})
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 25))
        if limit > MAX_LIMIT:
            return self._send(handler, 400, {"message": f"Limit must be between 0 and {MAX_LIMIT}."})
        low = int(query["minChangeVersion"]) if "minChangeVersion" in query else None
        high = int(query["maxChangeVersion"]) if "maxChangeVersion" in query else None
        items = (self._records(resource, low, high) if not kind
                 else self._events(resource, {"deletes": "delete", "keyChanges": "keyChange"}[kind], low, high))
        headers = {"Total-Count": str(len(items))} if query.get("totalCount") == "true" else {}
        if self.delay:
            time.sleep(self.delay)
        page = items[offset: offset + limit]
        self._move(f"/data/v3/ed-fi/{rest}", resource, offset, page)
        return self._send(handler, 200, page, headers)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body, headers: dict | None = None) -> None:
        EdFiTestApi._send_raw(handler, status, json.dumps(body).encode(), headers)

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)


# the OpenAPI (Swagger 2) document ------------------------------------------------------------------
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def swagger_document(dataset: EdFiDataset) -> dict:
    """A Swagger 2 document shaped like the ODS/API's Resources one, for every generated resource."""
    definitions: dict[str, dict] = {}
    paths: dict[str, dict] = {}
    for resource in RESOURCE_ORDER:
        records = [e.record for e in dataset.events() if e.resource == resource and e.kind == "upsert"]
        singular = resource[:-3] + "y" if resource.endswith("ies") else resource.removesuffix("s")
        name = f"edFi_{singular}"
        ref = _schema(records, name, definitions)
        paths[f"/ed-fi/{resource}"] = {
            "get": {"tags": [resource], "operationId": f"get{resource}", "parameters": [
                {"in": "query", "name": n, "type": "integer", "format": "int32"} for n in ("offset", "limit")],
                    "responses": {"200": {"description": "The requested resource was successfully retrieved.",
                                          "schema": {"type": "array", "items": ref}}}},
            "post": {"tags": [resource], "operationId": f"post{singular}", "parameters": [
                {"in": "body", "name": singular, "required": True, "schema": ref}],
                     "responses": {"201": {"description": "The resource was created."}}}}
        paths[f"/ed-fi/{resource}/{{id}}"] = {"get": {"parameters": [{"in": "path", "name": "id", "required": True,
                                                                       "type": "string"}],
                                                      "responses": {"200": {"description": "OK", "schema": ref}}}}
        paths[f"/ed-fi/{resource}/deletes"] = {"get": {"responses": {"200": {"description": "OK", "schema": {
            "type": "array", "items": {"$ref": "#/definitions/trackedChanges_deletedResource"}}}}}}
    definitions["trackedChanges_deletedResource"] = {"type": "object", "properties": {
        "id": {"type": "string"}, "changeVersion": {"type": "integer", "format": "int64"}}}
    return {"swagger": "2.0", "info": {"title": "Ed-Fi Resources", "version": "5.0.0"}, "basePath": "/data/v3",
            "consumes": ["application/json"], "produces": ["application/json"], "paths": paths,
            "definitions": definitions}


def _schema(values: list, name: str, definitions: dict[str, dict]) -> dict:
    """The schema of the values one field takes across records; objects become definitions."""
    dicts = [v for v in values if isinstance(v, dict)]
    if dicts:
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        definitions[name] = {"type": "object", "required": [k for k in keys if all(k in d for d in dicts)],
                             "properties": {}}
        for key in keys:  # after the definition's entry, so the document lists parents first
            child = f"{name}{key[0].upper()}{key[1:]}".replace("_", "")
            definitions[name]["properties"][key] = _schema([d[key] for d in dicts if key in d], child, definitions)
        return {"$ref": f"#/definitions/{name}"}
    lists = [v for v in values if isinstance(v, list)]
    if lists:
        items = [item for v in lists for item in v]
        if not items:  # no example: an object without known fields
            definitions.setdefault(name, {"type": "object", "properties": {}})
            return {"type": "array", "items": {"$ref": f"#/definitions/{name}"}}
        return {"type": "array", "items": _schema(items, name, definitions)}
    if values and all(isinstance(v, bool) for v in values):
        return {"type": "boolean"}
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return {"type": "integer", "format": "int32" if all(-2**31 <= v < 2**31 for v in values) else "int64"}
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {"type": "number", "format": "double"}
    if values and all(isinstance(v, str) and _DATE.match(v) for v in values):
        return {"type": "string", "format": "date"}
    if values and all(isinstance(v, str) and _DATE_TIME.match(v) for v in values):
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}
