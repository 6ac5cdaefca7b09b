"""Benchmark Clever ingestion against DuckDB and bare Spark on the same data.

    .venv/bin/python benchmarks/run.py                      # 1M and 5M rows, median of 3 runs
    .venv/bin/python benchmarks/run.py --sizes 200000 --repeats 1 --edfi-students 1000
    .venv/bin/python benchmarks/run.py --sizes 300 --repeats 1 --days 5 --edfi-students 30 \
        --edfi-resources students                           # a smoke run (the test suite's)

For each size it generates a Clever daily-participation export with the module generator,
then, in fresh processes, times:

- **ours**, once per Delta engine (``spark_delta``: Delta Lake's own Spark writer; ``delta_rs``:
  Spark Parquet + a delta-rs commit): ``oea_core`` landing and ingesting it into a fresh lake (CSV
  checks, rejects, the SHA-256 pseudonyms, the ``p`` and lookup Delta tables), then ingesting again
  with nothing new. At the largest size it also lands one more day and ingests it (the daily run).
- **duckdb**: the reference a user might pick on one machine: DuckDB reads the same CSV,
  computes the same pseudonyms and writes the same year/month-partitioned Parquet.
- **spark**: the floor: bare Spark reading, hashing and writing the same Parquet.

Peak memory is the whole process tree (the JVM included), sampled every 0.1 s as the sum of each
process's PSS (proportional set size). RSS would count memory that the JVM's short-lived forked
children share with it once per process, and overstate the peak by up to the JVM's size. Results go to
``benchmarks/results/clever.{json,md}`` with the machine, the versions and the medians.
Ed-Fi (``--edfi-students``) is timed too, on each engine: land, ingest to current state, refine,
ingest again (``--edfi-resources``: only those resources' changes are written; default all of them).
The faster engine at the largest Clever size is the local default (``oea_core.delta.LOCAL_DEFAULT``).
Not part of the test suite: timing targets live here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SALT = "benchmark-salt-0b1c"
START = dt.date(2022, 8, 15)
ENGINES = {"spark_delta": "spark-delta", "delta_rs": "delta-rs"}  # result key -> engine name
COLUMNS = ("date", "sis_id_pseudonym", "clever_user_id_pseudonym", "clever_school_id", "school_name", "active",
           "num_logins", "num_resources_accessed", "role", "year", "month")


# --- workers (each runs in its own process, prints one JSON line) ------------------------------------------

def _spark():
    from oea_core.spark import get_spark

    started = time.perf_counter()
    spark = get_spark("oea-benchmark")
    spark.range(1).count()
    return spark, time.perf_counter() - started


def _delta_files(lake) -> int:
    from deltalake import DeltaTable

    total = 0
    for stage, table in (("stage2p", "daily_participation_pseudo"), ("stage2np", "daily_participation_lookup")):
        path = lake.table(stage, "clever", table)
        if os.path.isdir(path):
            total += len(DeltaTable(path).file_uris())
    return total


def _timed_land(module, export: str) -> float:
    """Land ``export`` as batch b0001; the seconds taken, write-back to disk included."""
    t = time.perf_counter()
    module.land(export, batch_id="b0001")
    os.sync()  # the landed copy's write-back belongs to landing, not to the ingest timed next
    return time.perf_counter() - t


def worker_ours(args) -> dict:
    from oea_core import LakePaths, Salt
    from oea_core.clever import CleverModule

    spark, spark_start = _spark()
    lake = LakePaths.from_setting(args.lake)
    module = CleverModule(lake, spark=spark, salt=Salt(SALT, "benchmark"), engine=args.engine)
    out = {"spark_start_s": spark_start}
    out["land_s"] = _timed_land(module, args.export)
    t = time.perf_counter()
    results = module.ingest()
    out["ingest_s"] = time.perf_counter() - t
    out["rows"] = sum(r.rows for r in results)
    out["rejected"] = sum(r.rejected for r in results)
    out["delta_files"] = _delta_files(lake)
    t = time.perf_counter()
    again = module.ingest()
    out["noop_ingest_s"] = time.perf_counter() - t
    assert all(r.nothing_new for r in again), "a second ingest found something new"
    if args.increment:
        t = time.perf_counter()
        module.land(args.increment, batch_id="b0002")
        results = module.ingest()
        out["increment_s"] = time.perf_counter() - t
        out["increment_rows"] = sum(r.rows for r in results)
        out["delta_files_after_increment"] = _delta_files(lake)
    spark.stop()
    return out


def worker_duckdb(args) -> dict:
    import duckdb

    files = str(Path(args.export) / "daily-participation" / "*.csv")
    con = duckdb.connect()
    t = time.perf_counter()

    def pseudo(col: str) -> str:  # null or blank stays null, as in oea_core
        return (f"CASE WHEN {col} IS NULL OR trim({col}) = '' THEN NULL "
                f"ELSE sha256({col} || '{SALT}') END AS {col}_pseudonym")

    con.execute(f"""
        COPY (
            SELECT CAST(date AS DATE) AS date, {pseudo('sis_id')}, {pseudo('clever_user_id')},
                   clever_school_id, school_name, CAST(active AS BOOLEAN) AS active,
                   CAST(num_logins AS INTEGER) AS num_logins,
                   CAST(num_resources_accessed AS INTEGER) AS num_resources_accessed,
                   regexp_extract(filename, '-(students|teachers|staff)\\.csv$', 1) AS role,
                   year(CAST(date AS DATE)) AS year, month(CAST(date AS DATE)) AS month
            FROM read_csv('{files}', header = true, all_varchar = true, union_by_name = true, filename = true)
        ) TO '{args.lake}' (FORMAT PARQUET, PARTITION_BY (year, month))""")
    elapsed = time.perf_counter() - t
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{args.lake}/**/*.parquet')").fetchone()[0]
    return {"ingest_s": elapsed, "rows": rows}


def worker_spark(args) -> dict:
    from pyspark.sql import functions as F

    spark, spark_start = _spark()
    t = time.perf_counter()
    df = spark.read.csv(str(Path(args.export) / "daily-participation"), header=True, recursiveFileLookup=True)

    def pseudo(col: str):
        value = F.col(col)
        return F.when(value.isNull() | (F.trim(value) == ""), F.lit(None)).otherwise(
            F.sha2(F.concat(value, F.lit(SALT)), 256)).alias(f"{col}_pseudonym")

    date = F.to_date("date")
    out = df.select(date.alias("date"), pseudo("sis_id"), pseudo("clever_user_id"), "clever_school_id",
                    "school_name", F.col("active").cast("boolean").alias("active"),
                    F.col("num_logins").cast("int").alias("num_logins"),
                    F.col("num_resources_accessed").cast("int").alias("num_resources_accessed"),
                    F.regexp_extract(F.input_file_name(), r"-(students|teachers|staff)\.csv$", 1).alias("role"),
                    F.year(date).alias("year"), F.month(date).alias("month"))
    out.write.partitionBy("year", "month").parquet(args.lake)
    elapsed = time.perf_counter() - t
    rows = spark.read.parquet(args.lake).count()
    spark.stop()
    return {"spark_start_s": spark_start, "ingest_s": elapsed, "rows": rows}


def worker_edfi(args) -> dict:
    from oea_core import LakePaths, Salt
    from oea_core.edfi import EdFiModule

    spark, spark_start = _spark()
    module = EdFiModule(LakePaths.from_setting(args.lake), spark=spark, salt=Salt(SALT, "benchmark"),
                        engine=args.engine)
    out = {"spark_start_s": spark_start}
    out["land_s"] = _timed_land(module, args.export)
    t = time.perf_counter()
    module.ingest(refine=False)
    out["ingest_s"] = time.perf_counter() - t
    t = time.perf_counter()
    refined = module.refine()
    out["refine_s"] = time.perf_counter() - t
    out["refined_rows"] = sum(r.rows for r in refined)
    t = time.perf_counter()
    again = module.ingest()
    out["noop_ingest_s"] = time.perf_counter() - t
    assert all(r.nothing_new for r in again), "a second Ed-Fi ingest found something new"
    spark.stop()
    return out


WORKERS = {"ours": worker_ours, "duckdb": worker_duckdb, "spark": worker_spark, "edfi": worker_edfi}


# --- the driver -------------------------------------------------------------------------------------------

def _pss(process) -> int:
    """A process's proportional set size: shared pages count once across the processes sharing them."""
    import psutil

    try:
        return process.memory_full_info().pss
    except psutil.Error:  # gone between listing and reading
        return 0


