"""Run notifications: POST a JSON summary to a webhook, or run a command."""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger("oea")


def summary_payload(run_log: dict) -> dict:
    """What a notification carries: the run's status and each step's status (no data, no secrets)."""
    steps = run_log["steps"]
    return {"pipeline": run_log["pipeline"], "batch_id": run_log["batch_id"], "status": run_log["status"],
            "started": run_log["started"], "ended": run_log["ended"],
            "failed": {n: s["error"] for n, s in steps.items() if s["status"] == "failed"},
            "skipped": sorted(n for n, s in steps.items() if s["status"] == "skipped"),
            "steps": {n: s["status"] for n, s in steps.items()}}


def notify(target: dict, run_log: dict, run_log_path: str, timeout: float = 10.0) -> None:
    """Send the notification; a failure to notify is logged, never fatal to the run."""
    payload = summary_payload(run_log)
    if target.get("webhook"):
        import requests

        try:
            response = requests.post(target["webhook"], json=payload, timeout=timeout)
            response.raise_for_status()
            log.info("notified %s (HTTP %d)", target["webhook"], response.status_code)
        except requests.RequestException as exc:
            log.warning("could not notify %s: %s", target["webhook"], exc)
    if target.get("command"):
        env = {**os.environ, "OEA_FLOW_STATUS": payload["status"], "OEA_FLOW_PIPELINE": payload["pipeline"],
               "OEA_FLOW_BATCH_ID": payload["batch_id"], "OEA_FLOW_RUN_LOG": run_log_path}
        done = subprocess.run(target["command"], shell=True, env=env, check=False, timeout=300,
                              capture_output=True, text=True)
        if done.returncode:
            log.warning("notification command exited %d: %s", done.returncode, done.stderr.strip()[:300])
