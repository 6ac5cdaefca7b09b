"""Running the dbt project (``transform/``) against the dev database: ``dbt build``, models and tests.

dbt runs in its own virtual environment (see ``requirements-dbt.txt``), reached as a program
(:func:`.server.find_dbt`), with libpq's variables pointing at dev (its ``profiles.yml`` reads them), so the
password is in its environment only. Its ``target/`` and ``logs/`` go to a work folder outside the
project. A model or test that fails is read from ``run_results.json`` and named in the PublishError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass

from ..errors import PublishError
from ..privacy.redaction import redact

log = logging.getLogger("oea")

FAILED = ("error", "fail", "runtime error")
_NOT_PROJECT = {"target", "logs", "dbt_packages", ".user.yml", "__pycache__"}


@dataclass(frozen=True)
class DbtRun:
    """A ``dbt build`` that succeeded: how many models, tests, ... it ran (by resource type)."""

    counts: dict[str, int]
    seconds: float

    def describe(self) -> str:
        return ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in sorted(self.counts.items())) or "nothing"


def project_fingerprint(project_dir: str) -> str:
    """A hash of the project's files (models, tests, macros, settings), so a changed model is published."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(project_dir)):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_PROJECT and not d.startswith("."))
        for name in sorted(files):
            if name in _NOT_PROJECT or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, project_dir).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def check_project(project_dir: str) -> str:
    """``project_dir`` if it holds a ``dbt_project.yml``; PublishError saying what to give otherwise."""
    if not os.path.isfile(os.path.join(project_dir, "dbt_project.yml")):
        raise PublishError(f"{project_dir} is not a dbt project (no dbt_project.yml): give --project-dir the "
                           "repository's transform/ folder or a copy of it")
    return project_dir


def manifest_path(work_dir: str) -> str:
    """Where the last ``dbt build`` in ``work_dir`` left its ``manifest.json``."""
    return os.path.join(work_dir, "target", "manifest.json")


def dbt_build(dbt: str, project_dir: str, work_dir: str, env: dict[str, str], database: str,
              exclude: tuple[str, ...] = ()) -> DbtRun:
    """``dbt build`` of ``project_dir`` into ``database`` (whose connection is in ``env``), without the nodes
    ``exclude`` selects; PublishError naming each failed model or test, or dbt's last lines when it failed
    before running any."""
    check_project(project_dir)
    target, logs = os.path.join(work_dir, "target"), os.path.join(work_dir, "logs")
    results = os.path.join(target, "run_results.json")
    if os.path.exists(results):
        os.remove(results)
    command = [dbt, "build", "--project-dir", project_dir, "--profiles-dir", project_dir, "--target-path", target,
               "--log-path", logs] + (["--exclude", *exclude] if exclude else [])
    env = {**env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1",
           "DBT_PARTIAL_PARSE": "true"}
    log.info("dbt build of %s into %s (logs in %s)", project_dir, database, logs)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    output = redact(done.stdout + done.stderr)
    for line in output.splitlines():
        log.debug("dbt: %s", line)
    try:
        with open(results, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError):
        run = None
    if run is None:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-5:])
        raise PublishError(f"dbt build in {database} failed before running anything (exit {done.returncode}): "
                           f"{tail}; prod is unchanged", database=database)
    counts: dict[str, int] = {}
    failed = []
    for result in run.get("results", []):
        kind = result.get("unique_id", "").split(".", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
        if result.get("status") in FAILED:
            failed.append(result)
    if failed or done.returncode != 0:
        names = tuple(result.get("unique_id", "?") for result in failed)
        details = "; ".join(f"{result.get('unique_id')}: {result.get('status')}"
                            + (f" ({_first_line(result.get('message'))})" if result.get("message") else "")
                            for result in failed) or f"dbt exited {done.returncode}"
        raise PublishError(f"dbt build in {database} failed, so prod was not touched: {details}; fix the data or the "
                           f"model, then publish again (logs in {logs})", database=database, nodes=names)
    return DbtRun(counts, float(run.get("elapsed_time") or 0.0))


def _first_line(message: object) -> str:
    text = redact(str(message)).strip()
    return text.splitlines()[0] if text else ""