def run_worker(kind: str, export: Path, lake: Path, increment: Path | None = None,
               engine: str | None = None) -> dict:
    """Run a worker in a fresh process; adds wall time and the process tree's peak memory (summed PSS)."""
    command = [sys.executable, __file__, "--worker", kind, "--export", str(export), "--lake", str(lake)]
    if increment:
        command += ["--increment", str(increment)]
    if engine:
        command += ["--engine", engine]
    return measure(command, kind)


def measure(command: list[str], kind: str) -> dict:
    """Run a worker command; its JSON line plus wall time and the process tree's peak memory (summed PSS)."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(_pss(p) for p in tree))
            except psutil.Error:
                pass
            # reading a JVM's smaps costs a fifth of a core at 10 Hz: sample fast only while the tree starts
            time.sleep(0.1 if time.perf_counter() - started < 10 else 1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {kind} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    result["peak_memory_gib"] = peak[0] / 2**30
    return result


def generate(root: Path, rows: int, days: int) -> tuple[Path, Path, int]:
    """A backfill export of about ``rows`` daily-participation rows over ``days`` days, and the next day."""
    from oea_core.clever.generator import generate_clever_export

    users = max(3, rows // days)
    people = {"students": users * 90 // 100, "teachers": users * 8 // 100}
    people["staff"] = max(1, users - people["students"] - people["teachers"])
    backfill = generate_clever_export(root / "backfill", **people, days=days, start=START, quirks=False,
                                      reports=("daily-participation",))
    generate_clever_export(root / "day", **people, days=1, start=START + dt.timedelta(days=days), quirks=False,
                           reports=("daily-participation",))
    os.sync()  # nothing timed later pays for writing the export back to disk
    return root / "backfill", root / "day", backfill.rows["daily-participation"]


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def machine() -> dict:
    import deltalake
    import duckdb
    import psutil
    import pyspark

    from oea_core.spark import local_jars

    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "pyspark": pyspark.__version__, "deltalake": deltalake.__version__, "duckdb": duckdb.__version__,
            "delta_spark": next((Path(j).stem.split("-")[-1] for j in local_jars() if "delta-spark_" in j), None),
            "java": subprocess.run(["java", "-version"], capture_output=True, text=True,
                                   check=False).stderr.splitlines()[0]}


OURS_KEYS = ("ingest_s", "land_s", "spark_start_s", "noop_ingest_s", "increment_s", "peak_memory_gib", "wall_s",
             "delta_files")


def benchmark(sizes: list[int], repeats: int, days: int, workdir: Path, references: bool = True,
              engines: tuple[str, ...] = tuple(ENGINES)) -> dict:
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "repeats": repeats, "days": days, "engines": list(engines), "sizes": []}
    for size in sizes:
        root = workdir / f"rows_{size}"
        print(f"generating about {size:,} rows ...", flush=True)
        backfill, day, rows = generate(root, size, days)
        kinds = [*engines, *(("duckdb", "spark") if references else ())]
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for i in range(repeats):
            for kind in kinds:  # interleaved, so a noisy minute does not favour one engine
                lake = root / f"{kind}_{i}"
                ours = kind in ENGINES
                increment = day if ours and size == max(sizes) else None
                result = run_worker("ours" if ours else kind, backfill, lake, increment, ENGINES.get(kind))
                runs[kind].append(result)
                print(f"  {size:>10,} rows  run {i + 1}/{repeats}  {kind:<11} ingest {result['ingest_s']:7.1f} s  "
                      f"peak {result['peak_memory_gib']:.2f} GiB", flush=True)
                subprocess.run(["rm", "-rf", str(lake)], check=True)
        entry: dict = {"rows": rows, "runs": runs}
        if references:
            for kind in ("duckdb", "spark"):
                entry[kind] = {"ingest_s": _median(runs[kind], "ingest_s"), "rows": runs[kind][0]["rows"],
                               "peak_memory_gib": _median(runs[kind], "peak_memory_gib")}
        for kind in engines:
            medians = {k: _median(runs[kind], k) for k in OURS_KEYS}
            result = {**medians, "rows_per_s": rows / medians["ingest_s"], "rows_written": runs[kind][0]["rows"],
                      "rejected": runs[kind][0]["rejected"]}
            if medians.get("increment_s") is not None:
                result["increment_rows"] = runs[kind][0]["increment_rows"]
                result["increment_over_backfill"] = medians["increment_s"] / medians["ingest_s"]
            if references:
                result["over_duckdb"] = medians["ingest_s"] / entry["duckdb"]["ingest_s"]
                result["over_bare_spark"] = medians["ingest_s"] / entry["spark"]["ingest_s"]
            entry[kind] = result
        entry["faster_engine"] = ENGINES[min(engines, key=lambda k: entry[k]["ingest_s"])]
        written = {entry[k]["rows_written"] for k in engines} | {entry[k]["rows"] for k in ("duckdb", "spark")
                                                                  if k in entry}
        if len(written) != 1:
            raise SystemExit(f"the engines wrote different row counts at {size}: {written}")
        report["sizes"].append(entry)
    return report


def only_resources(dataset, resources: list[str] | None):
    """``dataset`` with only ``resources``' changes (None: all of them); an unknown resource is an error."""
    from oea_core.edfi import EdFiDataset

    if not resources:
        return dataset
    unknown = set(resources) - {e.resource for e in dataset.events()}
    if unknown:
        raise SystemExit(f"no such Ed-Fi resources in the generated data: {', '.join(sorted(unknown))}")
    return EdFiDataset(batches=[[e for e in batch if e.resource in resources] for batch in dataset.batches],
                       start=dataset.start)


