"""An Ed-Fi ODS/API client: OAuth2 client credentials, paging, change queries, retries.

The token is renewed before it expires and whenever a call answers 401. 429 and 5xx answers
(and dropped connections) are retried with exponential backoff, honouring ``Retry-After`` (seconds or an
HTTP date) up to ``max_retry_after`` (``$OEA_EDFI_MAX_RETRY_AFTER``, default 300 s). A success whose body is
not JSON (truncated, or an HTML page from a proxy) is retried the same way, then named with its URL.
The client key, secret and token never appear in logs or errors.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import EdFiApiError, KeyVaultError
from ..privacy import keyvault
from ..privacy.redaction import redact, remember_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger("oea")
CLIENT_ID_ENV = keyvault.EDFI_CLIENT_ID_ENV
CLIENT_SECRET_ENV = keyvault.EDFI_CLIENT_SECRET_ENV
DEFAULT_PAGE_SIZE = 500
MAX_RETRY_AFTER_ENV = "OEA_EDFI_MAX_RETRY_AFTER"
DEFAULT_MAX_RETRY_AFTER = 300.0  # seconds: the longest wait a Retry-After answer gets
PAGED_KINDS = ("upserts", "deletes", "keyChanges")  # a resource, its /deletes, its /keyChanges


@dataclass(frozen=True)
class Resource:
    """A resource in the API's dependency order: ``ed-fi``/``students``."""

    namespace: str
    name: str
    order: int = 0


