"""Generic CSV / TSV / Parquet: an item catalog and an interaction log.

items: ``item_id`` (required), ``title``, ``description`` (or ``text``), ``category``,
``image_path`` (relative to the items file's folder, or absolute); interactions:
``user_id``, ``item_id`` (required), ``timestamp``, ``rating``, optional ``label``
(train/valid/test). ``options.columns`` renames source columns (store name: source name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipelines.adapters.common import options, rename, renamed_header, required_path
from pipelines.sources import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    REQUIRED_INTERACTION_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    RawData,
    read_tabular,
    require_columns,
    require_rows,
    with_columns,
)

DEFAULTS: dict[str, Any] = {"columns": {}, "item_columns": {}, "sep": None}


def read_items(
    path: Path, columns: dict[str, str] | None = None, sep: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(items, read rejects, {file: records read})."""
    t = read_tabular(path, sep=sep)
    require_columns(renamed_header(t.header, columns), REQUIRED_ITEM_COLUMNS, path)
    require_rows(t, path)
    df = rename(t.frame, columns)
    if "description" not in df.columns and "text" in df.columns:
        df = df.rename({"text": "description"})  # `text` is accepted as the description
    return with_columns(df, ITEM_COLUMNS), t.rejects, t.counts(path)


def read_interactions(
    path: Path, columns: dict[str, str] | None = None, sep: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(interactions, read rejects, {file: records read})."""
    t = read_tabular(path, sep=sep)
    require_columns(renamed_header(t.header, columns), REQUIRED_INTERACTION_COLUMNS, path)
    require_rows(t, path)
    return with_columns(rename(t.frame, columns), INTERACTION_COLUMNS), t.rejects, t.counts(path)


def read_generic(
    items_path: Path,
    interactions_path: Path,
    *,
    columns: dict[str, str] | None = None,
    item_columns: dict[str, str] | None = None,
    sep: str | None = None,
) -> RawData:
    """Generic layout from two files (CSV, TSV or Parquet by extension)."""
    items, item_rej, item_rows = read_items(items_path, item_columns, sep)
    inter, inter_rej, inter_rows = read_interactions(interactions_path, columns, sep)
    if "label" in inter.columns:
        inter = inter.with_columns(pl.col("label").str.strip_chars())
    return RawData(
        items=items,
        interactions=inter,
        image_root=items_path.parent,
        inputs=(items_path, interactions_path),
        item_rejects=item_rej,
        interaction_rejects=inter_rej,
        facts={"format": "generic"},
        item_input_rows=item_rows,
        interaction_input_rows=inter_rows,
    )


def read(data: dict[str, Any]) -> RawData:
    opts = options(data, DEFAULTS)
    return read_generic(required_path(data, "items"), required_path(data, "interactions"), **opts)