def benchmark_edfi(students: list[int], repeats: int, workdir: Path,
                   engines: tuple[str, ...] = tuple(ENGINES), resources: list[str] | None = None) -> dict:
    """Ed-Fi: land, ingest (current state), refine and ingest again, per number of students and engine
    (``resources``: only those resources' changes; default all)."""
    from oea_core.edfi import generate_edfi, write_edfi_export

    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "repeats": repeats, "engines": list(engines), "resources": resources, "sizes": []}
    for count in students:
        root = workdir / f"edfi_{count}"
        print(f"generating Ed-Fi data for {count:,} students ...", flush=True)
        dataset = only_resources(generate_edfi(students=count, staff=max(2, count // 20),
                                               schools=max(1, count // 1000), batches=3), resources)
        write_edfi_export(dataset, root / "export", quirks=False)
        os.sync()
        runs: dict[str, list[dict]] = {kind: [] for kind in engines}
        for i in range(repeats):
            for kind in engines:
                lake = root / f"lake_{kind}_{i}"
                result = run_worker("edfi", root / "export", lake, engine=ENGINES[kind])
                runs[kind].append(result)
                print(f"  {count:>8,} students  run {i + 1}/{repeats}  {kind:<11} ingest {result['ingest_s']:6.1f} s  "
                      f"refine {result['refine_s']:6.1f} s  peak {result['peak_memory_gib']:.2f} GiB", flush=True)
                subprocess.run(["rm", "-rf", str(lake)], check=True)
        entry: dict = {"students": count, "changes": len(dataset.events()), "batches": 3, "runs": runs}
        for kind in engines:
            entry[kind] = {k: _median(runs[kind], k) for k in ("land_s", "ingest_s", "refine_s", "noop_ingest_s",
                                                               "spark_start_s", "peak_memory_gib", "refined_rows")}
        report["sizes"].append(entry)
    return report


def markdown_edfi(report: dict) -> str:
    lines = [f"# Ed-Fi ingestion benchmark ({report['when']})", "", _machine_line(report), "",
             ("| students | engine | changes (3 batches) | land | ingest to current state | changes/s | refine "
              "| refined rows | ingest again, nothing new | peak memory |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in report["sizes"]:
        for kind in report["engines"]:
            o = e[kind]
            lines.append(f"| {e['students']:,} | {ENGINES[kind]} | {e['changes']:,} | {o['land_s']:.1f} s | "
                         f"{o['ingest_s']:.1f} s | {e['changes'] / o['ingest_s']:,.0f} | {o['refine_s']:.1f} s | "
                         f"{o['refined_rows']:,.0f} | {o['noop_ingest_s']:.2f} s | {o['peak_memory_gib']:.2f} GiB |")
    if report.get("resources"):
        lines += ["", f"Only these resources' changes: {', '.join(report['resources'])}."]
    lines += ["", ("No reference engine: the Ed-Fi work (JSON change feeds applied as upserts and deletes, then "
              "flattened into ~50 typed tables) has no one-line DuckDB equivalent. Timed after Spark has started."), ""]
    return "\n".join(lines)


def _machine_line(report: dict) -> str:
    m = report["machine"]
    return (f"{m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, pyspark {m['pyspark']}, "
            f"deltalake {m['deltalake']}, delta-spark {m.get('delta_spark')}, duckdb {m['duckdb']}, {m['java']}. Medians of {report['repeats']} runs.")


def markdown(report: dict) -> str:
    lines = [f"# Clever ingestion benchmark ({report['when']})", "",
             _machine_line(report) + f" The export spans {report['days']} days.", "",
             ("| rows | engine | ingest | rows/s | peak memory | Delta files | DuckDB | bare Spark | engine / DuckDB "
              "| engine / bare Spark |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in report["sizes"]:
        duck = e.get("duckdb", {}).get("ingest_s")
        spark = e.get("spark", {}).get("ingest_s")
        for kind in report["engines"]:
            o = e[kind]
            lines.append(f"| {e['rows']:,} | {ENGINES[kind]} | {o['ingest_s']:.1f} s | {o['rows_per_s']:,.0f} | "
                         f"{o['peak_memory_gib']:.2f} GiB | {o['delta_files']:.0f} | "
                         + (f"{duck:.1f} s" if duck else "-") + " | " + (f"{spark:.1f} s" if spark else "-") + " | "
                         + (f"{o['over_duckdb']:.2f}" if duck else "-") + " | "
                         + (f"{o['over_bare_spark']:.2f}" if spark else "-") + " |")
    lines += ["", "| rows | engine | Spark start | land | ingest again, nothing new | one more day | day / backfill |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for e in report["sizes"]:
        for kind in report["engines"]:
            o = e[kind]
            inc = (f"{o['increment_s']:.1f} s ({o['increment_rows']:,} rows)" if o.get("increment_s") is not None
                   else "-")
            ratio = f"{o['increment_over_backfill']:.3f}" if "increment_over_backfill" in o else "-"
            lines.append(f"| {e['rows']:,} | {ENGINES[kind]} | {o['spark_start_s']:.1f} s | {o['land_s']:.1f} s | "
                         f"{o['noop_ingest_s']:.2f} s | {inc} | {ratio} |")
    largest = report["sizes"][-1]
    lines += ["", f"Faster engine at {largest['rows']:,} rows: **{largest['faster_engine']}** (the local default).",
              "", ("Engines: `oea_core` land + ingest (CSV checks, rejects, pseudonyms, lookup merge, Delta commits), "
              "timed after Spark has started; spark-delta is Delta Lake's own Spark writer, delta-rs is Spark Parquet "
              "+ a delta-rs commit. DuckDB and bare Spark: read the same CSV, hash the same ids with the "
              "same salt, write the same year/month-partitioned Parquet (no checks, no Delta log). Peak memory: "
              "the whole process tree, JVM included, as summed PSS (shared pages counted once)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark Clever ingestion against DuckDB and bare Spark.")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000],
                        help="Clever daily-participation rows (default: 1M and 5M; none: skip Clever)")
    parser.add_argument("--edfi-students", type=int, nargs="*", default=[5000],
                        help="Ed-Fi students (default: 5000; none: skip Ed-Fi)")
    parser.add_argument("--edfi-resources", help="comma-separated Ed-Fi resources to write and time (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine and size; the median is reported")
    parser.add_argument("--days", type=int, default=100, help="school days the export spans (default 100)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder (default benchmarks/results)")
    parser.add_argument("--no-reference", action="store_true", help="time only oea_core")
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=list(ENGINES),
                        help="Delta engines to time (default: both)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--increment", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as temp:
        if args.sizes:
            report = benchmark(sorted(args.sizes), args.repeats, args.days, Path(temp), not args.no_reference,
                               tuple(args.engines))
            _save(args.out, "clever", report, markdown(report))
        if args.edfi_students:
            report = benchmark_edfi(sorted(args.edfi_students), args.repeats, Path(temp), tuple(args.engines),
                                    args.edfi_resources.split(",") if args.edfi_resources else None)
            _save(args.out, "edfi", report, markdown_edfi(report))
    return 0


def _save(out: str, name: str, report: dict, text: str) -> None:
    with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
