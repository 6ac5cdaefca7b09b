"""Deterministic generator of Clever Participation Report CSV exports.

Writes the Clever SFTP drop layout ``<out_dir>/<report>/<YYYY-MM-DD>-<report>-<role>.csv`` for
tests, committed samples and benchmarks. Rows are streamed to disk in chunks, so exports of millions
of rows need memory only for the user list. The same arguments always give byte-identical files.

Students are drawn at random, or given as a roster of ``CleverStudent`` (their ``sis_id`` and school),
so that the export matches another source's students (see ``oea_core.district``).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence

ROLES = ("students", "teachers", "staff")
REPORTS = ("daily-participation", "resource-usage")
COLUMNS: dict[str, tuple[str, ...]] = {
    "daily-participation": (
        "date", "sis_id", "clever_user_id", "clever_school_id", "school_name",
        "active", "num_logins", "num_resources_accessed",
    ),
    "resource-usage": (
        "date", "sis_id", "clever_user_id", "clever_school_id", "school_name",
        "resource_type", "resource_name", "resource_id", "num_access",
    ),
}
# The "column_order" quirk: a fixed permutation (indices into COLUMNS) per report.
PERMUTED: dict[str, tuple[int, ...]] = {
    "daily-participation": (2, 0, 4, 3, 1, 6, 7, 5),
    "resource-usage": (2, 0, 6, 5, 8, 7, 4, 3, 1),
}
# Applied to files in ``GeneratedExport.files`` order, one per file, cycling; "None" is a plain file.
QUIRKS = ("bom", "crlf", "column_order", "unpadded_dates", "quote_all")
_CYCLE: tuple[str | None, ...] = (*QUIRKS, None)

SCHOOL_NAMES = (
    "Lincoln High School",
    "Washington, George Elementary",
    "Roosevelt Middle School",
    "O'Keeffe Academy",
    "Jefferson Elementary School",
)
_RESOURCES = (
    ("app", "Khan Academy"), ("app", "Google Classroom"), ("app", "Newsela"), ("app", "Quizlet"),
    ("app", "Desmos"), ("app", "IXL Learning"), ("app", "Typing Club"), ("app", "BrainPOP"),
    ("link", "District Library Catalog"), ("link", "Lunch Menu"), ("portal", "Student Portal"),
    ("app", "Nearpod"),
)
_SIS_PREFIX = {"students": "S", "teachers": "T", "staff": "F"}
_ACTIVE_P = {"students": (0.35, 0.9), "teachers": (0.6, 0.95), "staff": (0.3, 0.8)}
_DEACTIVATED_SHARE = 0.05
_MAX_LOGINS = 5
_CHUNK = 8192


class CleverStudent(NamedTuple):
    """One student of a roster: ``sis_id`` (blank for a deactivated Clever user) and their Clever school."""

    sis_id: str
    clever_school_id: str
    school_name: str


@dataclass(frozen=True)
class GeneratedExport:
    """What ``generate_clever_export`` wrote."""

    root: Path
    files: tuple[Path, ...]
    rows: dict[str, int]
    users: dict[str, int]
    quirks_applied: dict[str, list[str]]


def _seed(*parts: object) -> int:
    """A stable integer seed from its parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def object_id_for(*parts: object) -> str:
    """A 24-hex id shaped like a Mongo ObjectId, the same for the same parts (for ids given in a roster)."""
    value = _seed("object-id", *parts)
    return f"{0x5C000000 + value % 0x06000000:08x}{_seed('object-id-low', *parts):016x}"


def _object_id(rng: random.Random, taken: set[str]) -> str:
    """A new, unique 24-hex id shaped like a Mongo ObjectId (timestamp, then random bits)."""
    while True:
        oid = f"{rng.randrange(0x5C000000, 0x62000000):08x}{rng.getrandbits(64):016x}"
        if oid not in taken:
            taken.add(oid)
            return oid


