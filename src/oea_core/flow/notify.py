"""Run notifications: POST a JSON summary to a webhook, a card to a Microsoft Teams webhook, or run a command.

A notification that fails (the webhook cannot be reached, answers with an error status, the
command fails or hangs) is logged and returned as a record for the run log; it never changes the
run's outcome. A webhook URL may itself be a secret (a token in its path), so records and logs name
only its scheme, host and port.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..privacy.redaction import redact
from .process import run_command

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("oea")
COMMAND_TIMEOUT = 300.0


def summary_payload(run_log: dict[str, Any]) -> dict[str, Any]:
    """What a notification carries: the run's status and each step's status (no data, no secrets)."""
    steps = run_log["steps"]
    return {"pipeline": run_log["pipeline"], "batch_id": run_log["batch_id"], "status": run_log["status"],
            "started": run_log["started"], "ended": run_log["ended"],
            "failed": {n: s["error"] for n, s in steps.items() if s["status"] == "failed"},
            "skipped": sorted(n for n, s in steps.items() if s["status"] == "skipped"),
            "steps": {n: s["status"] for n, s in steps.items()}}


def notify(target: dict[str, Any], run_log: dict[str, Any], run_log_path: str, *, event: str = "",
           timeout: float = 10.0, command_timeout: float = COMMAND_TIMEOUT) -> list[dict[str, Any]]:
    """Send the notifications in ``target``; returns one record per notification (``ok``, ``error``). Never raises."""
    records = []
    payload = summary_payload(run_log)
    if target.get("webhook"):
        records.append(_outcome(event, "webhook", _site(str(target["webhook"])),
                                lambda: _webhook(str(target["webhook"]), payload, timeout)))
    if target.get("teams"):
        records.append(_outcome(event, "teams", _site(str(target["teams"])),
                                lambda: _webhook(str(target["teams"]), teams_card(payload), timeout)))
    if target.get("command"):
        env = {**os.environ, "OEA_FLOW_STATUS": payload["status"], "OEA_FLOW_PIPELINE": payload["pipeline"],
               "OEA_FLOW_BATCH_ID": payload["batch_id"], "OEA_FLOW_RUN_LOG": run_log_path}
        records.append(_outcome(event, "command", str(target["command"]).split()[0] if str(target["command"]).strip()
                                else "", lambda: _command(str(target["command"]), env, command_timeout)))
    return records


def teams_card(payload: dict[str, Any]) -> dict[str, Any]:
    """The summary as a Teams MessageCard: a title, the run's facts, and each failed step with its error."""
    failed = payload["failed"]
    facts = [{"name": "batch", "value": payload["batch_id"]}, {"name": "started", "value": payload["started"]},
             {"name": "ended", "value": payload["ended"]},
             *({"name": name, "value": status} for name, status in payload["steps"].items())]
    return {"@type": "MessageCard", "@context": "https://schema.org/extensions",
            "summary": f"flow {payload['pipeline']}: {payload['status']}",
            "themeColor": "D13438" if payload["status"] == "failed" else "2EB67D",
            "title": f"flow {payload['pipeline']} batch {payload['batch_id']}: {payload['status']}",
            "sections": [{"facts": facts},
                         *([{"text": "\n\n".join(f"**{n}**: {e}" for n, e in failed.items())}] if failed else [])]}


def _outcome(event: str, kind: str, target: str, send: Callable[[], str | None]) -> dict[str, Any]:
    try:
        error = send()
    except Exception as exc:  # noqa: BLE001 - a notification must not change the run's outcome
        error = f"{type(exc).__name__}: {exc}"
    record = {"event": event, "kind": kind, "target": target, "ok": error is None, "error": error and redact(error)}
    if error:
        log.warning("could not send the %s notification (%s %s): %s", event, kind, target, record["error"])
    else:
        log.info("sent the %s notification (%s %s)", event, kind, target)
    return record


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


def _webhook(url: str, payload: dict[str, Any], timeout: float) -> str | None:
    import requests

    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.ConnectionError:
        return "could not connect"
    except requests.RequestException as exc:
        return type(exc).__name__  # its text holds the URL, which may be a secret
    if response.status_code >= 400:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    return None


def _command(command: str, env: dict[str, str], timeout: float) -> str | None:
    code, stderr = run_command(command, env=env, timeout=timeout)
    if code is None:
        return stderr
    if code:
        return f"exited {code}: {stderr.strip()[-300:]}".rstrip(": ")
    return None
