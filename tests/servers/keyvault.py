"""A loopback Azure Key Vault (HTTPS) and App Service managed identity endpoint (HTTP) for the real Azure SDK.

The vault speaks Key Vault's REST protocol as far as ``SecretClient.get_secret`` uses it: a request without a
token gets ``401`` and a ``WWW-Authenticate: Bearer authorization=..., resource=...`` challenge; a request with a
token the identity endpoint issued (and not yet expired) gets the secret, ``404 SecretNotFound`` or
``403 Forbidden``; an unknown or expired token gets ``401`` again.

The identity endpoint is what ``ManagedIdentityCredential`` (inside ``DefaultAzureCredential``) calls when
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set: ``GET ?api-version=2019-08-01&resource=...`` with header
``X-IDENTITY-HEADER``, answered with ``access_token``, ``expires_on`` (epoch seconds), ``resource``, ``token_type``.

The SDK accepts a challenge only when the vault's host is a subdomain of the challenge's resource
(``x.vault.azure.net`` and ``https://vault.azure.net``). No name under ``localhost`` resolves here, so the
vault is ``https://127.0.0.1:<port>`` and the resource ``https://0.0.1:<port>``: as text, ``127.0.0.1:<port>``
ends with ``.0.0.1:<port>``, which is all the check compares.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import pytest

TENANT = "00000000-0000-0000-0000-0000000000aa"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), to be trusted through REQUESTS_CA_BUNDLE."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "vault-cert.pem", folder / "vault-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class KeyVaultServer:
    """The vault at :attr:`url` and the identity endpoint at :attr:`identity_endpoint`; start/stop around a test.

    ``secrets`` maps name to value; names in ``forbidden`` answer 403, in ``garbled`` 200 with a body that is
    not JSON; ``token_lifetime`` (seconds, negative:
    already expired) is given to each token issued. ``requests`` records ``(path, had_token)`` per vault call.
    """

    def __init__(self, folder: Path) -> None:
        self.cert, self._key = self_signed(folder)
        self.secrets: dict[str, str] = {}
        self.forbidden: set[str] = set()
        self.garbled: set[str] = set()  # answered 200 with a body that is not JSON, holding the value
        self.token_lifetime = 3600
        self.identity_header = secrets.token_hex(8)
        self.tokens: dict[str, float] = {}  # token -> expires_on
        self.requests: list[tuple[str, bool]] = []
        self.token_requests: list[dict[str, list[str]]] = []
        self._vault = ThreadingHTTPServer(("127.0.0.1", 0), _vault_handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self._key)
        self._vault.socket = context.wrap_socket(self._vault.socket, server_side=True)
        self._identity = ThreadingHTTPServer(("127.0.0.1", 0), _identity_handler(self))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._vault.server_address[1]}"

    @property
    def resource(self) -> str:
        return f"https://0.0.1:{self._vault.server_address[1]}"

    @property
    def identity_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._identity.server_address[1]}/msi/token"

    def start(self) -> KeyVaultServer:
        for server in (self._vault, self._identity):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._vault, self._identity):
            server.shutdown()
            server.server_close()

    def issue(self) -> tuple[str, int]:
        token, expires_on = secrets.token_urlsafe(24), int(time.time()) + self.token_lifetime
        self.tokens[token] = expires_on
        return token, expires_on


class _Handler(BaseHTTPRequestHandler):
    server_state: KeyVaultServer

    def answer(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _vault_handler(state: KeyVaultServer) -> type[_Handler]:
    class Vault(_Handler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            auth = self.headers.get("Authorization", "")
            state.requests.append((url.path, auth.startswith("Bearer ")))
            challenge = {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                                             f'resource="{state.resource}"'}
            if not auth.startswith("Bearer "):
                return self.answer(401, {"error": {"code": "Unauthorized", "message":
                                                   "AKV10000: Request is missing a Bearer or PoP token."}}, challenge)
            if state.tokens.get(auth[len("Bearer "):], 0) <= time.time():
                return self.answer(401, {"error": {"code": "Unauthorized", "message":
                                                   "AKV10022: Invalid audience or the token is expired."}}, challenge)
            if len(parts) not in (2, 3) or parts[0] != "secrets" or "api-version" not in parse_qs(url.query):
                return self.answer(400, {"error": {"code": "BadParameter", "message": "unknown path"}})
            name = parts[1]
            if name in state.forbidden:
                return self.answer(403, {"error": {"code": "Forbidden", "message":
                                                   f"The user, group or application does not have secrets get "
                                                   f"permission on key vault '{state.url}'.",
                                                   "innererror": {"code": "AccessDenied"}}})
            if name not in state.secrets:
                return self.answer(404, {"error": {"code": "SecretNotFound", "message":
                                                   f"A secret with (name/id) {name} was not found in this key vault."}})
            if name in state.garbled:
                data = f"<html>value={state.secrets[name]}</html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
            version = parts[2] if len(parts) == 3 else "0123456789abcdef0123456789abcdef"
            return self.answer(200, {"value": state.secrets[name], "id": f"{state.url}/secrets/{name}/{version}",
                                     "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000,
                                                    "recoveryLevel": "Recoverable+Purgeable"}})

    return Vault


def _identity_handler(state: KeyVaultServer) -> type[_Handler]:
    class Identity(_Handler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            state.token_requests.append(query)
            if self.headers.get("X-IDENTITY-HEADER") != state.identity_header:
                return self.answer(401, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"})
            token, expires_on = state.issue()
            return self.answer(200, {"access_token": token, "expires_on": str(expires_on),
                                     "resource": query["resource"][0], "token_type": "Bearer",
                                     "client_id": "11111111-1111-1111-1111-111111111111"})

    return Identity


@contextlib.contextmanager
def signed_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultServer]:
    """A started loopback vault at ``OEA_KEYVAULT_URL``; the process signs in to it through its identity endpoint
    (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``, an App Service managed identity) and trusts its CA."""
    from oea_core.privacy import keyvault

    for name in list(os.environ):
        if (name.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_", "OEA_EDFI_"))
                or name.lower() in ("http_proxy", "https_proxy", "all_proxy")):
            monkeypatch.delenv(name)
    server = KeyVaultServer(folder).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", server.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", server.identity_header)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.cert))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("OEA_KEYVAULT_URL", server.url)
    keyvault._forget_clients()  # the credential reads IDENTITY_* when it is made
    try:
        yield server
    finally:
        keyvault._forget_clients()
        server.stop()
