"""Train/valid/test splits: the data's own labels, a seeded per-user ratio (the MMRec
protocol, with a seed) or temporal leave-last-out; their statistics and content hash."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

METHODS = ("random_ratio", "labels", "temporal")


def split_random_ratio(
    inter: pl.DataFrame, *, valid_ratio: float, test_ratio: float, seed: int
) -> pl.DataFrame:
    """Per user: ``floor(n * ratio)`` (at least 1) rows to valid and to test, the rest to
    train. Users with fewer than 3 interactions stay entirely in train. Deterministic
    for a given seed: rows are ordered by (user_idx, item_idx) before the draw."""
    if not (0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise ValueError(f"split ratios must be in [0, 1) and sum < 1, got {valid_ratio}, {test_ratio}")
    inter = inter.sort(["user_idx", "item_idx"])
    rng = np.random.default_rng(seed)
    keyed = inter.with_columns(pl.Series("_key", rng.random(inter.height))).sort(["user_idx", "_key"])
    n = pl.len().over("user_idx")
    rank = pl.int_range(pl.len()).over("user_idx")
    n_test = pl.when(n >= 3).then((n * test_ratio).floor().cast(pl.Int64).clip(1, None)).otherwise(0)
    n_valid = pl.when(n >= 3).then((n * valid_ratio).floor().cast(pl.Int64).clip(1, None)).otherwise(0)
    split = (
        pl.when(rank < n_test)
        .then(pl.lit("test"))
        .when(rank < n_test + n_valid)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return keyed.with_columns(split.alias("split")).drop("_key").sort(["user_idx", "item_idx"])


def split_by_labels(inter: pl.DataFrame) -> pl.DataFrame:
    """The split the data ships with (a ``label`` column of train/valid/test)."""
    if "label" not in inter.columns:
        raise ValueError(
            "params.yaml ingest.split.method 'labels': this source has no split labels; "
            f"use one of {[m for m in METHODS if m != 'labels']}"
        )
    return inter.rename({"label": "split"}).sort(["user_idx", "item_idx"])


def split_temporal(inter: pl.DataFrame, *, leave_out: int = 1) -> pl.DataFrame:
    """Per user, the last ``leave_out`` interactions by time go to test and the
    ``leave_out`` before them to valid (ties broken by item_idx); users with fewer than
    ``2 * leave_out + 1`` interactions stay entirely in train."""
    missing = inter.filter(pl.col("timestamp").is_null()).height
    if missing:
        raise ValueError(
            f"params.yaml ingest.split.method 'temporal': {missing} interaction(s) have no timestamp; "
            "expected one on every row (or use random_ratio / labels)"
        )
    if leave_out < 1:
        raise ValueError(f"params.yaml ingest.split.leave_out: expected >= 1, got {leave_out}")
    ordered = inter.sort(["user_idx", "timestamp", "item_idx"], descending=[False, True, True])
    rank = pl.int_range(pl.len()).over("user_idx")
    enough = pl.len().over("user_idx") >= 2 * leave_out + 1
    split = (
        pl.when(enough & (rank < leave_out))
        .then(pl.lit("test"))
        .when(enough & (rank < 2 * leave_out))
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return ordered.with_columns(split.alias("split")).sort(["user_idx", "item_idx"])


def split_hash(inter: pl.DataFrame) -> str:
    """sha256 of the (user_idx, item_idx, split) rows in sorted order: equal hashes,
    equal splits, whatever the file layout or row order."""
    rows = inter.select("user_idx", "item_idx", "split").sort(["user_idx", "item_idx"])
    h = hashlib.sha256()
    for col in ("user_idx", "item_idx"):
        h.update(rows.get_column(col).cast(pl.Int64).to_numpy().tobytes())
    h.update("\n".join(rows.get_column("split").to_list()).encode())
    return h.hexdigest()


def split_stats(inter: pl.DataFrame, n_users: int, n_items: int) -> dict[str, dict[str, float]]:
    """Users / items / interactions per split, density, and cold users/items (absent
    from train)."""
    stats: dict[str, dict[str, float]] = {}
    train = inter.filter(pl.col("split") == "train")
    train_users = train.get_column("user_idx").unique().implode()
    train_items = train.get_column("item_idx").unique().implode()
    for name in ("train", "valid", "test"):
        part = inter.filter(pl.col("split") == name)
        users = part.select(pl.col("user_idx").unique())
        items = part.select(pl.col("item_idx").unique())
        stats[name] = {
            "interactions": part.height,
            "users": users.height,
            "items": items.height,
            "density": part.height / max(1, n_users * n_items),
            "cold_users": users.filter(~pl.col("user_idx").is_in(train_users)).height,
            "cold_items": items.filter(~pl.col("item_idx").is_in(train_items)).height,
        }
    return stats
