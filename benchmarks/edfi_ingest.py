"""Benchmark: generate an Ed-Fi export, land, ingest and refine it on a local lake, report records per second.

Run: ``.venv/bin/python benchmarks/edfi_ingest.py --students 5000 --batches 3``.
Not part of the test suite; timing targets live here, not in tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from oea_core import LakePaths, Salt
from oea_core.edfi import EdFiModule, generate_edfi, write_edfi_export
from oea_core.spark import get_spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--workdir", help="folder for the export and lake (default: a temp folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        work = Path(args.workdir or temp)
        started = time.perf_counter()
        dataset = generate_edfi(students=args.students, staff=max(2, args.students // 20),
                                schools=max(1, args.students // 1000), batches=args.batches)
        write_edfi_export(dataset, work / "export")
        generated = time.perf_counter()
        changes = len(dataset.events())
        spark = get_spark("oea-benchmark")
        module = EdFiModule(LakePaths.from_setting(work / "lake"), spark=spark, salt=Salt("benchmark-salt", "b"))
        module.land(work / "export")
        landed = time.perf_counter()
        module.ingest(refine=False)
        ingested = time.perf_counter()
        refined_results = module.refine()
        refined = time.perf_counter()
        again = module.ingest()
        rerun = time.perf_counter()
        rows = sum(r.rows for r in refined_results)
        print(f"changes generated   {changes:>10}  in {generated - started:6.1f} s")
        print(f"landed              {changes:>10}  in {landed - generated:6.1f} s")
        print(f"ingested (state)    {changes:>10}  in {ingested - landed:6.1f} s "
              f"({changes / (ingested - landed):,.0f} changes/s)")
        print(f"refined             {rows:>10}  rows in {refined - ingested:6.1f} s ({rows / (refined - ingested):,.0f} rows/s)")
        print(f"ingest again        {len([r for r in again if not r.nothing_new]):>10}  in {rerun - refined:6.1f} s "
              "(nothing new)")
        spark.stop()


if __name__ == "__main__":
    main()
