"""Two writers, one batch: the app transaction is checked inside the commit, on both engines."""

from __future__ import annotations

import os
import threading

import pytest
from deltalake import CommitProperties, DeltaTable, Transaction

from oea_core import CommitConflictError
from oea_core.delta import delta_store
from oea_core.delta.base import COMMIT_ATTEMPTS, WriteResult


def frame(spark, ids):
    return spark.createDataFrame([(i, n) for n, i in enumerate(ids)], "id string, n int")


def ids_in(path):
    return sorted(r["id"] for r in DeltaTable(path).to_pyarrow_table().to_pylist())


def test_a_commit_refuses_an_app_id_already_in_the_table_even_past_the_early_check(spark, store, tmp_path):
    """The early check is skipped here (as when another writer commits just after it): the commit itself refuses."""
    path = str(tmp_path / "t")
    store.write(frame(spark, ["a"]), path, app_id="batch-1", metadata={"batch_id": "1"})
    staged = store.stage(frame(spark, ["b"]), path)
    result = store._publish(staged, "batch-1", {"batch_id": "1"})
    store.discard(staged)
    assert result.skipped and result.version == 0
    assert ids_in(path) == ["a"] and DeltaTable(path).version() == 0
    merged = store._merge(frame(spark, ["c"]), path, ("id",), False, "batch-1", None)
    assert merged.skipped and ids_in(path) == ["a"]
    deleted = store._delete(frame(spark, ["a"]).select("id"), path, ("id",), "batch-1", None)
    assert deleted.skipped and ids_in(path) == ["a"]
    data_files = {os.path.basename(uri) for uri in DeltaTable(path).file_uris()}
    on_disk = {p.name for p in (tmp_path / "t").iterdir() if p.suffix == ".parquet"}
    assert on_disk == data_files  # the refused commit left no file behind


@pytest.mark.parametrize("exists", [False, True], ids=["new-table", "existing-table"])
def test_two_writers_racing_with_one_batch_commit_it_once(spark, engine, tmp_path, exists):
    path = str(tmp_path / "t")
    if exists:
        delta_store(spark, engine).write(frame(spark, ["seed"]), path, app_id="seed")
    batch = frame(spark, ["x1", "x2"])
    staged = [delta_store(spark, engine).stage(batch, path) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[WriteResult | BaseException] = [None, None]

    def commit(i):
        store = delta_store(spark, engine)
        start.wait()
        try:
            results[i] = store.commit(staged[i], app_id="batch-7", metadata={"batch_id": "7"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(r.skipped for r in results) == [False, True]
    assert ids_in(path) == sorted((["seed"] if exists else []) + ["x1", "x2"])
    assert DeltaTable(path).transaction_version("batch-7") == 1


def test_a_commit_that_keeps_losing_the_race_ends_in_one_clear_error(spark, tmp_path):
    """Each attempt builds on a snapshot another writer has moved past: a real delta-rs CommitFailedError."""
    import pyarrow as pa
    from deltalake import write_deltalake

    path = str(tmp_path / "t")
    write_deltalake(path, pa.table({"id": ["a"]}))
    store = delta_store(spark, "delta-rs")
    attempts = []

    def attempt():
        stale = DeltaTable(path)
        write_deltalake(path, pa.table({"id": [f"other-{len(attempts)}"]}), mode="append")  # the other writer
        attempts.append(1)
        stale.create_write_transaction([], mode="append", schema=stale.schema(), commit_properties=CommitProperties(
            max_commit_retries=0, app_transactions=[Transaction("mine", 1)]))
        return WriteResult(path, None, 0, 0)

    with pytest.raises(CommitConflictError, match=f"another writer committed at the same time, {COMMIT_ATTEMPTS} "
                       "times in a row; this commit was not made .*rerun") as caught:
        store._until_committed(path, attempt)
    assert len(attempts) == COMMIT_ATTEMPTS and caught.value.path == path
    assert DeltaTable(path).transaction_version("mine") is None