class Paged:
    """The pages of one read of a resource (iterate once); ``total`` is the ``Total-Count`` the API gave with the
    first page, for the same change-version window (None before the first page, or when the API gave none)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self._pages: Iterator[list[dict]] = iter(())

    def __iter__(self) -> Iterator[list[dict]]:
        return self._pages


class EdFiClient:
    """Talks to one Ed-Fi ODS/API (v5 and later).

    ``sleep`` and ``clock`` can be replaced (tests run retries without real waiting).
    """

    def __init__(self, base_url: str, client_id: str | None = None, client_secret: str | None = None, *,
                 page_size: int = DEFAULT_PAGE_SIZE, max_retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                 max_retry_after: float | None = None, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or _credential(keyvault.EDFI_CLIENT_ID)
        self._secret = client_secret or _credential(keyvault.EDFI_CLIENT_SECRET)
        if not self.client_id or not self._secret:
            raise EdFiApiError(f"no Ed-Fi API credentials: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} in the "
                               f"environment, or {keyvault.VAULT_URL_ENV} to a Key Vault holding secrets "
                               f"{keyvault.EDFI_CLIENT_ID} and {keyvault.EDFI_CLIENT_SECRET} (they are never taken "
                               "from the command line)")
        remember_secret(self._secret)
        self.page_size = page_size
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.max_retry_after = max_retry_after if max_retry_after is not None else _max_retry_after()
        self.sleep = sleep
        self.clock = clock
        self.session = requests.Session()
        self._token: str | None = None
        self._expires_at = 0.0
        self._urls: dict | None = None
        self.token_requests = 0
        self.retries = 0

    # discovery ---------------------------------------------------------------------------------
    @property
    def urls(self) -> dict:
        """The API root's ``urls`` (oauth, dataManagementApi, dependencies, changeQueries, openApiMetadata)."""
        if self._urls is None:
            root = self._request("GET", self.base_url + "/", auth=False).json()
            urls = dict(root.get("urls") or {})
            urls.setdefault("oauth", self.base_url + "/oauth/token")
            urls.setdefault("dataManagementApi", self.base_url + "/data/v3/")
            urls.setdefault("dependencies", self.base_url + "/metadata/data/v3/dependencies")
            urls.setdefault("changeQueries", self.base_url + "/changeQueries/v1/")
            urls.setdefault("openApiMetadata", self.base_url + "/metadata/")
            self._urls = urls
            log.info("Ed-Fi API %s (version %s)", self.base_url, root.get("version", "unknown"))
        return self._urls

    def dependencies(self) -> list[Resource]:
        """Every resource, in the order the API says they must be loaded."""
        items = self._request("GET", self.urls["dependencies"]).json()
        resources = []
        for item in items:
            path = str(item.get("resource", "")).strip("/")
            if path.count("/") != 1:
                continue
            namespace, name = path.split("/")
            resources.append(Resource(namespace, name, int(item.get("order", 0))))
        return sorted(resources, key=lambda r: (r.order, r.namespace, r.name))

    def newest_change_version(self) -> int | None:
        """The API's newest change version; None when it has no change queries."""
        url = self.urls["changeQueries"].rstrip("/") + "/availableChangeVersions"
        response = self._request("GET", url, ok_missing=True)
        if response is None:
            return None
        body = response.json()
        value = body.get("newestChangeVersion", body.get("NewestChangeVersion"))
        return None if value is None else int(value)

    def openapi_document(self, section: str = "Resources") -> dict | None:
        """The API's OpenAPI (Swagger) document of a metadata section; None when the API serves none."""
        listing = self._request("GET", self.urls["openApiMetadata"], ok_missing=True)
        sections = listing.json() if listing is not None else None
        if not isinstance(sections, list):
            log.info("Ed-Fi API %s lists no OpenAPI metadata; none stored", self.base_url)
            return None
        uri = next((s.get("endpointUri") for s in sections if isinstance(s, dict)
                    and str(s.get("name", "")).lower() == section.lower()), None)
        document = self._request("GET", uri, ok_missing=True) if uri else None
        if document is None:
            log.info("Ed-Fi API %s has no OpenAPI document for %s; none stored", self.base_url, section)
            return None
        body = document.json()
        if not isinstance(body, dict):
            raise EdFiApiError(f"{uri} answered {type(body).__name__}, not an OpenAPI document (a JSON object)",
                               path=uri)
        return body

    # data --------------------------------------------------------------------------------------
    def pages(self, resource: Resource, *, kind: str = "upserts", min_change_version: int | None = None,
              max_change_version: int | None = None) -> Paged:
        """Every page of a resource (``kind`` ``upserts``), or of its ``/deletes`` or ``/keyChanges``, in the
        change-version window given; the answer's ``total`` is the API's ``Total-Count`` for the window.

        A resource without a ``/keyChanges`` endpoint (HTTP 404) has no key changes: no pages.
        """
        if kind not in PAGED_KINDS:
            raise EdFiApiError(f"unknown kind {kind!r} of Ed-Fi changes; use one of {list(PAGED_KINDS)}")
        paged = Paged()
        paged._pages = self._pages(paged, resource, kind, min_change_version, max_change_version)
        return paged

    def _pages(self, paged: Paged, resource: Resource, kind: str, min_change_version: int | None,
               max_change_version: int | None) -> Iterator[list[dict]]:
        url = self.urls["dataManagementApi"].rstrip("/") + f"/{resource.namespace}/{resource.name}"
        if kind != "upserts":
            url += f"/{kind}"
        offset, total = 0, None
        while True:
            params: dict = {"offset": offset, "limit": self.page_size}
            if offset == 0:
                params["totalCount"] = "true"
            if min_change_version is not None:
                params["minChangeVersion"] = min_change_version
            if max_change_version is not None:
                params["maxChangeVersion"] = max_change_version
            response = self._request("GET", url, params=params, ok_missing=kind == "keyChanges")
            if response is None:
                log.debug("%s: no keyChanges endpoint; no key changes landed", resource.name)
                break
            if offset == 0 and response.headers.get("Total-Count", "").strip().isdigit():
                total = paged.total = int(response.headers["Total-Count"])
            page = response.json()
            if not isinstance(page, list):
                raise EdFiApiError(f"{url} answered {type(page).__name__}, not a JSON array of records", path=url)
            if page:
                yield page
            offset += len(page)
            if not page or len(page) < self.page_size or (total is not None and offset >= total):
                break

    # plumbing ----------------------------------------------------------------------------------
    def _renew_token(self) -> None:
        response = self._request("POST", self.urls["oauth"], auth=False,
                                 data={"grant_type": "client_credentials"},
                                 basic=(self.client_id, self._secret))
        body = response.json()
        token = body.get("access_token")
        if not token:
            raise EdFiApiError(f"the token endpoint {self.urls['oauth']} gave no access_token: check "
                               f"{CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}")
        remember_secret(token)
        self._token = token
        expires_in = float(body.get("expires_in", 1800))
        # renew a little early: 10% of the lifetime, at most a minute
        self._expires_at = self.clock() + expires_in - min(60.0, expires_in * 0.1)
        self.token_requests += 1
        log.debug("Ed-Fi token obtained, valid for %.0f s", expires_in)

    def _request(self, method: str, url: str, *, params: dict | None = None, auth: bool = True,
                 ok_missing: bool = False, data: dict | None = None, basic: tuple | None = None):
        import requests

        renewed = False
        attempt = 0
        while True:
            headers = {"Accept": "application/json"}
            if auth:
                if self._token is None or self.clock() >= self._expires_at:
                    self._renew_token()
                headers["Authorization"] = f"Bearer {self._token}"
            response: requests.Response | None
            try:
                response = self.session.request(method, url, params=params, data=data, auth=basic,
                                                headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:
                response, problem = None, f"{type(exc).__name__}"
            else:
                problem = f"HTTP {response.status_code}"
            if response is not None:
                if response.status_code == 401 and auth and not renewed:
                    log.info("Ed-Fi API answered 401 for %s; renewing the token", url)
                    self._token, renewed = None, True
                    continue
                if response.status_code == 404 and ok_missing:
                    return None
                if response.status_code < 400 and _is_json(response):
                    return response
                if response.status_code < 400:
                    problem += f" with a body that is not JSON (truncated, or a page such as HTML): {_start(response)}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    raise EdFiApiError(
                        f"Ed-Fi API {method} {url} failed: HTTP {response.status_code}: "
                        f"{redact(response.text[:300])}" + _hint(response.status_code), path=url)
            if attempt >= self.max_retries:
                raise EdFiApiError(f"Ed-Fi API {method} {url} still failing after {attempt + 1} attempts "
                                   f"({problem}); try again later or lower --page-size", path=url)
            delay = self.backoff * (2 ** attempt)
            wait = _retry_after(response.headers.get("Retry-After")) if response is not None else None
            if wait is not None:
                if wait > self.max_retry_after:
                    log.warning("Ed-Fi API asked to wait %.0f s before retrying %s; waiting %.0f s (%s)", wait, url,
                                self.max_retry_after, MAX_RETRY_AFTER_ENV)
                delay = max(delay, min(wait, self.max_retry_after))
            log.info("Ed-Fi API %s for %s; retry %d of %d in %.1f s", problem, url, attempt + 1,
                     self.max_retries, delay)
            self.retries += 1
            self.sleep(delay)
            attempt += 1


