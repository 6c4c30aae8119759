"""Explicit pyarrow schemas of every store table: the contract between stages and consumers.

Downstream teams read these tables with polars, pyarrow, DuckDB, Spark or Feast without
importing this project, so the column names and types here are a public API. Bump
``SCHEMA_VERSION`` on any breaking change.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

SPLITS = ("train", "valid", "test")

ITEMS = pa.schema(
    [
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("category", pa.string()),
        pa.field("image_path", pa.string()),
    ]
)

USERS = pa.schema(
    [
        pa.field("user_idx", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
    ]
)

INTERACTIONS = pa.schema(
    [
        pa.field("user_idx", pa.int64(), nullable=False),
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64()),
        pa.field("rating", pa.float32()),
        pa.field("split", pa.string(), nullable=False),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row", pa.int64()),
        pa.field("key", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record", pa.string()),
    ]
)

GRAPH_EDGES = pa.schema(
    [
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("neighbor_idx", pa.int64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
    ]
)


def feature_schema(dim: int) -> pa.Schema:
    """Schema of one embedding table; Feast-style entity key and timestamps."""
    return pa.schema(
        [
            pa.field("item_idx", pa.int64(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("created", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def entity_embedding_schema(entity: str, dim: int) -> pa.Schema:
    """Exported user or item embeddings of a trained model (``entity`` is user or item)."""
    return pa.schema(
        [
            pa.field(f"{entity}_idx", pa.int64(), nullable=False),
            pa.field(f"{entity}_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("created", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


RECOMMENDATIONS = pa.schema(
    [
        pa.field("user_idx", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)


SEMANTIC_IDS = pa.schema(
    [
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("codes", pa.list_(pa.int32()), nullable=False),  # one code per level, each in [0, K)
        pa.field("suffix", pa.int32(), nullable=False),  # separates items with identical codes
        pa.field("semantic_id", pa.string(), nullable=False),  # "<a_12><b_201><c_7><d_0>", unique
    ]
)


FEATURE_REJECTS = pa.schema(
    [
        pa.field("item_idx", pa.int64()),
        pa.field("item_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


def embedding_dim(schema: pa.Schema) -> int:
    """Dimension of the ``embedding`` column of a feature table schema."""
    field = schema.field("embedding")
    if not pa.types.is_fixed_size_list(field.type):
        raise TypeError(f"column 'embedding' must be fixed_size_list<float32>, got {field.type}")
    return field.type.list_size
