"""Row-level checks of raw input: each bad row goes to rejects with a reason.

Pure functions on polars frames; the invariant is
``input rows == accepted + negatives + rejected`` (explicit negatives are neither
positives nor bad rows: they are kept apart and recorded).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

REJECT_COLUMNS = ("source", "row", "key", "reason", "record")


SPLIT_LABELS = ("train", "valid", "test")


@dataclass(frozen=True)
class Cleaned:
    accepted: pl.DataFrame
    rejects: pl.DataFrame
    negatives: pl.DataFrame | None = None


def as_rejects(df: pl.DataFrame, reason: pl.Expr | str, key: str) -> pl.DataFrame:
    """Rows of a source frame -> rejects rows (file, line, key, reason, raw record as JSON)."""
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


def _strip_ids(df: pl.DataFrame, cols: tuple[str, ...]) -> pl.DataFrame:
    """Ids compare after trimming (unicode) whitespace and NFC normalisation, so ' a' == 'a'
    and a composed 'é' == 'e' + combining accent."""
    return df.with_columns(pl.col(c).str.strip_chars().str.normalize("NFC") for c in cols)


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
        rejects=as_rejects(bad, pl.col("_reason"), "item_id"),
    )


def clean_interactions(
    df: pl.DataFrame,
    known_items: pl.Series,
    *,
    min_rating: float | None = None,
    negative_ratings: list[float] | None = None,
) -> Cleaned:
    """Reject rows with missing ids, unknown items, unparsable timestamps/ratings, an
    unknown split label, ratings under ``min_rating`` (implicit feedback threshold) and
    repeated pairs; rows whose rating is in ``negative_ratings`` are explicit negatives
    (returned apart, never positives)."""
    df = _strip_ids(df, ("user_id", "item_id"))
    has_label = "label" in df.columns
    ts = pl.col("timestamp").str.strip_chars().cast(pl.Float64, strict=False)
    rating = pl.col("rating").str.strip_chars().cast(pl.Float64, strict=False)
    df = df.with_columns(ts.alias("_ts"), rating.alias("_rating"))
    missing_user = pl.col("user_id").is_null() | (pl.col("user_id") == "")
    missing_item = pl.col("item_id").is_null() | (pl.col("item_id") == "")
    unknown_item = ~pl.col("item_id").is_in(known_items.implode())
    bad_ts = (
        pl.col("timestamp").is_not_null()
        & (pl.col("timestamp").str.strip_chars() != "")
        & pl.col("_ts").is_null()
    )
    bad_rating = (
        pl.col("rating").is_not_null()
        & (pl.col("rating").str.strip_chars() != "")
        & pl.col("_rating").is_null()
    )
    bad_label = ~pl.col("label").is_in(list(SPLIT_LABELS)).fill_null(False) if has_label else pl.lit(False)
    negative = (
        pl.col("_rating").is_in([float(r) for r in negative_ratings]).fill_null(False)
        if negative_ratings
        else pl.lit(False)
    )
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
        .when(bad_label)
        .then(pl.lit(f"unknown split label (expected one of {list(SPLIT_LABELS)})"))
        .when(~negative & low)
        .then(pl.lit(f"rating below min_rating {min_rating}"))
        .otherwise(None)
    )
    df = df.with_columns(reason.alias("_reason"), negative.alias("_negative"))
    ok = df.filter(pl.col("_reason").is_null())
    # Repeated (user, item): keep the earliest, reject the others with a reason. A pair
    # seen both as a positive and as an explicit negative is a conflict: the positive wins.
    ok = ok.sort(["user_id", "item_id", "_negative", "_ts", "_row"], nulls_last=True).with_columns(
        (pl.int_range(pl.len()).over(["user_id", "item_id"]) > 0).alias("_dup"),
        pl.col("_negative").not_().any().over(["user_id", "item_id"]).alias("_has_pos"),
    )
    dup = ok.filter(pl.col("_dup")).with_columns(
        pl.when(pl.col("_negative") & pl.col("_has_pos"))
        .then(pl.lit("explicit negative of a pair that is also a positive (positive kept)"))
        .otherwise(pl.lit("duplicate (user_id, item_id) interaction (earliest kept)"))
        .alias("_reason")
    )
    bad = pl.concat(
        [df.filter(pl.col("_reason").is_not_null()), dup.drop("_dup", "_has_pos")], how="diagonal"
    )
    kept = ok.filter(~pl.col("_dup")).drop("_dup", "_has_pos", "_reason")
    return Cleaned(
        accepted=kept.filter(~pl.col("_negative")).drop("_negative"),
        negatives=kept.filter(pl.col("_negative")).drop("_negative"),
        rejects=as_rejects(bad.drop("_ts", "_rating", "_negative"), pl.col("_reason"), "item_id"),
    )