def _is_json(response) -> bool:
    """Whether a success answer's body parses (an empty 204 counts); what callers' ``.json()`` will read."""
    if response.status_code == 204 or not response.content:
        return True
    try:
        response.json()
    except ValueError:
        return False
    return True


def _start(response) -> str:
    return repr(redact(response.content[:40].decode("utf-8", "replace")))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds, or an HTTP date; None if neither."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _max_retry_after() -> float:
    raw = os.environ.get(MAX_RETRY_AFTER_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RETRY_AFTER
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise EdFiApiError(f"{MAX_RETRY_AFTER_ENV} {raw!r} is not a number of seconds: give the longest wait a "
                           f"Retry-After answer gets, such as {DEFAULT_MAX_RETRY_AFTER:.0f}")
    return value


def _hint(status: int) -> str:
    if status in (401, 403):
        return f"; check {CLIENT_ID_ENV}/{CLIENT_SECRET_ENV} and the client's claim set"
    if status == 400:
        return "; if the API caps the page size, lower --page-size (500 is the usual limit)"
    if status == 404:
        return "; check the API URL and that the resource exists in this API version"
    return ""


def _credential(name: str) -> str | None:
    """Ed-Fi credential ``name`` from its environment variable or Key Vault; None when neither is set."""
    try:
        found = keyvault.secret(name)
    except KeyVaultError as exc:
        raise EdFiApiError(f"Ed-Fi API credentials: {exc}") from exc
    return found.value if found else None
