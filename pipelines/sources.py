"""Readers that turn a raw catalog and interaction log into string-typed polars frames.

Every column is read as text so that bad values are caught row by row by the
cleaning step (and land in the rejects table) instead of failing the whole read.
Each frame keeps ``_source`` (file) and ``_row`` (line or row number) for rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.errors import PlatformError

ITEM_COLUMNS = ("item_id", "title", "description", "category", "image_path")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")
REQUIRED_ITEM_COLUMNS = ("item_id",)
REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id")


class SourceError(PlatformError, ValueError):
    """The raw input cannot be read as the declared format."""


@dataclass(frozen=True)
class RawData:
    items: pl.DataFrame
    interactions: pl.DataFrame
    image_root: Path


def read_tabular(path: Path) -> pl.DataFrame:
    """CSV/TSV/Parquet -> all-string frame with ``_source`` and ``_row`` columns."""
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pl.read_parquet(path)
        df = df.with_columns(pl.all().cast(pl.String))
        offset = 0
    elif suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        try:
            df = pl.read_csv(path, separator=sep, infer_schema=False)
        except pl.exceptions.ComputeError as e:
            raise SourceError(f"{path}: cannot parse as {suffix[1:]}: {e}") from e
        offset = 2  # line 1 is the header
    else:
        raise SourceError(f"{path}: unsupported extension {suffix!r}; expected .csv, .tsv or .parquet")
    return df.with_row_index("_row", offset=offset).with_columns(
        pl.lit(str(path)).alias("_source"), pl.col("_row").cast(pl.Int64)
    )


def _require(df: pl.DataFrame, required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing}; found {[c for c in df.columns if not c.startswith('_')]}"
        )


def read_generic(items_path: Path, interactions_path: Path) -> RawData:
    """Generic layout: items (item_id, title, description, category, image_path) and
    interactions (user_id, item_id, timestamp, rating), CSV or Parquet."""
    items = read_tabular(items_path)
    _require(items, REQUIRED_ITEM_COLUMNS, items_path)
    for col in ITEM_COLUMNS:
        if col not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    inter = read_tabular(interactions_path)
    _require(inter, REQUIRED_INTERACTION_COLUMNS, interactions_path)
    for col in INTERACTION_COLUMNS:
        if col not in inter.columns:
            inter = inter.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    return RawData(items=items, interactions=inter, image_root=items_path.parent)