def _make_users(rng: random.Random, counts: dict[str, int], schools: list[tuple[str, str]],
                taken: set[str], roster: tuple[CleverStudent, ...] | None = None,
                ) -> dict[str, list[tuple[str, str, str, str, float, float]]]:
    """Per role: ``(sis_id, clever_user_id, school_id, school_name, p_active, 5 / p_active)`` tuples."""
    users = {}
    for role in ROLES:
        if role == "students" and roster is not None:
            low, high = _ACTIVE_P[role]
            users[role] = [(s.sis_id, _object_id(rng, taken), s.clever_school_id, s.school_name, p, _MAX_LOGINS / p)
                           for s in roster for p in (rng.uniform(low, high),)]
            continue
        n = counts[role]
        width = max(7, len(str(n * 10)))
        numbers = rng.sample(range(10 ** width), n)
        k = round(n * _DEACTIVATED_SHARE) or (1 if n >= 10 else 0)
        deactivated = set(rng.sample(range(n), k))
        low, high = _ACTIVE_P[role]
        rows = []
        for i in range(n):
            school_id, school_name = schools[rng.randrange(len(schools))]
            sis = "" if i in deactivated else f"{_SIS_PREFIX[role]}{numbers[i]:0{width}d}"
            p = rng.uniform(low, high)
            rows.append((sis, _object_id(rng, taken), school_id, school_name, p, _MAX_LOGINS / p))
        users[role] = rows
    return users


def _make_catalog(rng: random.Random, size: int, taken: set[str]) -> list[tuple[str, str, str]]:
    """``(resource_type, resource_name, resource_id)`` tuples, extended with generic apps if needed."""
    base = list(_RESOURCES) + [("app", f"Learning App {i}") for i in range(len(_RESOURCES) + 1, size + 1)]
    return [(kind, name, _object_id(rng, taken)) for kind, name in base]


def _writer(handle: TextIO, quirk: str | None):
    """A csv writer for one file with its quirk (BOM is written by the caller)."""
    return csv.writer(handle, lineterminator="\r\n" if quirk == "crlf" else "\n",
                      quoting=csv.QUOTE_ALL if quirk == "quote_all" else csv.QUOTE_MINIMAL)


class _Out:
    """One open report file: buffered rows, written in chunks through a csv writer."""

    __slots__ = ("count", "day", "order", "rows", "writer")

    def __init__(self, handle: TextIO, report: str, quirk: str | None, day: date) -> None:
        self.day = f"{day.year}-{day.month}-{day.day}" if quirk == "unpadded_dates" else day.isoformat()
        if quirk == "bom":
            handle.write("\ufeff")
        self.writer = _writer(handle, quirk)
        self.order = itemgetter(*PERMUTED[report]) if quirk == "column_order" else None
        header = COLUMNS[report]
        self.writer.writerow(self.order(header) if self.order else header)
        self.rows: list[tuple] = []
        self.count = 0

    def flush(self) -> None:
        if self.rows:
            self.count += len(self.rows)
            self.writer.writerows(map(self.order, self.rows) if self.order else self.rows)
            self.rows.clear()


