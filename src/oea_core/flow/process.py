"""Processes a flow starts: killed with everything they started, and checked for life by host and pid.

A step's worker runs in its own session. A notebook kernel starts its own session too, so killing
one process group is not enough: ``kill_tree`` stops every descendant first (a stopped process
cannot fork away), then kills them all and their process groups.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

_PROC = "/proc"


def _table() -> dict[int, tuple[int, int, str, int | None]]:
    """pid -> (ppid, pgid, state, start ticks) for every process we can see."""
    table: dict[int, tuple[int, int, str, int | None]] = {}
    if os.path.isdir(os.path.join(_PROC, "self")):
        for name in os.listdir(_PROC):
            if name.isdigit():
                stat = _stat(int(name))
                if stat:
                    table[int(name)] = stat
        return table
    done = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            table[int(parts[0])] = (int(parts[1]), int(parts[2]), parts[3][0], None)
    return table


def _stat(pid: int) -> tuple[int, int, str, int | None] | None:
    try:
        with open(os.path.join(_PROC, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and brackets
    return int(fields[1]), int(fields[2]), fields[0], int(fields[19])


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    table = _table()
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, _, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(pid: int, *, include_root: bool = True) -> set[int]:
    """SIGKILL ``pid``'s descendants (and ``pid``), with their process groups; returns the pids killed."""
    own_group = os.getpgrp()
    victims: set[int] = set()
    for _ in range(50):  # stop what we find, look again: a stopped process cannot start another
        found = descendants(pid) | ({pid} if include_root else set())
        new = found - victims
        if not new:
            break
        for victim in new:
            if victim != os.getpid():
                _signal(victim, signal.SIGSTOP)
        victims |= found
    victims.discard(os.getpid())
    table = _table()
    groups = {table[v][1] for v in victims if v in table} - {own_group, 0}
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for victim in victims:
        _signal(victim, signal.SIGKILL)
    return victims


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux), so a reused pid is not taken for the old process."""
    stat = _stat(pid)
    return stat[3] if stat else None


def pid_alive(pid: int, ticks: int | None = None) -> bool:
    """Is ``pid`` a live process (not a zombie), and the same one that started at ``ticks`` when given?"""
    if os.path.isdir(os.path.join(_PROC, "self")):
        stat = _stat(pid)
        return stat is not None and stat[2] not in ("Z", "X") and (ticks is None or stat[3] == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hostname() -> str:
    return socket.gethostname()


def run_command(command: str, *, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run a shell command in its own session; on timeout kill it and all it started. Returns (exit code, stderr)."""
    with subprocess.Popen(command, shell=True, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.communicate()
            return None, f"did not finish within {timeout:g} s and was killed"
        return proc.returncode, stderr


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` s for ``pids`` to end; returns those still alive."""
    end = time.monotonic() + timeout
    alive = {p for p in pids if pid_alive(p)}
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = {p for p in alive if pid_alive(p)}
    return alive
