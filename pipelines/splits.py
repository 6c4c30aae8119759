"""Seeded per-user train/valid/test splits (the MMRec protocol, with a seed)."""

from __future__ import annotations

import numpy as np
import polars as pl


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


def split_stats(inter: pl.DataFrame, n_users: int, n_items: int) -> dict[str, dict[str, float]]:
    """Users / items / interactions per split, density, and cold users/items."""
    stats: dict[str, dict[str, float]] = {}
    train = inter.filter(pl.col("split") == "train")
    train_users = set(train.get_column("user_idx").unique().to_list())
    train_items = set(train.get_column("item_idx").unique().to_list())
    for name in ("train", "valid", "test"):
        part = inter.filter(pl.col("split") == name)
        users = part.get_column("user_idx").unique()
        items = part.get_column("item_idx").unique()
        stats[name] = {
            "interactions": part.height,
            "users": users.len(),
            "items": items.len(),
            "density": part.height / max(1, n_users * n_items),
            "cold_users": int(sum(u not in train_users for u in users.to_list())),
            "cold_items": int(sum(i not in train_items for i in items.to_list())),
        }
    return stats
