"""Row-level checks of raw input: each bad row goes to rejects with a reason.

Pure functions on polars frames; the invariant is ``input rows == accepted + rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

REJECT_COLUMNS = ("source", "row", "key", "reason", "record")


@dataclass(frozen=True)
class Cleaned:
    accepted: pl.DataFrame
    rejects: pl.DataFrame


def _as_rejects(df: pl.DataFrame, reason: pl.Expr | str, key: str) -> pl.DataFrame:
    data_cols = [c for c in df.columns if not c.startswith("_")]
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    return df.select(
        pl.col("_source").alias("source"),
        pl.col("_row").alias("row"),
        pl.col(key).cast(pl.String).alias("key")
        if key in df.columns
        else pl.lit(None, pl.String).alias("key"),
        reason_expr.alias("reason"),
        pl.struct(data_cols).struct.json_encode().alias("record"),
    )


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "source": pl.String,
            "row": pl.Int64,
            "key": pl.String,
            "reason": pl.String,
            "record": pl.String,
        }
    )


def _strip_ids(df: pl.DataFrame, cols: tuple[str, ...]) -> pl.DataFrame:
    return df.with_columns(pl.col(c).str.strip_chars() for c in cols)


def clean_items(df: pl.DataFrame) -> Cleaned:
    """Reject items with a blank id or a repeated id (first occurrence wins)."""
    df = _strip_ids(df, ("item_id",))
    blank = pl.col("item_id").is_null() | (pl.col("item_id") == "")
    dup = pl.col("item_id").is_duplicated() & (pl.int_range(pl.len()).over("item_id") > 0)
    reason = (
        pl.when(blank)
        .then(pl.lit("missing item_id"))
        .when(dup)
        .then(pl.lit("duplicate item_id (first occurrence kept)"))
        .otherwise(None)
    )
    df = df.with_columns(reason.alias("_reason"))
    bad = df.filter(pl.col("_reason").is_not_null())
    return Cleaned(
        accepted=df.filter(pl.col("_reason").is_null()).drop("_reason"),
        rejects=_as_rejects(bad, pl.col("_reason"), "item_id"),
    )


def clean_interactions(
    df: pl.DataFrame, known_items: pl.Series, *, min_rating: float | None = None
) -> Cleaned:
    """Reject rows with missing ids, unknown items, unparsable timestamps/ratings,
    ratings under ``min_rating`` (implicit feedback threshold) and repeated pairs."""
    df = _strip_ids(df, ("user_id", "item_id"))
    ts = pl.col("timestamp").str.strip_chars().cast(pl.Float64, strict=False)
    rating = pl.col("rating").str.strip_chars().cast(pl.Float64, strict=False)
    df = df.with_columns(ts.alias("_ts"), rating.alias("_rating"))
    missing_user = pl.col("user_id").is_null() | (pl.col("user_id") == "")
    missing_item = pl.col("item_id").is_null() | (pl.col("item_id") == "")
    unknown_item = ~pl.col("item_id").is_in(known_items.implode())
    bad_ts = pl.col("timestamp").is_not_null() & pl.col("_ts").is_null()
    bad_rating = pl.col("rating").is_not_null() & pl.col("_rating").is_null()
    low = pl.lit(False) if min_rating is None else (pl.col("_rating") < min_rating).fill_null(False)
    reason = (
        pl.when(missing_user)
        .then(pl.lit("missing user_id"))
        .when(missing_item)
        .then(pl.lit("missing item_id"))
        .when(unknown_item)
        .then(pl.lit("unknown item_id (not in the item catalog)"))
        .when(bad_ts)
        .then(pl.lit("timestamp is not a number"))
        .when(bad_rating)
        .then(pl.lit("rating is not a number"))
        .when(low)
        .then(pl.lit(f"rating below min_rating {min_rating}"))
        .otherwise(None)
    )
    df = df.with_columns(reason.alias("_reason"))
    ok = df.filter(pl.col("_reason").is_null())
    # Repeated (user, item): keep the earliest, reject the others with a reason.
    ok = ok.sort(["user_id", "item_id", "_ts", "_row"], nulls_last=True).with_columns(
        (pl.int_range(pl.len()).over(["user_id", "item_id"]) > 0).alias("_dup")
    )
    dup = ok.filter(pl.col("_dup")).with_columns(
        pl.lit("duplicate (user_id, item_id) interaction (earliest kept)").alias("_reason")
    )
    bad = pl.concat([df.filter(pl.col("_reason").is_not_null()), dup.drop("_dup")], how="diagonal")
    accepted = ok.filter(~pl.col("_dup")).drop("_dup", "_reason")
    return Cleaned(
        accepted=accepted, rejects=_as_rejects(bad.drop("_ts", "_rating"), pl.col("_reason"), "item_id")
    )
