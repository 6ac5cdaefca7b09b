"""The gold layer's benchmark: a full build of the vault and the star, then one day's changes.

    .venv/bin/python benchmarks/gold.py                         # 5,000 students, 80 school days
    .venv/bin/python benchmarks/gold.py --students 50 --backfill-days 5 --out /tmp/results

It writes the ``edfi_scale_data.py`` change feed (a backfill and one day of about 1% changes) and a
**matching Clever export**: the district's students are Clever's roster, ``sis_id`` = the Ed-Fi
``studentUniqueId``, ``clever_school_id`` an ObjectId derived from the Ed-Fi ``schoolId`` (as
``oea_core.district`` does), plus ``max(2, n // 20)`` unmatched (``990…``) and ``max(1, n // 40)``
blank-``sis_id`` students whose rows the star keeps under the unknown student. Clever's backfill has one
file per calendar day from the first school day to the backfill's last; the day's Clever files are the
Ed-Fi day's date (the same roster and seed: the same users, that day's activity). Then, each in a fresh
process on one lake (the local default Delta engine):

- **setup** (reported, not the target): land, ingest and refine the Ed-Fi backfill; land and ingest the
  Clever backfill;
- **full build**: ``build_vault`` then ``build_star`` for the backfill batch;
- **day**: land, ingest and refine the day's Ed-Fi changes and land and ingest its Clever files (timed
  apart), then ``build_vault`` and ``build_star`` for that batch: the build is compared with the full build.

Times exclude Spark's start. Each build is split into phases (each vault table, each dimension and fact,
``dim_date``, the data-quality checks; ``other`` is the rest of ``build_star``: the facts' date ranges and
the unknown-student count, which run the fact plans once more) by wrapping the functions
``oea_core.gold`` calls. Results: ``benchmarks/results/gold.{json,md}``. Target (reported, not asserted):
a day's build costs at most 1/10 of the full build.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # the benchmark next door: machine(), measure(), _spark()

HERE = Path(__file__).resolve().parent
SALT = "benchmark-salt-0b1c"
SEED = 7
TARGET_DAY_OVER_FULL = 0.1
UNMATCHED_PREFIX = "990"  # the scale data's studentUniqueIds start with 6


# --- the data ---------------------------------------------------------------------------------------------------

def write_clever(root: Path, students: int, backfill_days: int) -> dict:
    """The Clever exports matching ``edfi_scale_data``'s district: ``root/backfill`` and ``root/day1``."""
    from edfi_scale_data import FIRST_SCHOOL_DAY, ScaleDistrict, school_day

    from oea_core.clever.generator import CleverStudent, generate_clever_export, object_id_for

    district = ScaleDistrict(students, backfill_days, SEED)  # the layout only: schools and student ids
    names = {district.school_id(s): f"Grand Bend High School {s + 1}" for s in range(district.schools)}
    clever_ids = {school_id: object_id_for("clever-school", SEED, school_id) for school_id in names}
    schools = sorted(names)
    matched = [(district.unique_id(i), district.school_id(i % district.schools)) for i in range(students)]
    unmatched = [(f"{UNMATCHED_PREFIX}{i:05d}", schools[i % len(schools)]) for i in range(max(2, students // 20))]
    blank = [("", schools[i % len(schools)]) for i in range(max(1, students // 40))]
    roster = [CleverStudent(sis_id, clever_ids[school], names[school]) for sis_id, school in matched + unmatched + blank]
    last = school_day(backfill_days - 1)
    day = school_day(backfill_days)  # the date of the Ed-Fi day's attendance
    common = {"students": roster, "teachers": max(1, students // 25), "staff": 2, "seed": SEED, "quirks": False}
    backfill = generate_clever_export(root / "backfill", days=(last - FIRST_SCHOOL_DAY).days + 1,
                                      start=FIRST_SCHOOL_DAY, **common)
    today = generate_clever_export(root / "day1", days=1, start=day, **common)
    known = {sis_id for sis_id, _ in matched}
    return {"backfill": {"folder": str(root / "backfill"), "rows": backfill.rows,
                         "unmatched_rows": _unmatched_rows(backfill.files, known),
                         "first": FIRST_SCHOOL_DAY.isoformat(), "last": last.isoformat()},
            "day": {"folder": str(root / "day1"), "rows": today.rows,
                    "unmatched_rows": _unmatched_rows(today.files, known), "date": day.isoformat()},
            "students": {"matched": len(matched), "unmatched": len(unmatched), "blank_sis_id": len(blank)}}


def _unmatched_rows(files, known: set[str]) -> dict[str, int]:
    """Per report, the students' rows whose ``sis_id`` is blank or no Ed-Fi student's (read back from the files)."""
    counts: dict[str, int] = {}
    for path in files:
        report = Path(path).parent.name
        counts.setdefault(report, 0)
        if Path(path).name.endswith("-students.csv"):
            with open(path, encoding="utf-8", newline="") as handle:
                counts[report] += sum(1 for row in csv.DictReader(handle) if row["sis_id"] not in known)
    return counts


# --- workers (each in its own process, printing one JSON line) -------------------------------------------------

def _modules(lake_setting: str):
    from oea_core import LakePaths, Salt
    from oea_core.clever import CleverModule
    from oea_core.edfi import EdFiModule

    spark, spark_start = run._spark()
    lake = LakePaths.from_setting(lake_setting)
    salt = Salt(SALT, "benchmark")
    return spark, spark_start, lake, EdFiModule(lake, spark=spark, salt=salt), CleverModule(lake, spark=spark, salt=salt)


def _timed(out: dict, key: str, function, *a, **kw):
    started = time.perf_counter()
    try:
        return function(*a, **kw)
    finally:
        out[key] = time.perf_counter() - started


def _land_ingest(args, edfi, clever) -> dict:
    """Land, ingest and refine one Ed-Fi batch and land and ingest one Clever batch (``args.batch_id``)."""
    out: dict = {}
    _timed(out, "edfi_land_s", lambda: (edfi.land(args.edfi, batch_id=args.batch_id), os.sync()))
    out["edfi_records_applied"] = sum(r.rows for r in _timed(out, "edfi_ingest_s", edfi.ingest, refine=False))
    refined = _timed(out, "edfi_refine_s", edfi.refine)
    out["edfi_refined_rows"] = sum(r.rows for r in refined if not r.skipped)
    _timed(out, "clever_land_s", lambda: (clever.land(args.clever, batch_id=args.batch_id), os.sync()))
    out["clever_rows"] = sum(r.rows for r in _timed(out, "clever_ingest_s", clever.ingest))
    out["total_s"] = sum(v for k, v in out.items() if k.endswith("_s"))
    return out


class _Phases:
    """Seconds per phase of a build, by wrapping the functions ``oea_core.gold`` calls (no change to it)."""

    # the Spark actions build_star runs itself, outside the functions above (a DataFrame method, so only those
    # called at depth 0, not from inside a wrapped function, are counted)
    ACTIONS = (("first", "fact date ranges"), ("localCheckpoint", "fact_digital_activity plan"),
               ("count", "unknown-student count"))

    def __init__(self) -> None:
        from pyspark.sql import DataFrame

        from oea_core.gold import build, star_plan, vault

        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.depth = 0
        name = lambda path: str(path).rstrip("/").rsplit("/", 1)[-1]
        # each table's phase is its plan (the rows computed) plus its commit (the rows written)
        for module, function, label in (
                (vault, "plan_table", lambda a, kw: a[2].target.table),
                (star_plan, "_scd2", lambda a, kw: a[2]),
                (star_plan, "plan_scd1", lambda a, kw: name(a[1])),
                (star_plan, "plan_dim_date", lambda a, kw: "dim_date"),
                (star_plan, "plan_sync", lambda a, kw: name(a[1])),
                (build, "run_checks", lambda a, kw: "checks")):
            setattr(module, function, self._wrap(getattr(module, function), label))
        commit_all = build.commit_all
        build.commit_all = lambda pending, area: commit_all(
            {table: dataclasses.replace(write, commit=self._wrap(write.commit, lambda a, kw, t=table: t))
             for table, write in pending.items()}, area)
        for method, label in self.ACTIONS:
            setattr(DataFrame, method, self._wrap(getattr(DataFrame, method), lambda a, kw, label=label: label,
                                                  outermost=True))

    def _wrap(self, function, label, outermost: bool = False):
        @functools.wraps(function)
        def wrapper(*a, **kw):
            if self.current is None or (outermost and self.depth):
                return function(*a, **kw)
            started = time.perf_counter()
            self.depth += 1
            try:
                return function(*a, **kw)
            finally:
                self.depth -= 1
                key = f"{self.current}:{label(a, kw)}"
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
        return wrapper

    def build(self, out: dict, lake, batch_id: str, load_ts: dt.datetime, effective_date: str, store) -> None:
        """``build_vault`` then ``build_star`` for ``batch_id``: times, phases, rows written, unknown students."""
        from oea_core.gold import build_star, build_vault

        self.seconds, self.current = {}, "vault"
        vault = _timed(out, "vault_s", build_vault, lake, batch_id, load_ts=load_ts, store=store)
        self.current = "star"
        star = _timed(out, "star_s", build_star, lake, batch_id, effective_date=effective_date, store=store)
        out["build_s"] = out["vault_s"] + out["star_s"]
        self.seconds["star:other"] = out["star_s"] - sum(v for k, v in self.seconds.items() if k.startswith("star:"))
        self.seconds["vault:other"] = out["vault_s"] - sum(v for k, v in self.seconds.items()
                                                           if k.startswith("vault:"))
        self.current = None  # what follows is not timed
        out["phases"] = dict(sorted(self.seconds.items(), key=lambda kv: -kv[1]))
        out["tables"] = {name: {"rows": r.rows, "inserted": r.inserted, "updated": r.updated, "deleted": r.deleted,
                                "files": r.files, "skipped": r.skipped}
                         for result in (vault, star) for name, r in result.tables.items()}
        out["unknown_students"] = star.unknown_students
        out["checks_failed"] = sum(1 for n in {**vault.checks, **star.checks}.values() if n)
        out["table_rows"] = {f"{area}/{name}": store.read(lake.table("stage3p", area, name)).count()  # not timed
                             for area in ("vault", "star") for name in sorted(os.listdir(lake.path("stage3p", area)))}


def worker_setup(args) -> dict:
    spark, spark_start, _lake, edfi, clever = _modules(args.lake)
    out = {"spark_start_s": spark_start, "engine": edfi.store.name, **_land_ingest(args, edfi, clever)}
    spark.stop()
    return out


def worker_full(args) -> dict:
    phases = _Phases()
    spark, spark_start, lake, edfi, _clever = _modules(args.lake)
    out: dict = {"spark_start_s": spark_start}
    phases.build(out, lake, args.batch_id, dt.datetime.fromisoformat(args.load_ts), args.effective_date, edfi.store)
    spark.stop()
    return out


def worker_day(args) -> dict:
    phases = _Phases()
    spark, spark_start, lake, edfi, clever = _modules(args.lake)
    out: dict = {"spark_start_s": spark_start, "ingest": _land_ingest(args, edfi, clever)}
    phases.build(out, lake, args.batch_id, dt.datetime.fromisoformat(args.load_ts), args.effective_date, edfi.store)
    spark.stop()
    return out


WORKERS = {"setup": worker_setup, "full": worker_full, "day": worker_day}


def run_worker(kind: str, lake: Path, edfi: str, clever: str, batch_id: str, effective_date: str) -> dict:
    """A worker in a fresh process, with its wall time and the process tree's peak memory (summed PSS)."""
    load_ts = f"{effective_date}T23:00:00+00:00"
    return run.measure([sys.executable, __file__, "--worker", kind, "--lake", str(lake), "--edfi", edfi,
                        "--clever", clever, "--batch-id", batch_id, "--effective-date", effective_date,
                        "--load-ts", load_ts], kind)


# --- the driver ------------------------------------------------------------------------------------------------

def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def benchmark(students: int, backfill_days: int, workdir: Path) -> dict:
    from edfi_scale_data import school_day, write_scale_export

    report: dict = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": run.machine(),
                    "students": students, "backfill_days": backfill_days, "load_before": _load()}
    print(f"generating Ed-Fi and Clever for {students:,} students ...", flush=True)
    t = time.perf_counter()
    batches = write_scale_export(workdir / "edfi", students, days=1, backfill_days=backfill_days, seed=SEED)
    clever = write_clever(workdir / "clever", students, backfill_days)
    os.sync()
    report["generate_s"] = time.perf_counter() - t
    records = [sum(c["upserts"] + c["deletes"] for c in b["records"].values()) for b in batches]
    report["records"] = {"edfi_backfill": records[0], "edfi_day": records[1], "clever": clever}
    lake = workdir / "lake"
    backfill_date, day_date = school_day(backfill_days - 1).isoformat(), school_day(backfill_days).isoformat()
    steps = (("setup", batches[0]["folder"], clever["backfill"]["folder"], "b00", backfill_date),
             ("full", batches[0]["folder"], clever["backfill"]["folder"], "b00", backfill_date),
             ("day", batches[1]["folder"], clever["day"]["folder"], "b01", day_date))
    for kind, edfi_folder, clever_folder, batch_id, effective in steps:
        report[kind] = result = run_worker(kind, lake, edfi_folder, clever_folder, batch_id, effective)
        result["effective_date"] = effective
        print(f"  {kind:<5} " + (f"build {result['build_s']:6.1f} s (vault {result['vault_s']:.1f} s, star "
                                 f"{result['star_s']:.1f} s)" if "build_s" in result else
                                 f"total {result['total_s']:6.1f} s")
              + f"  peak {result['peak_memory_gib']:.2f} GiB", flush=True)
    report["load_after"] = _load()
    report["summary"] = summarize(report)
    return report


def summarize(report: dict) -> dict:
    full, day = report["full"], report["day"]
    clever = report["records"]["clever"]
    expected_full = sum(clever["backfill"]["unmatched_rows"].values())
    summary = {"setup_s": report["setup"]["total_s"], "full_build_s": full["build_s"],
               "day_ingest_s": day["ingest"]["total_s"], "day_build_s": day["build_s"],
               "day_over_full": day["build_s"] / full["build_s"], "target": TARGET_DAY_OVER_FULL,
               "unknown_students_full": full["unknown_students"], "unknown_students_day": day["unknown_students"],
               "unmatched_clever_rows": {"backfill": expected_full,
                                         "with_day": expected_full + sum(clever["day"]["unmatched_rows"].values())}}
    summary["target_met"] = summary["day_over_full"] <= TARGET_DAY_OVER_FULL
    return summary


def _phase_rows(full: dict, day: dict) -> list[str]:
    keys = sorted(set(full["phases"]) | set(day["phases"]), key=lambda k: -full["phases"].get(k, 0.0))
    return [f"| {k} | {full['phases'].get(k, 0.0):.1f} s | {day['phases'].get(k, 0.0):.1f} s |" for k in keys]


def markdown(report: dict) -> str:
    m, s, rec = report["machine"], report["summary"], report["records"]
    setup, full, day = report["setup"], report["full"], report["day"]
    clever = rec["clever"]
    cb, cd = clever["backfill"], clever["day"]
    busy = max(report["load_before"][0], report["load_after"][0]) > (m["cores"] or 1)
    lines = [f"# The gold layer: a full build and a day ({report['when']})", "",
             (f"{m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, pyspark {m['pyspark']}, deltalake "
              f"{m['deltalake']}, delta-spark {m.get('delta_spark')}, {m['java']}. One run, {setup['engine']} engine. "
              f"Load average (1, 5, 15 min) before {report['load_before']}, after {report['load_after']}"
              + (": **the machine was shared with other work**, so times are high and noisy." if busy else ".")), "",
             (f"**{report['students']:,} students.** Ed-Fi (`edfi_scale_data.py`): a backfill of "
              f"{rec['edfi_backfill']:,} records ({report['backfill_days']} school days of attendance) and a day of "
              f"{rec['edfi_day']:,} changes. Clever, matching (`sis_id` = `studentUniqueId`): "
              f"{clever['students']['matched']:,} matched, {clever['students']['unmatched']:,} unmatched and "
              f"{clever['students']['blank_sis_id']:,} blank-`sis_id` students; a backfill from {cb['first']} to "
              f"{cb['last']} (" + ", ".join(f"{n:,} {r} rows" for r, n in cb["rows"].items())
              + f") and the day {cd['date']} (" + ", ".join(f"{n:,} {r} rows" for r, n in cd["rows"].items())
              + f"). Generated in {report['generate_s']:.0f} s."), "",
             "| step | what | time | Spark start | peak memory |", "|---|---|---:|---:|---:|",
             (f"| setup | land + ingest + refine the Ed-Fi backfill, land + ingest the Clever backfill | "
              f"{setup['total_s']:.1f} s | {setup['spark_start_s']:.1f} s | {setup['peak_memory_gib']:.2f} GiB |"),
             (f"| **full build** | `build_vault` {full['vault_s']:.1f} s + `build_star` {full['star_s']:.1f} s | "
              f"**{full['build_s']:.1f} s** | {full['spark_start_s']:.1f} s | {full['peak_memory_gib']:.2f} GiB |"),
             (f"| day: ingest | land + ingest + refine the day's Ed-Fi changes, land + ingest its Clever files | "
              f"{day['ingest']['total_s']:.1f} s | {day['spark_start_s']:.1f} s | {day['peak_memory_gib']:.2f} GiB |"),
             (f"| **day: build** | `build_vault` {day['vault_s']:.1f} s + `build_star` {day['star_s']:.1f} s | "
              f"**{day['build_s']:.1f} s** | (same process) | (same process) |"), "",
             (f"**Target: a day's build at most {TARGET_DAY_OVER_FULL:g} of the full build: {s['day_build_s']:.1f} s / "
              f"{s['full_build_s']:.1f} s = {s['day_over_full']:.3f} — "
              + ("met" if s["target_met"] else "**not met**") + ".**"), "",
             (f"Clever rows under the unknown student (`student_key = -1`): {full['unknown_students']:,} after the "
              f"full build, {day['unknown_students']:,} after the day (the files hold "
              f"{s['unmatched_clever_rows']['backfill']:,} and {s['unmatched_clever_rows']['with_day']:,} rows of "
              "unmatched or blank-`sis_id` students)."), "",
             "## Rows per table", "",
             ("Written by the build (`GoldResult.tables[...].rows`: a write's rows, or a MERGE's change set) and "
              "the table's rows after it."), "",
             "| table | full: written | after full | day: written | day: inserted / updated / deleted | after day |",
             "|---|---:|---:|---:|---:|---:|"]
    for table in sorted(set(full["tables"]) | set(day["tables"]), key=lambda t: (not t.startswith(("hub", "link", "sat")), t)):
        f, d = full["tables"].get(table, {}), day["tables"].get(table, {})
        area = "star" if table.startswith(("dim_", "fact_")) else "vault"
        lines.append(f"| {table} | {f.get('rows', 0):,} | {full['table_rows'].get(f'{area}/{table}', 0):,} | "
                     f"{d.get('rows', 0):,} | {d.get('inserted', 0):,} / {d.get('updated', 0):,} / "
                     f"{d.get('deleted', 0):,} | {day['table_rows'].get(f'{area}/{table}', 0):,} |")
    lines += ["", "## Where the time goes", "",
              ("Wall time per phase (`vault:<table>` is `load_table`; `star:dim_*` the SCD merge; `star:fact_*` "
               "`sync_rows`, which runs the fact's whole plan (and, on a day, compares it with the whole table); "
               "`star:fact date ranges` is build_star's `agg(min, max).first()` per fact and date column for "
               "`dim_date`, which runs each fact's whole plan again; `star:fact_digital_activity plan` its "
               "`localCheckpoint` before the unknown-student count; `other` the rest: reads, Delta logs, plans)."), "",
              "| phase | full | day |", "|---|---:|---:|", *_phase_rows(full, day), "",
              ("What was measured: each step in a fresh process on one lake (`benchmarks/gold.py`); times exclude "
               "Spark's start. Peak memory: the process tree's summed PSS, JVM included; the day's covers its "
               "ingest and its build."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The gold layer: a full build, then a day's changes.")
    parser.add_argument("--students", type=int, default=5_000, help="students (default 5,000)")
    parser.add_argument("--backfill-days", type=int, default=80, help="school days in the backfill (default 80)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="gold", help="results file name (default gold: gold.json, gold.md)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    for hidden in ("--lake", "--edfi", "--clever", "--batch-id", "--effective-date", "--load-ts"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as temp:
        report = benchmark(args.students, args.backfill_days, Path(temp))
    with open(os.path.join(args.out, f"{args.name}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    text = markdown(report)
    with open(os.path.join(args.out, f"{args.name}.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
