"""Helpers several adapters share: options, paths, catalogs derived from interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipelines.sources import ITEM_COLUMNS, SourceError, with_columns


def options(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``data.options`` over ``defaults``; an unknown key is an error (a typo would be silent)."""
    given = dict(data["options"] or {}) if "options" in data else {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise SourceError(
            f"params.yaml data.options: unknown option(s) {unknown} for source "
            f"{data['source']!r}; expected some of {sorted(defaults)}"
        )
    return {**defaults, **given}


def path_or_none(value: Any) -> Path | None:
    return None if value in (None, "", "null") else Path(str(value))


def required_path(data: dict[str, Any], key: str) -> Path:
    p = path_or_none(data[key])
    if p is None:
        raise SourceError(f"params.yaml data.{key}: a path is required for source {data['source']!r}")
    if not p.exists():
        raise SourceError(f"params.yaml data.{key}: {p} not found")
    return p


def items_from_interactions(inter: pl.DataFrame) -> pl.DataFrame:
    """An id-only catalog: each item id at its first line in the interaction file."""
    items = (
        inter.filter(pl.col("item_id").is_not_null() & (pl.col("item_id").str.strip_chars() != ""))
        .with_columns(pl.col("item_id").str.strip_chars())
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("_row").first(), pl.col("_source").first())
    )
    return with_columns(items, ITEM_COLUMNS)


def rename(df: pl.DataFrame, mapping: dict[str, str] | None) -> pl.DataFrame:
    """Store names from source names: ``mapping`` is ``{store_name: source_name}``."""
    present = {src: dst for dst, src in (mapping or {}).items() if src in df.columns and src != dst}
    return df.drop([d for d in present.values() if d in df.columns]).rename(present)


def renamed_header(header: tuple[str, ...], mapping: dict[str, str] | None) -> tuple[str, ...]:
    back = {src: dst for dst, src in (mapping or {}).items()}
    return tuple(back.get(h, h) for h in header)
