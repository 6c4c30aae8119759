"""Successive snapshots of the tiny demo catalog, and checks of a store after a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from features.store import MANIFEST, read_table
from pipelines.layout import Layout


def next_snapshot(raw_dir: Path, seed: int, share: float = 0.05) -> dict[str, list[str]]:
    """Rewrite the catalog and log in ``raw_dir`` as the next night's export: ``share`` of
    the items get a new title, ``share`` are removed (with their interactions), ``share``
    new items appear (reusing existing images under new ids) and ``share`` more
    interactions arrive, later than every earlier one. Returns the ids of each kind."""
    items = pl.read_csv(raw_dir / "items.csv", infer_schema_length=0)
    inter = pl.read_csv(raw_dir / "interactions.csv", infer_schema_length=0)
    n = items.height
    k = max(1, round(share * n))
    ids = items.get_column("item_id").shuffle(seed=seed).to_list()
    changed, removed = ids[:k], ids[k : 2 * k]
    items = items.with_columns(
        pl.when(pl.col("item_id").is_in(changed))
        .then(pl.col("title") + pl.lit(f" (edition {seed})"))
        .otherwise(pl.col("title"))
        .alias("title")
    ).filter(~pl.col("item_id").is_in(removed))
    donors = items.filter(~pl.col("item_id").is_in(changed)).head(k)
    new = [f"item_new_{seed}_{i:03d}" for i in range(k)]
    items = pl.concat(
        [items, donors.with_columns(pl.Series("item_id", new), (pl.col("title") + " new").alias("title"))]
    )
    inter = inter.filter(~pl.col("item_id").is_in(removed))
    users = inter.get_column("user_id").unique().sort().to_list()
    last = int(inter.get_column("timestamp").cast(pl.Int64).max())
    m = max(1, round(share * inter.height))
    pool = items.get_column("item_id").to_list()
    extra = pl.DataFrame(
        {
            "user_id": [users[(seed * 7 + 13 * i) % len(users)] for i in range(m)],
            "item_id": [pool[(seed * 11 + 17 * i) % len(pool)] for i in range(m)],
            "timestamp": [str(last + 60 * (i + 1)) for i in range(m)],
            "rating": ["5"] * m,
        }
    ).select(inter.columns)
    inter = pl.concat([inter, extra]).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
    items.write_csv(raw_dir / "items.csv")
    inter.write_csv(raw_dir / "interactions.csv")
    return {"changed": changed, "removed": removed, "new": new}


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    raw = dict(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def published(layout: Layout) -> list[Path]:
    """Every published table of the latest view (history, runs and hidden folders aside)."""
    out = []
    for m in sorted(layout.store.rglob(MANIFEST)):
        rel = m.parent.relative_to(layout.store)
        if rel.parts and rel.parts[0] in ("history", "_runs"):
            continue
        if any(p.startswith(".") for p in rel.parts):
            continue
        out.append(m.parent)
    return out


def table_digest(path: Path) -> str:
    """Content of a table independent of how its rows are split into files."""
    t = read_table(path)
    # Image paths are absolute: two stores over copies of one catalog differ only there.
    t = t.drop_columns([c for c in ("image_path",) if c in t.column_names])
    keys = [c for c in ("user_idx", "item_idx", "rank", "item_id", "user_id") if c in t.column_names]
    if keys:
        t = t.sort_by([(c, "ascending") for c in keys])
    h = hashlib.sha256()
    for c in sorted(t.column_names):
        h.update(c.encode())
        h.update(str(t.column(c).to_pylist()).encode())
    return h.hexdigest()
