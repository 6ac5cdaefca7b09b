"""Benchmark Clever on a cloud lake (the Azurite emulator) against a local lake, in the same run.

    .venv/bin/python benchmarks/cloud.py                    # 1,000,000 rows, one run
    .venv/bin/python benchmarks/cloud.py --rows 50000 --repeats 3

It generates a Clever daily-participation export with the module generator (``run.generate``), starts
Azurite's Blob service on a free loopback port (``tests/servers/azurite.py``, in memory) and times, in fresh
``oea`` processes with the same salt and Delta engine, on each lake:

1. ``oea land clever EXPORT``;
2. ``oea ingest clever`` (the first, full ingest);
3. ``oea ingest clever`` again, with nothing new;
4. on the cloud lake only: ``oea ingest clever`` from a second, empty ``$OEA_CACHE`` (a second machine
   catching up: it pulls every folder of the source and finds nothing new).

A step's time is the process's wall time plus an ``os.sync()`` (as in ``run.py``: a step pays for writing
its own files back to disk). The cloud lake's pulls and pushes are read from the ``oea:`` log lines
(files, bytes, seconds per folder). Both lakes must end with the same rows in
``stage2p/clever/daily_participation_pseudo`` and ``stage2np/clever/daily_participation_lookup`` (read
with delta-rs, the cloud ones from the account), or the benchmark fails. Results go to
``benchmarks/results/cloud.{json,md}``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from run import _pss, generate, machine  # benchmarks/run.py

from servers.azurite import azurite_home, start_azurite  # tests/servers/azurite.py

SALT = "cloud-benchmark-salt-5f0e2c9a41d7b3e8"  # fixed, so both lakes hold the same pseudonyms
OEA = Path(sys.executable).parent / "oea"
STEPS = ("land", "ingest", "ingest_again", "ingest_second_cache")
TITLES = {"land": "land", "ingest": "ingest (first, full)", "ingest_again": "ingest again, nothing new",
          "ingest_second_cache": "ingest from a second, empty cache (nothing new)"}
TABLES = (("stage2p", "daily_participation_pseudo"), ("stage2np", "daily_participation_lookup"))
_SYNC = re.compile(r"^oea: (?P<folder>\S+): (?P<way>pulled|pushed) (?P<files>\d+) files "
                   r"\((?P<size>[\d.]+) (?P<unit>B|KB|MB|GB)\).*\((?P<seconds>[\d.]+) s\)$", re.MULTILINE)
_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
_ENV_DROPPED = ("OEA_LAKE", "OEA_ENGINE", "OEA_CACHE", "OEA_KEYVAULT_URL", "AZURE_STORAGE_CONNECTION_STRING",
                "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET")


def oea_step(lake: str, command: list[str], env: dict[str, str], engine: str) -> dict:
    """Run ``oea --lake LAKE --engine ENGINE COMMAND`` in a fresh process: seconds, peak memory, what it synced."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen([str(OEA), "--lake", lake, "--engine", engine, *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:  # the whole tree (the JVM included), as summed PSS, like run.py
        root = psutil.Process(proc.pid)
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], sum(_pss(p) for p in (root, *root.children(recursive=True))))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    os.sync()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"oea {' '.join(command)} on {lake} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = {"seconds": seconds, "peak_memory_gib": peak[0] / 2**30, "stdout": stdout}
    for way in ("pulled", "pushed"):
        moves = [m for m in _SYNC.finditer(stderr) if m["way"] == way]
        result[f"{way}_files"] = sum(int(m["files"]) for m in moves)
        result[f"{way}_bytes"] = round(sum(float(m["size"]) * _UNITS[m["unit"]] for m in moves))  # as logged, ~0.1%
        result[f"{way}_s"] = sum(float(m["seconds"]) for m in moves)
    result["sync_s"] = result["pulled_s"] + result["pushed_s"]
    return result


def _nothing_new(step: dict, what: str) -> None:
    lines = [line for line in step["stdout"].splitlines() if line.strip()]
    if not lines or not all(line.endswith("nothing new") for line in lines):
        raise SystemExit(f"{what} should have found nothing new, but printed:\n{step['stdout']}")


def _rows_written(step: dict) -> int:
    return sum(int(m) for m in re.findall(r"(\d+) rows written", step["stdout"]))


def run_local(export: Path, lake: Path, env: dict[str, str], engine: str) -> dict:
    steps = {"land": oea_step(str(lake), ["land", "clever", str(export)], env, engine),
             "ingest": oea_step(str(lake), ["ingest", "clever"], env, engine),
             "ingest_again": oea_step(str(lake), ["ingest", "clever"], env, engine)}
    _nothing_new(steps["ingest_again"], "the local lake's second ingest")
    return {"steps": steps, "rows_written": _rows_written(steps["ingest"]),
            "table_rows": {table: _table_rows(str(lake / stage / "clever" / table), None) for stage, table in TABLES},
            "files": _local_listing(lake)}


