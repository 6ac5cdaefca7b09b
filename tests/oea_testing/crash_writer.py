"""A Spark job writing a second batch slowly, for tests/delta/test_crash.py to kill with SIGKILL mid-write.

    python crash_writer.py TABLE ENGINE PHASE

PHASE ``staging`` slows the staging job (a pause per row); ``commit`` stages 200 small files and
reads each as its own task, so Delta's own write of the commit takes seconds.
"""

from __future__ import annotations

import sys
import time

ROWS = 4000


def batch(spark, rows: int = ROWS, pause: float = 0.0, files: int = 8):
    """``rows`` rows with ids from 1,000,000 up; a pause per row keeps each task busy."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    def slow(value: int) -> int:
        time.sleep(pause)
        return value

    ids = spark.range(1_000_000, 1_000_000 + rows, numPartitions=files)
    return ids.select(F.udf(slow, LongType())("id").alias("id"), (F.col("id") % 4).cast("int").alias("part"),
                      F.sha2(F.col("id").cast("string"), 256).alias("payload"))


def main(path: str, engine: str, phase: str) -> None:
    from oea_core.delta import delta_store
    from oea_core.spark import get_spark

    spark = get_spark("oea-crash-writer")
    if phase == "commit":
        spark.conf.set("spark.sql.files.openCostInBytes", str(1 << 30))  # one task per staged file
        df = batch(spark, files=200)
    else:
        df = batch(spark, pause=0.004)
    delta_store(spark, engine).write(df, path, partition_by=("part",), app_id="batch-2",
                                     metadata={"batch_id": "batch-2"})
    print("committed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
