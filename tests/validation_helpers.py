"""Synthetic store tables for the validation and drift tests and ``benchmarks/validate_scale.py``.

Tables are written directly with ``features.store.write_table`` (no encoders, no Beam),
so a case costs a few milliseconds to build.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features import schemas
from features.store import embeddings_to_arrow, write_table

EPOCH_US = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6)


def item_ids(idx: Sequence[int] | np.ndarray, fmt: str = "it{:03d}") -> list[str]:
    return [fmt.format(int(i)) for i in idx]


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def items_table(n: int, *, fmt: str = "it{:03d}", image_paths: list[str] | None = None) -> pa.Table:
    """``n`` items with a title and a description each; no images unless ``image_paths``."""
    return pa.table(
        {
            "item_idx": np.arange(n, dtype=np.int64),
            "item_id": item_ids(range(n), fmt),
            "title": [f"title {i}" for i in range(n)],
            "description": [f"about {i}" for i in range(n)],
            "category": ["c"] * n,
            "image_path": image_paths if image_paths is not None else [""] * n,
        }
    )


def feature_table(
    idx: Sequence[int] | np.ndarray, emb: np.ndarray, hashes: list[str] | None = None, fmt: str = "it{:03d}"
) -> pa.Table:
    """A feature table's rows: ids, embeddings, content hashes (``h<idx>`` unless given)."""
    idx = np.asarray(idx, np.int64)
    ts = pa.array(np.full(len(idx), EPOCH_US), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "item_idx": idx,
            "item_id": item_ids(idx, fmt),
            "embedding": embeddings_to_arrow(emb),
            "content_hash": hashes if hashes is not None else [f"h{i}" for i in idx],
            "event_timestamp": ts,
            "created": ts,
        }
    )


def write_features(path: Path, table: pa.Table, **manifest: Any) -> None:
    """Publish ``table`` as a feature table (L2-normalised, ``test-encoder@1`` unless overridden)."""
    d = table.schema.field("embedding").type.list_size
    write_table(
        path,
        table,
        schemas.feature_schema(d),
        **{"dim": d, "normalized": True, "encoder_id": "test-encoder@1", **manifest},
    )