def run_cloud(export: Path, url: str, env: dict[str, str], caches: tuple[Path, Path], engine: str) -> dict:
    first, second = dict(env, OEA_CACHE=str(caches[0])), dict(env, OEA_CACHE=str(caches[1]))
    steps = {"land": oea_step(url, ["land", "clever", str(export)], first, engine),
             "ingest": oea_step(url, ["ingest", "clever"], first, engine),
             "ingest_again": oea_step(url, ["ingest", "clever"], first, engine),
             "ingest_second_cache": oea_step(url, ["ingest", "clever"], second, engine)}
    _nothing_new(steps["ingest_again"], "the cloud lake's second ingest")
    _nothing_new(steps["ingest_second_cache"], "the cloud lake's ingest from a second cache")
    with _environment(first):
        from oea_core import LakePaths
        from oea_core.lake.storage import lake_credentials, lake_filesystem

        lake = LakePaths.from_setting(url)
        options = lake_credentials(lake).delta_storage_options()
        account = url.split("@", 1)[1]
        rows = {table: _table_rows(f"abfss://{stage}@{account}/clever/{table}", options) for stage, table in TABLES}
        files = _account_listing(lake_filesystem(lake))
    return {"steps": steps, "rows_written": _rows_written(steps["ingest"]), "table_rows": rows, "files": files}


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _table_rows(url: str, storage_options: dict[str, str] | None) -> int:
    from deltalake import DeltaTable

    return DeltaTable(url, storage_options=storage_options).to_pyarrow_dataset().count_rows()


def _account_listing(fs) -> dict[str, dict[str, int]]:
    """``container -> {files, parquet, bytes}`` of what the account holds."""
    from oea_core.lake.storage import CONTAINERS

    listing = {}
    for container in CONTAINERS:
        with contextlib.suppress(FileNotFoundError):
            found = [(p, i) for p, i in fs.find(container, detail=True).items() if i.get("type") == "file"]
            if found:
                listing[container] = {"files": len(found), "parquet": sum(p.endswith(".parquet") for p, _ in found),
                                      "bytes": sum(int(i.get("size") or 0) for _, i in found)}
    return listing


def _local_listing(root: Path) -> dict[str, dict[str, int]]:
    listing = {}
    for container in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [p for p in container.rglob("*") if p.is_file()]
        if files:
            listing[container.name] = {"files": len(files), "parquet": sum(p.suffix == ".parquet" for p in files),
                                       "bytes": sum(p.stat().st_size for p in files)}
    return listing


def _median(runs: list[dict], step: str, key: str) -> float | None:
    values = [r["steps"][step][key] for r in runs if step in r["steps"]]
    return statistics.median(values) if values else None


def benchmark(rows: int, repeats: int, days: int, engine: str, workdir: Path) -> dict:
    load_before = os.getloadavg()[0]  # another busy process on the machine shows here
    print(f"generating about {rows:,} rows ...", flush=True)
    export, _day, generated = generate(workdir / "export", rows, days)
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED} | {"OEA_SALT": SALT}
    runs: dict[str, list[dict]] = {"local": [], "cloud": []}
    for i in range(repeats):
        for kind in ("local", "cloud") if i % 2 == 0 else ("cloud", "local"):  # alternate which goes first
            run_dir = workdir / f"{kind}_{i}"
            run_dir.mkdir()
            if kind == "local":
                result = run_local(export, run_dir / "lake", env | {"OEA_CACHE": str(run_dir / "unused")}, engine)
            else:
                with start_azurite(run_dir) as server:  # a fresh, empty account per run
                    result = run_cloud(export, server.lake_url(),
                                       env | {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string},
                                       (run_dir / "cache_a", run_dir / "cache_b"), engine)
            runs[kind].append(result)
            print(f"  run {i + 1}/{repeats} {kind:<5} " + "  ".join(
                f"{step} {s['seconds']:.1f} s" for step, s in result["steps"].items()), flush=True)
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    counts = {(kind, json.dumps(r["table_rows"], sort_keys=True)) for kind in runs for r in runs[kind]}
    if len({c[1] for c in counts}) != 1 or any(r["rows_written"] != generated for k in runs for r in runs[k]):
        raise SystemExit(f"the lakes hold different rows (generated {generated:,}): "
                         + "; ".join(f"{k}: {r['table_rows']} ({r['rows_written']:,} written)"
                                     for k in runs for r in runs[k]))
    steps: dict[str, dict] = {}
    for step in STEPS:
        local_s, cloud_s = _median(runs["local"], step, "seconds"), _median(runs["cloud"], step, "seconds")
        base = local_s if local_s is not None else _median(runs["local"], "ingest_again", "seconds")
        steps[step] = {"local_s": local_s, "cloud_s": cloud_s, "cloud_over_local": cloud_s / base,
                       **{f"cloud_{k}": _median(runs["cloud"], step, k)
                          for k in ("sync_s", "pulled_files", "pulled_bytes", "pushed_files", "pushed_bytes",
                                    "peak_memory_gib")},
                       "local_peak_memory_gib": _median(runs["local"], step, "peak_memory_gib")}
    end_to_end = {kind: sum(_median(runs[kind], s, "seconds") for s in ("land", "ingest")) for kind in runs}
    for kind_runs in runs.values():
        for r in kind_runs:
            for s in r["steps"].values():
                s.pop("stdout")
    versions = machine()
    versions["adlfs"] = __import__("adlfs").__version__
    versions["azure_storage_blob"] = __import__("azure.storage.blob", fromlist=["_"]).__version__
    versions["azurite"] = json.loads((azurite_home() / "node_modules" / "azurite" / "package.json").read_text())["version"]
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": versions,
            "load_average_before": load_before,
            "rows": generated, "days": days, "repeats": repeats, "engine": engine, "steps": steps,
            "end_to_end": {**end_to_end, "cloud_over_local": end_to_end["cloud"] / end_to_end["local"]},
            "table_rows": runs["cloud"][0]["table_rows"], "files": {k: runs[k][0]["files"] for k in runs},
            "runs": runs}


