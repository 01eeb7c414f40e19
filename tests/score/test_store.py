"""The result store on real Parquet files: atomic parts, the done set, the merge and its crash window, identity
and the lock. (The kill -9 runs against a real server are in test_score_e2e.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dfserve.score.store import DoneKeys, Identity, ResultStore, Row, StoreError, key_digests

IDENTITY = Identity("detector", "0123456789abcdef", "tiny@main (onnx, fp32)")
OTHER = Identity("detector", "fedcba9876543210", "other@main (onnx, fp16)")


def _row(i: int, error: str | None = None) -> Row:
    if error:
        return Row(path=f"img/{i}.jpg", sha256=None, error=error)
    return Row(f"img/{i}.jpg", f"{i:064x}", "fake", {"real": 0.25, "fake": 0.75}, None, "1")


def _paths(out: Path) -> list[str]:
    return pq.read_table(out, columns=["path"]).column("path").to_pylist()


def test_done_keys_holds_what_was_added_across_compactions() -> None:
    done = DoneKeys()
    DoneKeys.COMPACT_AT, old = 100, DoneKeys.COMPACT_AT
    try:
        keys = [f"s3://bucket/{i}.jpg" for i in range(1_000)]
        done.add_digests(key_digests(keys[:300]))
        for key in keys[300:700]:
            done.add(key)
    finally:
        DoneKeys.COMPACT_AT = old
    assert len(done) == 700
    assert all(k in done for k in keys[:700])
    assert not any(k in done for k in keys[700:])
    assert done.contains_digests(key_digests(keys[695:705])).tolist() == [True] * 5 + [False] * 5


def test_parts_then_merge_then_a_new_run_appends(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    with ResultStore(out, IDENTITY, rows_per_part=4) as store:
        assert all(store.claim(f"img/{i}.jpg") for i in range(10))
        assert not store.claim("img/3.jpg")  # a key listed twice is one input
        for i in range(10):
            store.add(_row(i, "not an image" if i == 7 else None))
        assert len(list(store.parts_dir.glob("part-*.parquet"))) == 2  # 8 rows committed, 2 buffered
        summary = store.finish()
    assert (summary.rows, summary.errors, summary.parts_merged) == (10, 1, 3)
    assert not store.parts_dir.exists()
    table = pq.read_table(out)
    assert table.num_rows == 10 and pq.ParquetFile(out).num_row_groups == 3
    assert dict(table.column("scores")[0].as_py()) == {"real": 0.25, "fake": 0.75}
    assert set(table.column("spec_id").to_pylist()) == {IDENTITY.spec_id}

    with ResultStore(out, IDENTITY) as store:  # the same OUT, two more inputs
        assert [store.claim(f"img/{i}.jpg") for i in (3, 10, 11)] == [False, True, True]
        store.add(_row(10))
        store.add(_row(11))
        summary = store.finish()
    assert summary.rows == 12 and sorted(_paths(out)) == sorted(f"img/{i}.jpg" for i in range(12))


def test_a_kill_between_the_merge_and_the_clean_up_adds_nothing_twice(tmp_path: Path) -> None:
    """The merge renames OUT, then removes the parts: the parts left by a kill in between are skipped."""
    out = tmp_path / "r.parquet"
    with ResultStore(out, IDENTITY, rows_per_part=3) as store:
        for i in range(7):
            store.claim(f"img/{i}.jpg")
            store.add(_row(i))
        store.flush()
        shutil.copytree(store.parts_dir, tmp_path / "saved")
        store.finish()
    shutil.copytree(tmp_path / "saved", store.parts_dir)  # as if killed right after the rename
    with ResultStore(out, IDENTITY) as store:
        assert not store.claim("img/0.jpg") and store.claim("img/7.jpg")
        store.add(_row(7))
        summary = store.finish()
    paths = _paths(out)
    assert summary.rows == 8 and len(paths) == len(set(paths)) == 8


def test_leftover_temporary_files_are_removed_and_numbering_continues(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    with ResultStore(out, IDENTITY, rows_per_part=2) as store:
        for i in range(4):
            store.add(_row(i))
    parts = store.parts_dir
    (parts / "part-000002.parquet.tmp-999").write_bytes(b"half a part")  # a kill -9 during a write
    (tmp_path / ".r.parquet.tmp-999").write_bytes(b"half a merge")
    with ResultStore(out, IDENTITY, rows_per_part=1) as store:
        assert len(store.done_before) == 4
        store.add(_row(4))
        assert sorted(p.name for p in parts.iterdir()) == [f"part-00000{i}.parquet" for i in range(3)]
        store.finish()
    assert not list(tmp_path.glob(".*tmp*")) and len(_paths(out)) == 5


def test_another_models_results_are_refused_naming_both(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    with ResultStore(out, IDENTITY) as store:
        store.add(_row(0))
        store.finish()
    with pytest.raises(StoreError) as excinfo, ResultStore(out, OTHER):
        pass
    message = str(excinfo.value)
    assert IDENTITY.spec_id in message and OTHER.spec_id in message and "refusing to mix" in message

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pq.read_table(out).replace_schema_metadata(None), foreign)
    with pytest.raises(StoreError, match="not written by `dfserve score`"), ResultStore(foreign, IDENTITY):
        pass


def test_a_second_run_on_the_same_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    with ResultStore(out, IDENTITY), pytest.raises(StoreError, match="another `dfserve score`"):
        ResultStore(out, IDENTITY).open()
    with ResultStore(out, IDENTITY):  # released with the first
        pass


def test_digests_are_16_bytes_and_distinct() -> None:
    digests = key_digests([f"{i}" for i in range(10_000)])
    assert digests.dtype == np.dtype("S16") and len(np.unique(digests)) == 10_000
