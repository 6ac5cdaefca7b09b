"""Benchmark: generate a Clever export, land and ingest it on a local lake, report rows per second.

Run: ``.venv/bin/python benchmarks/clever_ingest.py --students 20000 --days 10``.
Not part of the test suite; timing targets live here, not in tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from oea_core import LakePaths, Salt
from oea_core.clever import CleverModule
from oea_core.clever.generator import generate_clever_export
from oea_core.spark import get_spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--workdir", help="folder for the export and lake (default: a temp folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        work = Path(args.workdir or temp)
        started = time.perf_counter()
        export = generate_clever_export(work / "export", students=args.students,
                                        teachers=max(1, args.students // 25), staff=max(1, args.students // 100),
                                        days=args.days, quirks=True)
        generated = time.perf_counter()
        rows = sum(export.rows.values())
        spark = get_spark("oea-benchmark")
        module = CleverModule(LakePaths.from_setting(work / "lake"), spark=spark,
                              salt=Salt("benchmark-salt", "benchmark"))
        module.land(work / "export")
        landed = time.perf_counter()
        results = module.ingest()
        ingested = time.perf_counter()
        again = module.ingest()
        rerun = time.perf_counter()
        ingested_rows = sum(r.rows for r in results)
        print(f"rows generated      {rows:>10}  in {generated - started:6.1f} s")
        print(f"landed              {len(export.files):>10} files in {landed - generated:6.1f} s")
        print(f"ingested            {ingested_rows:>10}  in {ingested - landed:6.1f} s "
              f"({ingested_rows / (ingested - landed):,.0f} rows/s)")
        print(f"ingest again        {sum(r.rows for r in again):>10}  in {rerun - ingested:6.1f} s (nothing new)")
        spark.stop()


if __name__ == "__main__":
    main()
