"""MMRec layout: ``<name>.inter`` (tab-separated ``userID itemID rating [timestamp]
x_label``, x_label 0/1/2 = train/valid/test), feature ``.npy`` files aligned to the
item ids, optional ``i_id_mapping.csv`` / ``u_id_mapping.csv``.

Store ids are the ids exactly as the ``.inter`` file writes them, so row ``r`` of a
feature ``.npy`` belongs to ``item_id == str(r)`` (and, with ``ingest.id_order:
natural`` and nothing filtered, to ``item_idx == r``). Original ids (from the id
mapping files, or a row-aligned copy of the ``.inter`` with original ids such as
DBbook's ``dbbook_og_ids.inter``) are used only to attach item metadata
(``data.items``: a delimited file keyed by the original id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipelines.adapters.common import (
    items_from_interactions,
    options,
    path_or_none,
    rename,
    renamed_header,
    required_path,
)
from pipelines.sources import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    RawData,
    SourceError,
    derived_rows,
    read_delimited,
    read_tabular,
    require_columns,
    require_rows,
    with_columns,
)

DEFAULTS: dict[str, Any] = {
    "name": None,  # <name>.inter inside data.interactions when that is a folder
    "columns": {
        "user_id": "userID",
        "item_id": "itemID",
        "rating": "rating",
        "timestamp": "timestamp",
        "label": "x_label",
    },
    "labels": {"0": "train", "1": "valid", "2": "test"},
    "original_ids": None,  # a row-aligned copy of the .inter with original ids (file name in the folder)
    "item_mapping": "i_id_mapping.csv",  # original id <-> itemID, used when the file exists
    "item_columns": {"item_id": "item_id"},  # data.items metadata: store name -> its column
    "item_sep": "\t",
}


def inter_path(data: dict[str, Any], name: str | None) -> Path:
    p = required_path(data, "interactions")
    if p.is_file():
        return p
    if name:
        f = p / f"{name}.inter"
        if not f.exists():
            raise SourceError(f"{f}: not found (data.options.name {name!r})")
        return f
    found = sorted(p.glob("*.inter"))
    if len(found) != 1:
        raise SourceError(
            f"{p}: expected exactly one .inter file, found {[f.name for f in found]}; set data.options.name"
        )
    return found[0]


def read_inter(
    path: Path, columns: dict[str, str], labels: dict[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """The .inter file with store column names; x_label values mapped to split names."""
    t = read_delimited(path, sep="\t", quoting=False)
    require_columns(renamed_header(t.header, columns), ("user_id", "item_id"), path)
    require_rows(t, path)
    df = with_columns(rename(t.frame, columns), INTERACTION_COLUMNS)
    if "label" in df.columns:
        mapping = {str(k): v for k, v in labels.items()}
        df = df.with_columns(pl.col("label").str.strip_chars().replace(mapping).alias("label"))
    return df, t.rejects, t.counts(path)


def original_item_ids(folder: Path, inter: pl.DataFrame, opts: dict[str, Any]) -> pl.DataFrame | None:
    """(item_id, original_id) from a row-aligned original-id copy or an id mapping file."""
    cols = opts["columns"]
    if opts["original_ids"]:
        path = folder / opts["original_ids"]
        og, _, _ = read_inter(path, cols, opts["labels"])
        if og.height != inter.height:
            raise SourceError(
                f"{path}: {og.height} rows but the .inter has {inter.height}; expected a row-aligned copy"
            )
        pairs = (
            inter.select("_row", pl.col("item_id").str.strip_chars())
            .join(og.select("_row", pl.col("item_id").str.strip_chars().alias("original_id")), on="_row")
            .select("item_id", "original_id")
            .unique(maintain_order=True)
        )
        clash = pairs.filter(pl.col("item_id").is_duplicated())
        if clash.height:
            first = clash.item(0, "item_id")
            originals = clash.filter(pl.col("item_id") == first).get_column("original_id").to_list()
            raise SourceError(f"{path}: item {first!r} maps to several original ids {originals}")
        return pairs
    mapping = folder / opts["item_mapping"] if opts["item_mapping"] else None
    if mapping is not None and mapping.exists():
        t = read_delimited(mapping, sep="\t", quoting=False)
        id_col = cols["item_id"]
        require_columns(t.header, (id_col,), mapping)
        others = [c for c in t.header if c != id_col]
        if len(others) != 1:
            raise SourceError(
                f"{mapping}: line 1: expected two columns (original id, {id_col}), found {list(t.header)}"
            )
        return t.frame.select(
            pl.col(id_col).str.strip_chars().alias("item_id"),
            pl.col(others[0]).str.strip_chars().alias("original_id"),
        )
    return None


def attach_metadata(
    items: pl.DataFrame, meta_path: Path, ids: pl.DataFrame | None, opts: dict[str, Any]
) -> pl.DataFrame:
    """Fill title/description/category/image_path from a metadata file keyed by original id."""
    t = read_tabular(meta_path, sep=opts["item_sep"])
    mcols = dict(opts["item_columns"])
    require_columns(renamed_header(t.header, mcols), ("item_id",), meta_path)
    meta = (
        rename(t.frame, mcols)
        .select(
            pl.col("item_id").str.strip_chars().alias("original_id"),
            *[
                pl.col(c)
                for c in ITEM_COLUMNS
                if c != "item_id" and c in rename(t.frame.head(0), mcols).columns
            ],
        )
        .unique("original_id", keep="first", maintain_order=True)
    )
    keyed = (
        items.join(ids, on="item_id", how="left")
        if ids is not None
        else items.with_columns(pl.col("item_id").alias("original_id"))
    )
    filled = keyed.drop([c for c in meta.columns if c != "original_id"]).join(
        meta, on="original_id", how="left"
    )
    return with_columns(filled.drop("original_id"), ITEM_COLUMNS).select(items.columns)


def read(data: dict[str, Any]) -> RawData:
    opts = options(data, DEFAULTS)
    opts["columns"] = {**DEFAULTS["columns"], **(opts["columns"] or {})}
    path = inter_path(data, opts["name"])
    inter, rejects, inter_rows = read_inter(path, opts["columns"], opts["labels"])
    items = items_from_interactions(inter)
    item_rows = derived_rows(items, [path])  # metadata only fills in these items
    inputs = [path]
    meta = path_or_none(data["items"])
    if meta is not None and meta.resolve() != path.resolve():
        ids = original_item_ids(path.parent, inter, opts)
        items = attach_metadata(items, meta, ids, opts)
        inputs.append(meta)
        if opts["original_ids"]:
            inputs.append(path.parent / opts["original_ids"])
    images = path_or_none(data["images"])
    return RawData(
        items=items,
        interactions=inter,
        image_root=images if images is not None and images.is_dir() else path.parent,
        inputs=tuple(inputs),
        interaction_rejects=rejects,
        facts={
            "format": "mmrec",
            "inter": str(path),
            "labels": opts["labels"],
            "features_npy": sorted(str(f) for f in path.parent.glob("*.npy")),
        },
        item_input_rows=item_rows,
        interaction_input_rows=inter_rows,
    )