def _mib(count: float | None) -> str:
    return f"{count / 2**20:,.1f} MiB" if count else "-"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Clever on a cloud lake (Azurite) against a local lake ({report['when']})", "",
             (f"{m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, pyspark {m['pyspark']}, deltalake "
              f"{m['deltalake']}, adlfs {m['adlfs']}, azure-storage-blob {m['azure_storage_blob']}, Azurite "
              f"{m['azurite']}, {m['java']}. {report['rows']:,} daily-participation rows over {report['days']} days, "
              f"engine {report['engine']}, medians of {report['repeats']} run(s); load average "
              f"{report['load_average_before']:.2f} before the run."),
             "",
             ("| step | local lake | cloud lake | cloud / local | cloud: of which sync | pulled | pushed "
              "| peak memory local / cloud |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for step in STEPS:
        s = report["steps"][step]
        local = f"{s['local_s']:.1f} s" if s["local_s"] is not None else "-"
        ratio = f"{s['cloud_over_local']:.2f}" + ("" if s["local_s"] is not None else " (vs local ingest again)")
        lines.append(f"| {TITLES[step]} | {local} | {s['cloud_s']:.1f} s | {ratio} | {s['cloud_sync_s']:.1f} s | "
                     f"{s['cloud_pulled_files']:.0f} files, {_mib(s['cloud_pulled_bytes'])} | "
                     f"{s['cloud_pushed_files']:.0f} files, {_mib(s['cloud_pushed_bytes'])} | "
                     + (f"{s['local_peak_memory_gib']:.2f}" if s["local_peak_memory_gib"] else "-")
                     + f" / {s['cloud_peak_memory_gib']:.2f} GiB |")
    e = report["end_to_end"]
    lines += [(f"| **end to end (land + ingest)** | **{e['local']:.1f} s** | **{e['cloud']:.1f} s** | "
               f"**{e['cloud_over_local']:.2f}** | | | | |"), "",
              "| container | local lake: files (Parquet), size | account: files (Parquet), size |", "|---|---:|---:|"]
    local, cloud = report["files"]["local"], report["files"]["cloud"]
    for container in sorted(set(local) | set(cloud)):
        cells = [f"{d[container]['files']:,} ({d[container]['parquet']:,}), {_mib(d[container]['bytes'])}"
                 if container in d else "-" for d in (local, cloud)]
        lines.append(f"| {container} | {cells[0]} | {cells[1]} |")
    rows = ", ".join(f"`{t}` {n:,}" for t, n in report["table_rows"].items())
    lines += ["", f"Both lakes hold the same rows: {rows}.", "",
              ("What the cloud route does: each command pulls the source's folders from the account into a local "
               "working copy under `$OEA_CACHE` (only files whose version it does not hold), Spark and delta-rs read "
               "and write that working copy exactly as on a local lake, and the changed files are pushed back in "
               "commit order (data, then write-once manifests and Delta log entries). Files move with adlfs over "
               "the Blob API; the lock is a blob lease. Azurite runs on loopback (127.0.0.1) and keeps the blobs in "
               "memory, so network latency and bandwidth to a real storage account are not measured: the ratios "
               "are the cost of the route itself (listings, HTTP round trips, copying the bytes twice), "
               "a lower bound for Azure. Times are whole `oea` processes (Python and Spark start included), plus "
               "an `os.sync()`; \"of which sync\" sums the pull and push times the `oea:` log lines report (a pull "
               "that moves nothing logs nothing: its listings fall in the rest of the step)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from oea_core.delta import LOCAL_DEFAULT, engines

    parser = argparse.ArgumentParser(description="Benchmark Clever on an Azurite lake against a local lake.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="daily-participation rows (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per lake; the median is reported (default 1)")
    parser.add_argument("--days", type=int, default=100, help="school days the export spans (default 100)")
    parser.add_argument("--engine", choices=engines.names(), default=LOCAL_DEFAULT,
                        help=f"Delta engine (default: the local default, {LOCAL_DEFAULT})")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as temp:
        report = benchmark(args.rows, args.repeats, args.days, args.engine, Path(temp))
    text = markdown(report)
    with open(os.path.join(args.out, "cloud.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.join(args.out, "cloud.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
