"""The store contract: atomic publish, manifests, embedding columns readable everywhere."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from features import schemas
from features.reader import load_features
from features.store import (
    StoreError,
    arrow_to_embeddings,
    embeddings_to_arrow,
    publish,
    read_table,
    write_table,
)


def _features(n: int, d: int) -> pa.Table:
    rng = np.random.default_rng(0)
    now = pa.array(np.full(n, 1_700_000_000_000_000), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "item_idx": np.arange(n, dtype=np.int64),
            "item_id": [f"i{i}" for i in range(n)],
            "embedding": embeddings_to_arrow(rng.normal(size=(n, d)).astype(np.float32)),
            "content_hash": ["h"] * n,
            "event_timestamp": now,
            "created": now,
        }
    )


def test_embedding_roundtrip_is_exact() -> None:
    m = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    arr = embeddings_to_arrow(m)
    assert arr.type == pa.list_(pa.float32(), 5)
    np.testing.assert_array_equal(arrow_to_embeddings(arr), m)


def test_failed_write_leaves_previous_table_untouched(tmp_path) -> None:
    path = tmp_path / "t"
    write_table(path, _features(5, 3), schemas.feature_schema(3))
    before = read_table(path)
    with pytest.raises(RuntimeError), publish(path) as tmp:
        (tmp / "part-00000.parquet").write_bytes(b"half written")
        raise RuntimeError("crash mid-write")
    assert read_table(path).equals(before)
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary folder left behind


def test_reader_refuses_unpublished_or_inconsistent_tables(tmp_path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match="_manifest.json"):
        read_table(tmp_path / "half")
    with pytest.raises(StoreError, match="not published"):
        load_features(tmp_path / "half", n_items=4)
    write_table(tmp_path / "t", _features(4, 3), schemas.feature_schema(3))
    m = json.loads((tmp_path / "t/_manifest.json").read_text())
    m["row_count"] = 99
    (tmp_path / "t/_manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="manifest says 99"):
        read_table(tmp_path / "t")
    m["dim"] = 3
    (tmp_path / "t/_manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="manifest says 99"):
        load_features(tmp_path / "t", n_items=4)


def test_schema_mismatch_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not match its schema"):
        write_table(tmp_path / "t", pa.table({"item_idx": [1]}), schemas.feature_schema(3))


def test_feature_table_readable_by_polars_pyarrow_duckdb(tmp_path) -> None:
    write_table(tmp_path / "f", _features(6, 4), schemas.feature_schema(4), dim=4)
    files = str(tmp_path / "f" / "*.parquet")
    df = pl.read_parquet(files)
    assert df.schema["embedding"] == pl.Array(pl.Float32, 4)
    n = duckdb.sql(f"select count(*), max(len(embedding)) from read_parquet('{files}')").fetchall()[0]
    assert n == (6, 4)
    f = load_features(tmp_path / "f", n_items=8)
    m, present = f.matrix, f.present
    assert m.shape == (8, 4) and present.sum() == 6 and not m[7].any()
    np.testing.assert_array_equal(m[:6], arrow_to_embeddings(read_table(tmp_path / "f").column("embedding")))
