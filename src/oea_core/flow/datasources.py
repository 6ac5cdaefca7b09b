"""Datasources: databases a sql step's ``source`` reads through Spark's JDBC reader.

```yaml
datasources:                      # under pipeline: (or at the top level)
  sis:
    type: jdbc                    # the only type
    url: jdbc:postgresql://db.example:5432/sis
    driver: org.postgresql.Driver # optional
    user: ${SIS_USER}             # an environment variable (also {env: SIS_USER})
    password: {keyvault: {vault: oea-kv, secret: sis-password}}
```

``user`` and ``password`` are references, never values: a literal in the file (or a ``password=``
in the URL) is a problem when the flow is loaded, reported with its line and never repeated. They
are read when a step needs them (``jdbc_options``); a variable that is not set fails that step, not
the load. Each value read is remembered by ``salt.redact``, so no error, log line or run log shows it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from ..errors import FlowError, KeyVaultError
from ..privacy import keyvault
from ..privacy.redaction import remember_secret
from .model import Datasource, Secret
from .problems import Node

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .problems import Checker

KEYS = {"type", "url", "user", "password", "driver"}
_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOW = ("write ${VARIABLE} or {env: VARIABLE} (an environment variable), or {keyvault: {vault: NAME, secret: NAME}}; "
        "the value is read when the step runs")


def read_datasources(check: Checker, node: object, line: int) -> dict[str, Datasource]:
    """The ``datasources`` mapping (None: none); each problem goes to ``check`` with its line."""
    if node is None or not check.mapping(node, "datasources", line):
        return {}
    found = {}
    for name, raw in node.items():
        where = f"datasources.{name}"
        if check.mapping(raw, where, node.line_of(name)):
            found[str(name)] = _datasource(check, str(name), raw, where)
    return found


def _datasource(check: Checker, name: str, raw: Node, where: str) -> Datasource:
    check.keys(raw, KEYS, where)
    if raw.get("type") != "jdbc":
        check.add(where, raw.line_of("type"), f"type must be jdbc (the only datasource type), not {raw.get('type')!r}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith("jdbc:"):
        check.add(where, raw.line_of("url"), f"url must be a JDBC URL (jdbc:...), not {url!r}")
        url = ""
    elif re.search(r"password\s*=", url, re.IGNORECASE):
        check.add(f"{where}.url", raw.line_of("url"), f"the URL holds a password; give it as 'password' instead: {_HOW}")
    driver = raw.get("driver")
    if driver is not None and not isinstance(driver, str):
        check.add(f"{where}.driver", raw.line_of("driver"), f"driver must be a class name, not {driver!r}")
        driver = None
    user, password = (_secret(check, raw, key, f"{where}.{key}") for key in ("user", "password"))
    return Datasource(name, url, user, password, driver)  # kept when it has problems: steps may name it


def _secret(check: Checker, raw: Node, key: str, where: str) -> Secret | None:
    """``raw[key]`` as a reference; a literal is a problem whose message never shows it."""
    value, line = raw.get(key), raw.line_of(key)
    if value is None:
        return None
    if isinstance(value, str):
        match = _ENV.match(value)
        if match:
            return Secret(env=match.group(1))
        check.add(where, line, f"a literal {key} does not belong in the flow file: {_HOW}")
        return None
    if isinstance(value, Node) and set(value) == {"env"} and _VARIABLE.match(str(value["env"])):
        return Secret(env=str(value["env"]))
    vault = value.get("keyvault") if isinstance(value, Node) and set(value) == {"keyvault"} else None
    if isinstance(vault, Node) and set(vault) == {"vault", "secret"} and all(isinstance(v, str) for v in vault.values()):
        return Secret(vault=vault["vault"], secret=vault["secret"])
    check.add(where, line, f"{key} must be a reference: {_HOW}")
    return None


def jdbc_options(datasource: Datasource, source: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark JDBC reader's options for ``source`` (``table`` or ``query``), the user and password read now.

    Raises FlowError naming the datasource and the variable that is not set, or the secret that cannot be read."""
    options = {"url": datasource.url}
    if datasource.driver:
        options["driver"] = datasource.driver
    options["query" if source.get("query") else "dbtable"] = str(source.get("query") or source.get("table"))
    for key, secret in (("user", datasource.user), ("password", datasource.password)):
        if secret is not None:
            options[key] = resolve(secret, datasource.name, key, os.environ if environ is None else environ)
    return options


def resolve(secret: Secret, datasource: str, what: str, environ: Mapping[str, str]) -> str:
    """The value ``secret`` refers to, remembered for redaction; raises FlowError when it cannot be read."""
    if secret.env:
        value = environ.get(secret.env)
        if not value:
            raise FlowError(f"datasource {datasource}: environment variable {secret.env} (its {what}) is not set; "
                            "set it for the run")
    else:
        value = _keyvault(secret, datasource, what)
    remember_secret(value)
    return value


def _keyvault(secret: Secret, datasource: str, what: str) -> str:
    try:
        return keyvault.read_secret(keyvault.vault_url(str(secret.vault)), str(secret.secret))
    except KeyVaultError as exc:
        raise FlowError(f"datasource {datasource}: its {what}: {exc}") from exc