def generate_clever_export(out_dir: str | Path, *, students: int | Sequence[CleverStudent] = 40, teachers: int = 4,
                           staff: int = 2,
                           days: int = 3, start: date = date(2022, 1, 3), seed: int = 7,
                           quirks: bool = True, resources_per_active_user: int = 2,
                           reports: tuple[str, ...] = REPORTS) -> GeneratedExport:
    """Write a synthetic Clever export under ``out_dir`` and describe it.

    One file per report, day and role (roles with no users are skipped). ``files`` is ordered by
    report, then day, then role; with ``quirks`` each file in that order gets the next of ``QUIRKS``
    (or none), cycling. Activity is the same whichever ``reports`` are asked for.

    ``students`` is a number of random students, or a roster: one ``CleverStudent`` (or
    ``(sis_id, clever_school_id, school_name)`` tuple) each, in that order. With a roster, teachers and
    staff work at the roster's schools. Raises ValueError on a negative count, an unknown report, or a
    roster with a repeated ``sis_id``, a blank school id, or no schools for its teachers and staff.
    """
    if isinstance(students, int):
        roster, n_students = None, students
    else:
        roster = _check_roster(students, teachers + staff)
        n_students = len(roster)
    counts = {"students": n_students, "teachers": teachers, "staff": staff}
    for name, value in (*counts.items(), ("days", days), ("resources_per_active_user",
                                                          resources_per_active_user)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    unknown = [r for r in reports if r not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown report(s) {unknown}; expected some of {list(COLUMNS)}")
    reports = tuple(dict.fromkeys(reports))

    root = Path(out_dir)
    rng = random.Random(seed)
    taken: set[str] = set()
    if roster is None:
        schools = [(_object_id(rng, taken), name) for name in SCHOOL_NAMES]
    else:
        schools = list(dict.fromkeys((s.clever_school_id, s.school_name) for s in roster))
        taken.update(school_id for school_id, _ in schools)
    users = _make_users(rng, counts, schools, taken, roster)
    catalog = _make_catalog(rng, max(len(_RESOURCES), resources_per_active_user), taken)
    roles = [role for role in ROLES if counts[role]]
    dates = [start + timedelta(days=i) for i in range(days)]

    plan: dict[tuple[str, int, str], tuple[Path, str | None]] = {}
    applied: dict[str, list[str]] = {q: [] for q in QUIRKS}
    for report in reports:
        (root / report).mkdir(parents=True, exist_ok=True)
        for d_index, day in enumerate(dates):
            for role in roles:
                rel = f"{report}/{day.isoformat()}-{report}-{role}.csv"
                quirk = _CYCLE[len(plan) % len(_CYCLE)] if quirks else None
                if quirk:
                    applied[quirk].append(rel)
                plan[(report, d_index, role)] = (root / rel, quirk)

    totals = dict.fromkeys(reports, 0)
    k = resources_per_active_user
    n_catalog = len(catalog)
    for d_index, day in enumerate(dates):
        for role in roles:
            outs = {}
            with ExitStack() as stack:
                for report in reports:
                    path, quirk = plan[(report, d_index, role)]
                    handle = stack.enter_context(
                        open(path, "w", encoding="utf-8", newline="", buffering=1 << 20))
                    outs[report] = _Out(handle, report, quirk, day)
                activity = random.Random(_seed(seed, "activity", role, day.isoformat())).random
                choice = random.Random(_seed(seed, "resources", role, day.isoformat())).random
                _fill(users[role], activity, choice, outs.get("daily-participation"),
                      outs.get("resource-usage"), k, catalog, n_catalog)
                for out in outs.values():
                    out.flush()
            for report, out in outs.items():
                totals[report] += out.count

    files = tuple(path for path, _ in plan.values())
    return GeneratedExport(root=root, files=files, rows=totals, users=counts, quirks_applied=applied)


def _check_roster(students: Sequence[CleverStudent], others: int) -> tuple[CleverStudent, ...]:
    roster = tuple(CleverStudent(*s) for s in students)
    repeated = sorted(i for i, n in Counter(s.sis_id for s in roster if s.sis_id).items() if n > 1)
    if repeated:
        raise ValueError(f"roster: sis_id {repeated[:5]} given more than once; a Clever sis_id names one user")
    if any(not s.clever_school_id for s in roster):
        raise ValueError("roster: every student needs a clever_school_id")
    if others and not roster:
        raise ValueError("roster: an empty roster has no schools for the teachers and staff; give teachers=0, "
                         "staff=0 or some students")
    return roster


def _fill(role_users, activity, choice, daily: _Out | None, usage: _Out | None, k: int,
          catalog: list[tuple[str, str, str]], n_catalog: int) -> None:
    """Stream one role's rows for one day into its daily-participation and resource-usage files."""
    d_daily = daily.day if daily else ""
    d_usage = usage.day if usage else ""
    daily_rows = daily.rows if daily else []
    usage_rows = usage.rows if usage else []
    for sis, uid, school_id, school_name, p, scale in role_users:
        r = activity()
        if r < p:
            if daily is not None:
                daily_rows.append((d_daily, sis, uid, school_id, school_name, "true", 1 + int(r * scale), k))
            if usage is not None:
                first = int(choice() * n_catalog)
                for j in range(first, first + k):
                    kind, name, rid = catalog[j % n_catalog]
                    usage_rows.append((d_usage, sis, uid, school_id, school_name, kind, name, rid,
                                       1 + int(choice() * 10)))
                if len(usage_rows) >= _CHUNK:
                    usage.flush()
        elif daily is not None:
            daily_rows.append((d_daily, sis, uid, school_id, school_name, "false", 0, 0))
        if daily is not None and len(daily_rows) >= _CHUNK:
            daily.flush()
