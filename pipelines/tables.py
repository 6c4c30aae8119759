"""Raw dataset frames -> the store's items, users, interactions, negatives, rejects (pure).

Order: read (adapter) -> clean rows -> explicit negatives apart -> k-core -> dense ids
-> split -> drop cold users from valid/test. Dense int64 ids (``item_idx``,
``user_idx``) follow ``ingest.id_order`` (``natural``: numeric when every id is an
integer, so MMRec-style ids keep their order; otherwise sorted strings) so the same
input always gives the same ids; raw ids stay in the items/users tables. Every input
row ends up accepted, an explicit negative, or a reject with its reason: the records
each adapter's reader counted (``RawData.*_input_rows``) are checked against what
reached ingest and against accepted + negatives + rejected, and a mismatch raises
``IngestError`` naming the counts (a row dropped silently is a bug, never data loss).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from features import schemas
from features.errors import PlatformError
from pipelines.cleaning import as_rejects, clean_interactions, clean_items
from pipelines.config import IngestParams, SplitParams
from pipelines.filters import kcore
from pipelines.sources import RawData
from pipelines.splits import (
    METHODS,
    split_by_labels,
    split_hash,
    split_random_ratio,
    split_stats,
    split_temporal,
)

log = logging.getLogger(__name__)
ID_ORDERS = ("natural", "lexicographic")
KEEP_ITEMS = ("all", "interacted")


class IngestError(PlatformError, RuntimeError):
    """Rows were not conserved between the reader, the adapter and the ingest outputs."""


def adapter_input_rows(raw: RawData) -> dict[str, int]:
    """Records the readers read, per table; raises unless the adapter handed every one
    of them to ingest (as a row of its frame or as a read reject)."""
    out = {}
    for name, field, per_file, frame, rejects in (
        ("items", "item_input_rows", raw.item_input_rows, raw.items, raw.item_rejects),
        (
            "interactions",
            "interaction_input_rows",
            raw.interaction_input_rows,
            raw.interactions,
            raw.interaction_rejects,
        ),
    ):
        if per_file is None:
            raise IngestError(f"{name}: the adapter did not report how many rows it read (RawData.{field})")
        n = sum(per_file.values())
        if n != frame.height + rejects.height:
            raise IngestError(
                f"{name}: the readers read {n} rows ({per_file}) but the adapter passed on "
                f"{frame.height} rows + {rejects.height} read rejects = {frame.height + rejects.height}; "
                f"{n - frame.height - rejects.height} row(s) unaccounted for"
            )
        out[name] = n
    return out


def check_conserved(counts: dict[str, Any]) -> None:
    """``input == accepted + negatives + rejected`` for items and interactions, or ``IngestError``."""
    for name in ("items", "interactions"):
        c = counts[name]
        out = c["accepted"] + c.get("negatives", 0) + c["rejected"]
        if c["input"] != out:
            parts = " + ".join(f"{c[k]} {k}" for k in ("accepted", "negatives", "rejected") if k in c)
            raise IngestError(
                f"{name}: row count not conserved: {c['input']} input rows != {parts} = {out} "
                f"({c['input'] - out:+d} unaccounted for)"
            )


def resolve_image_paths(items: pl.DataFrame, image_root: Path) -> pl.DataFrame:
    """Make relative image paths relative to the working directory (the project root)."""
    cwd = Path.cwd().resolve()
    root = image_root.resolve()

    def resolve(p: str | None) -> str | None:
        if p is None or p.strip() == "":
            return None
        path = Path(p)
        full = path if path.is_absolute() else root / path
        try:
            return str(full.relative_to(cwd))
        except ValueError:
            return str(full)

    return items.with_columns(
        pl.col("image_path").map_elements(resolve, return_dtype=pl.String, skip_nulls=False)
    )


def dense_ids(ids: pl.Series, name: str, order: str) -> pl.DataFrame:
    """Unique raw ids -> (``name``, raw id column) in a stable order."""
    if order not in ID_ORDERS:
        raise ValueError(f"params.yaml ingest.id_order: expected one of {list(ID_ORDERS)}, got {order!r}")
    col = ids.name
    uniq = pl.DataFrame({col: ids.unique()})
    as_int = uniq.get_column(col).cast(pl.Int64, strict=False)
    if order == "natural" and uniq.height and as_int.null_count() == 0:
        uniq = uniq.with_columns(as_int.alias("_key")).sort(["_key", col]).drop("_key")  # "07" vs "7"
    else:
        uniq = uniq.sort(col)
    return uniq.with_row_index(name).with_columns(pl.col(name).cast(pl.Int64))


def _split(joined: pl.DataFrame, split: SplitParams, seed: int) -> pl.DataFrame:
    method = split.method
    if method == "random_ratio":
        out = split_random_ratio(
            joined.drop("label", strict=False),
            valid_ratio=float(split.valid_ratio),
            test_ratio=float(split.test_ratio),
            seed=seed,
        )
    elif method == "labels":
        out = split_by_labels(joined)
    elif method == "temporal":
        out = split_temporal(joined.drop("label", strict=False), leave_out=int(split.leave_out))
    else:
        raise ValueError(
            f"params.yaml ingest.split.method: unknown method {method!r}; expected one of {list(METHODS)}"
        )
    return out


def ingest(
    raw: RawData,
    *,
    split: SplitParams | dict[str, Any],
    seed: int,
    min_rating: float | None = None,
    negative_ratings: list[float] | None = None,
    kcore_users: int = 0,
    kcore_items: int = 0,
    keep_items: str = "all",
    id_order: str = "natural",
    drop_cold_users: bool = True,
) -> dict[str, Any]:
    """Pure part of the stage: returns the frames to write and the counts.

    ``split`` is the ``ingest.split`` section (a mapping is checked against ``SplitParams``).
    """
    split = split if isinstance(split, SplitParams) else SplitParams.model_validate(split)
    read_rows = adapter_input_rows(raw)
    if keep_items not in KEEP_ITEMS:
        raise ValueError(
            f"params.yaml ingest.keep_items: expected one of {list(KEEP_ITEMS)}, got {keep_items!r}"
        )
    items = clean_items(raw.items)
    inter = clean_interactions(
        raw.interactions,
        items.accepted.get_column("item_id"),
        min_rating=min_rating,
        negative_ratings=negative_ratings,
    )
    item_rejects = [raw.item_rejects, items.rejects]
    inter_rejects = [raw.interaction_rejects, inter.rejects]
    negatives = inter.negatives if inter.negatives is not None else inter.accepted.head(0)

    # Filters on the positives; negatives and catalog items follow what survives.
    pos, removed = kcore(inter.accepted, min_user=int(kcore_users), min_item=int(kcore_items))
    inter_rejects.append(as_rejects(removed, pl.col("_reason"), "item_id"))
    catalog = items.accepted
    drop_items = None
    if keep_items == "interacted" or kcore_items > 1 or kcore_users > 1:
        interacted = pos.get_column("item_id").unique().implode()
        had = inter.accepted.get_column("item_id").unique().implode()
        keep = pl.col("item_id").is_in(interacted)
        if keep_items == "all":  # k-core only: items that never had interactions stay
            keep = keep | ~pl.col("item_id").is_in(had)
        reason = (
            pl.when(pl.col("item_id").is_in(had))
            .then(pl.lit("removed by k-core (no interaction left)"))
            .otherwise(pl.lit("no positive interaction (ingest.keep_items: interacted)"))
        )
        drop_items = catalog.filter(~keep)
        item_rejects.append(
            as_rejects(drop_items.with_columns(reason.alias("_reason")), pl.col("_reason"), "item_id")
        )
        catalog = catalog.filter(keep)
    users_kept = pos.get_column("user_id").unique().implode()
    neg_ok = pl.col("item_id").is_in(catalog.get_column("item_id").implode())
    if kcore_users > 1:
        neg_ok = neg_ok & pl.col("user_id").is_in(users_kept)
    neg_bad = negatives.filter(~neg_ok)
    inter_rejects.append(
        as_rejects(
            neg_bad.drop("_ts", "_rating"),
            "explicit negative whose user or item was filtered out",
            "item_id",
        )
    )
    negatives = negatives.filter(neg_ok)

    item_map = dense_ids(catalog.get_column("item_id"), "item_idx", id_order).join(
        catalog, on="item_id", how="left"
    )
    item_map = resolve_image_paths(item_map, raw.image_root)
    users = dense_ids(
        pl.concat([pos.get_column("user_id"), negatives.get_column("user_id")]), "user_idx", id_order
    )

    def to_idx(df: pl.DataFrame) -> pl.DataFrame:
        keep_cols = [c for c in df.columns if c not in ("_ts", "_rating")]
        return (
            df.join(users, on="user_id", how="left")
            .join(item_map.select("item_id", "item_idx"), on="item_id", how="left")
            .with_columns(
                pl.col("_ts").cast(pl.Int64).alias("timestamp"),
                pl.col("_rating").cast(pl.Float32).alias("rating"),
            )
            .select(["user_idx", "item_idx", *keep_cols])
        )

    joined = to_idx(pos)
    split_df = _split(joined, split, seed)
    if drop_cold_users:
        train_users = split_df.filter(pl.col("split") == "train").get_column("user_idx").unique().implode()
        cold = (pl.col("split") != "train") & ~pl.col("user_idx").is_in(train_users)
        inter_rejects.append(
            as_rejects(
                split_df.filter(cold).drop("user_idx", "item_idx", "split"),
                "user has no train interaction (dropped from valid/test: evaluation protocol)",
                "item_id",
            )
        )
        split_df = split_df.filter(~cold)
    neg_df = to_idx(negatives)
    neg_df = (
        neg_df.rename({"label": "split"})
        if "label" in neg_df.columns
        else neg_df.with_columns(pl.lit("train").alias("split"))
    )
    if split.method != "labels":
        neg_df = neg_df.with_columns(pl.lit("train").alias("split"))

    rejects = pl.concat(item_rejects + inter_rejects)
    n_item_rej = sum(r.height for r in item_rejects)
    n_inter_rej = sum(r.height for r in inter_rejects)
    counts = {
        "items": {
            "input": read_rows["items"],
            "accepted": item_map.height,
            "rejected": n_item_rej,
        },
        "interactions": {
            "input": read_rows["interactions"],
            "accepted": split_df.height,
            "negatives": neg_df.height,
            "rejected": n_inter_rej,
        },
        "users": users.height,
        "rejects_by_reason": {r: n for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()},
    }
    check_conserved(counts)
    stats = split_stats(split_df, users.height, item_map.height)
    return {
        "items": item_map.select(schemas.ITEMS.names),
        "users": users.select(schemas.USERS.names),
        "interactions": split_df.select(schemas.INTERACTIONS.names),
        "negatives": neg_df.select(schemas.INTERACTIONS.names),
        "rejects": rejects,
        "counts": counts,
        "split_stats": stats,
        "split_hash": split_hash(split_df),
        "summary": {
            "users": users.height,
            "items": item_map.height,
            "interactions": split_df.height,
            "negatives": neg_df.height,
            "density": split_df.height / max(1, users.height * item_map.height),
        },
    }


def ingest_kwargs(ing: IngestParams, seed: int) -> dict[str, Any]:
    """The (effective) ``ingest`` params section -> keyword arguments of ``ingest()``."""
    return {
        "split": ing.split,
        "seed": ing.split.seed if ing.split.seed is not None else seed,
        "min_rating": ing.min_rating,
        "negative_ratings": list(ing.negative_ratings),
        "kcore_users": ing.kcore.users,
        "kcore_items": ing.kcore.items,
        "keep_items": ing.keep_items,
        "id_order": ing.id_order,
        "drop_cold_users": ing.drop_cold_users,
    }
