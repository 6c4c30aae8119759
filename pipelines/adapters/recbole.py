"""RecBole atomic files: ``<name>.inter``, ``<name>.item`` (and ``<name>.user``),
tab-separated with typed headers (``user_id:token``, ``movie_title:token_seq``,
``rating:float``, ...). Pre-split benchmark files ``<name>.{train,valid,test}.inter``
are read with their split as the label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipelines.adapters.common import items_from_interactions, options, path_or_none, required_path
from pipelines.sources import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    RawData,
    SourceError,
    Table,
    derived_rows,
    input_rows,
    read_delimited,
    require_columns,
    require_rows,
    with_columns,
)

TYPES = ("token", "token_seq", "float", "float_seq")
DEFAULTS: dict[str, Any] = {
    "name": None,  # <name>.inter etc. inside data.interactions when that is a folder
    "columns": {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
    # store column <- one field or a list of fields joined with ". "; missing fields are skipped
    "item_columns": {
        "item_id": "item_id",
        "title": ["movie_title", "title", "book_title", "name"],
        "description": ["description"],
        "category": ["class", "genre", "categories"],
    },
    "splits": {"train": "train", "valid": "valid", "test": "test"},  # <name>.<suffix>.inter -> label
}


def read_atomic(path: Path) -> Table:
    """One atomic file; the header's ``name:type`` suffixes are checked and dropped."""
    t = read_delimited(path, sep="\t", quoting=False)
    names = []
    for col, field in enumerate(t.header, start=1):
        name, sep, typ = field.rpartition(":")
        if not sep or not name or typ not in TYPES:
            raise SourceError(
                f"{path}: line 1, column {col}: header field {field!r}; expected 'name:type' with type "
                f"one of {list(TYPES)}"
            )
        names.append(name)
    frame = t.frame.rename(dict(zip(t.header, names, strict=True)))
    return Table(frame=frame, rejects=t.rejects, header=tuple(names), input_rows=t.input_rows)


def _folder_and_name(data: dict[str, Any], name: str | None) -> tuple[Path, str]:
    p = required_path(data, "interactions")
    if p.is_file():
        stem = p.name.removesuffix(".inter")
        return p.parent, stem.rsplit(".", 1)[0] if stem.endswith((".train", ".valid", ".test")) else stem
    if name:
        return p, name
    found = sorted(f for f in p.glob("*.inter") if f.name.count(".") == 1)
    if len(found) != 1:
        raise SourceError(
            f"{p}: expected one <name>.inter, found {[f.name for f in found]}; set data.options.name"
        )
    return p, found[0].stem


def _inter(
    path: Path, columns: dict[str, str], label: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    t = read_atomic(path)
    back = {src: dst for dst, src in columns.items()}
    require_columns(tuple(back.get(h, h) for h in t.header), ("user_id", "item_id"), path)
    require_rows(t, path)
    df = t.frame.rename({s: d for s, d in back.items() if s in t.frame.columns and s != d})
    df = with_columns(df, INTERACTION_COLUMNS)
    if label is not None:
        df = df.with_columns(pl.lit(label).alias("label"))
    return df, t.rejects, t.counts(path)


def _items(path: Path, spec: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    t = read_atomic(path)
    id_col = spec["item_id"]
    require_columns(t.header, (id_col,), path)
    require_rows(t, path)
    exprs = [pl.col(id_col).alias("item_id")]
    for store_col, fields in spec.items():
        if store_col == "item_id":
            continue
        present = [f for f in ([fields] if isinstance(fields, str) else fields) if f in t.header]
        if store_col == "title" or store_col == "category":
            present = present[:1]  # one field: the first present
        if present:
            exprs.append(
                pl.concat_str([pl.col(f) for f in present], separator=". ", ignore_nulls=True).alias(
                    store_col
                )
            )
    df = t.frame.select(*exprs, "_row", "_source")
    return with_columns(df, ITEM_COLUMNS), t.rejects, t.counts(path)


def read(data: dict[str, Any]) -> RawData:
    opts = options(data, DEFAULTS)
    cols = {**DEFAULTS["columns"], **(opts["columns"] or {})}
    folder, name = _folder_and_name(data, opts["name"])
    whole = folder / f"{name}.inter"
    parts = {label: folder / f"{name}.{suffix}.inter" for suffix, label in opts["splits"].items()}
    if all(p.exists() for p in parts.values()):
        frames, rejects, counts = zip(*(_inter(p, cols, label) for label, p in parts.items()), strict=True)
        inter, inter_rej, inputs = pl.concat(frames, how="diagonal"), pl.concat(rejects), list(parts.values())
        inter_rows = input_rows(*counts)
    elif whole.exists():
        inter, inter_rej, inter_rows = _inter(whole, cols, None)
        inputs = [whole]
    else:
        raise SourceError(f"{whole}: not found (nor {[p.name for p in parts.values()]})")
    item_path = path_or_none(data["items"])
    if item_path is None and (folder / f"{name}.item").exists():
        item_path = folder / f"{name}.item"
    if item_path is not None:
        items, item_rej, item_rows = _items(
            item_path, {**DEFAULTS["item_columns"], **(opts["item_columns"] or {})}
        )
        inputs.append(item_path)
    else:
        items, item_rej = items_from_interactions(inter), None
        item_rows = derived_rows(items, inputs)
    images = path_or_none(data["images"])
    kwargs = {"item_rejects": item_rej} if item_rej is not None else {}
    return RawData(
        items=items,
        interactions=inter,
        image_root=images if images is not None and images.is_dir() else folder,
        inputs=tuple(inputs),
        interaction_rejects=inter_rej,
        facts={"format": "recbole", "name": name},
        item_input_rows=item_rows,
        interaction_input_rows=inter_rows,
        **kwargs,
    )
