"""Dataset filters applied after cleaning: iterative k-core on the positive interactions.

Pure functions on polars frames keyed by the raw ``user_id`` / ``item_id``; removed
rows come back with a reason so that ingest can record them as rejects.
"""

from __future__ import annotations

import polars as pl


def kcore(inter: pl.DataFrame, *, min_user: int, min_item: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Repeatedly drop users with fewer than ``min_user`` and items with fewer than
    ``min_item`` interactions until every remaining one has enough (removing an item
    can push a user under the threshold, hence the loop). Returns (kept, removed with
    ``_reason``)."""
    if min_user <= 1 and min_item <= 1:
        return inter, inter.head(0).with_columns(pl.lit(None, pl.String).alias("_reason"))
    kept = inter
    removed: list[pl.DataFrame] = []
    rounds = 0
    while True:
        rounds += 1
        user_n = pl.len().over("user_id")
        item_n = pl.len().over("item_id")
        flagged = kept.with_columns(
            pl.when(user_n < min_user)
            .then(pl.lit(f"k-core: user has fewer than {min_user} interactions (round {rounds})"))
            .when(item_n < min_item)
            .then(pl.lit(f"k-core: item has fewer than {min_item} interactions (round {rounds})"))
            .otherwise(None)
            .alias("_reason")
        )
        drop = flagged.filter(pl.col("_reason").is_not_null())
        if drop.height == 0:
            break
        removed.append(drop)
        kept = flagged.filter(pl.col("_reason").is_null()).drop("_reason")
    out = (
        pl.concat(removed)
        if removed
        else inter.head(0).with_columns(pl.lit(None, pl.String).alias("_reason"))
    )
    return kept, out
