"""Ingest stage: raw catalog + interaction log -> items, users, interactions, rejects tables.

Dense int64 ids (``item_idx``, ``user_idx``) are assigned in sorted raw-id order so the
same input always gives the same ids; raw ids stay in the items/users tables.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

from features import schemas
from features.store import fingerprint_file, write_table
from pipelines.cleaning import clean_interactions, clean_items
from pipelines.sources import RawData, SourceError, read_generic
from pipelines.splits import split_random_ratio, split_stats

log = logging.getLogger(__name__)


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


def read_source(data: dict[str, Any]) -> RawData:
    source = data.get("source", "generic")
    if source in ("generic", "demo"):
        return read_generic(Path(data["items"]), Path(data["interactions"]))
    raise SourceError(f"params.yaml data.source: unknown source {source!r}; expected 'generic' or 'demo'")


def ingest(raw: RawData, *, split: dict[str, Any], seed: int, min_rating: float | None) -> dict[str, Any]:
    """Pure part of the stage: returns the frames to write and the counts."""
    items = clean_items(raw.items)
    inter = clean_interactions(raw.interactions, items.accepted.get_column("item_id"), min_rating=min_rating)

    item_map = (
        items.accepted.sort("item_id")
        .with_row_index("item_idx")
        .with_columns(pl.col("item_idx").cast(pl.Int64))
    )
    item_map = resolve_image_paths(item_map, raw.image_root)
    users = (
        inter.accepted.select("user_id")
        .unique()
        .sort("user_id")
        .with_row_index("user_idx")
        .with_columns(pl.col("user_idx").cast(pl.Int64))
    )
    joined = (
        inter.accepted.join(users, on="user_id", how="left")
        .join(item_map.select("item_id", "item_idx"), on="item_id", how="left")
        .select(
            "user_idx",
            "item_idx",
            pl.col("_ts").cast(pl.Int64).alias("timestamp"),
            pl.col("_rating").cast(pl.Float32).alias("rating"),
        )
    )
    method = split.get("method", "random_ratio")
    if method != "random_ratio":
        raise ValueError(
            f"params.yaml ingest.split.method: unknown method {method!r}; expected 'random_ratio'"
        )
    split_df = split_random_ratio(
        joined, valid_ratio=float(split["valid_ratio"]), test_ratio=float(split["test_ratio"]), seed=seed
    )
    rejects = pl.concat([items.rejects, inter.rejects])
    counts = {
        "items": {"input": raw.items.height, "accepted": item_map.height, "rejected": items.rejects.height},
        "interactions": {
            "input": raw.interactions.height,
            "accepted": split_df.height,
            "rejected": inter.rejects.height,
        },
        "users": users.height,
        "rejects_by_reason": {r: n for r, n in rejects.group_by("reason").len().sort("reason").iter_rows()},
    }
    for name in ("items", "interactions"):
        c = counts[name]
        assert c["input"] == c["accepted"] + c["rejected"], f"{name}: row count not conserved {c}"
    return {
        "items": item_map.select(schemas.ITEMS.names),
        "users": users.select(schemas.USERS.names),
        "interactions": split_df.select(schemas.INTERACTIONS.names),
        "rejects": rejects,
        "counts": counts,
        "split_stats": split_stats(split_df, users.height, item_map.height),
    }


def run(params: dict[str, Any], store: Path, stats_path: Path) -> dict[str, Any]:
    data, ing = params["data"], params["ingest"]
    raw = read_source(data)
    out = ingest(
        raw,
        split=ing["split"],
        seed=int(ing["split"].get("seed", params.get("seed", 0))),
        min_rating=ing.get("min_rating"),
    )
    inputs = {
        str(p): fingerprint_file(Path(p)) for p in (data["items"], data["interactions"]) if os.path.exists(p)
    }
    common = {"inputs": inputs, "source": data.get("source", "generic")}
    write_table(store / "items", out["items"].to_arrow(), schemas.ITEMS, **common)
    write_table(store / "users", out["users"].to_arrow(), schemas.USERS, **common)
    write_table(
        store / "interactions",
        out["interactions"].to_arrow(),
        schemas.INTERACTIONS,
        split=ing["split"],
        split_stats=out["split_stats"],
        **common,
    )
    write_table(store / "rejects", out["rejects"].to_arrow(), schemas.REJECTS, counts=out["counts"], **common)
    summary = {"counts": out["counts"], "split": out["split_stats"]}
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(summary, indent=2) + "\n")
    c = out["counts"]
    log.info(
        "ingest: items %d in = %d accepted + %d rejected; "
        "interactions %d in = %d accepted + %d rejected; %d users",
        c["items"]["input"],
        c["items"]["accepted"],
        c["items"]["rejected"],
        c["interactions"]["input"],
        c["interactions"]["accepted"],
        c["interactions"]["rejected"],
        c["users"],
    )
    return summary
