"""Amazon review data as JSON lines: reviews (``data.interactions``) and product
metadata (``data.items``), in the 2014 field names (``reviewerID``, ``asin``,
``overall``, ``unixReviewTime``; metadata ``asin``, ``title``, ``description``,
``categories``, ``imUrl``) or the 2023 ones (``user_id``, ``parent_asin``, ``rating``,
``timestamp`` in ms; metadata ``parent_asin``, ``title``, ``description``, ``features``,
``categories``, ``images``). Files may be gzipped; 2014 metadata lines written as
Python literals are accepted.

Metadata files usually cover a whole category, far more items than a 5-core review set
uses: set ``ingest.keep_items: interacted`` to rank only reviewed items.

Images come from a local mirror (``data.images``: ``<item_id>.<ext>`` or the URL's
file name); the URL stays in ``image_url`` for the optional download command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl

from pipelines.adapters.common import options, path_or_none, required_path
from pipelines.sources import INTERACTION_COLUMNS, RawData, read_jsonl, require_rows

ITEM_FIELDS = ("item_id", "title", "description", "category", "image_url")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
DEFAULTS: dict[str, Any] = {
    "item_key": "auto",  # auto: parent_asin when a record has it (2023), else asin (2014)
    "category_separator": " > ",
}


def _text(value: Any, sep: str = " ") -> str | None:
    """A string, or the non-empty strings of a (nested) list joined."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list | tuple):
        parts = [t for t in (_text(v, sep) for v in value) if t]
        return sep.join(parts) or None
    return str(value)


def _image_url(rec: dict[str, Any]) -> str | None:
    if isinstance(rec.get("imUrl"), str):
        return rec["imUrl"] or None
    images = rec.get("images")
    if isinstance(images, list) and images:
        dicts = [i for i in images if isinstance(i, dict)]
        main = [i for i in dicts if i.get("variant") == "MAIN"] or dicts
        for img in main:
            for key in ("hi_res", "large", "thumb"):
                if isinstance(img.get(key), str) and img[key]:
                    return img[key]
        strings = [i for i in images if isinstance(i, str)]
        return strings[0] if strings else None
    if isinstance(images, dict):  # 2023 metadata occasionally stores {large: [...], ...}
        for key in ("hi_res", "large", "thumb"):
            urls = images.get(key)
            if isinstance(urls, list) and urls and isinstance(urls[0], str):
                return urls[0]
    return None


def item_record(rec: dict[str, Any], key: str, cat_sep: str) -> dict[str, str | None]:
    """One metadata record (2014 or 2023 names) -> store fields."""
    item_id = (
        rec.get("parent_asin")
        if key == "auto" and rec.get("parent_asin")
        else rec.get("asin" if key == "auto" else key)
    )
    cats = rec.get("categories")
    if isinstance(cats, list) and cats and isinstance(cats[0], list):
        category = cat_sep.join(str(c) for c in cats[0]) or None  # 2014: list of category paths
    else:
        category = _text(cats, cat_sep) or _text(rec.get("main_category"))
    description = _text([_text(rec.get("description")), _text(rec.get("features"))])
    return {
        "item_id": _text(item_id),
        "title": _text(rec.get("title")),
        "description": description,
        "category": category,
        "image_url": _image_url(rec),
    }


def review_record(rec: dict[str, Any], key: str) -> dict[str, str | None]:
    """One review (2014 or 2023 names) -> user, item, rating, timestamp (seconds)."""
    item = (rec.get("parent_asin") or rec.get("asin")) if key == "auto" else rec.get(key)
    ts = rec.get("unixReviewTime")
    if ts is None and rec.get("timestamp") is not None:
        t = rec["timestamp"]
        ts = t // 1000 if isinstance(t, int) else t  # 2023: milliseconds
    rating = rec.get("overall", rec.get("rating"))
    user = rec.get("reviewerID", rec.get("user_id"))
    return {
        "user_id": None if user is None else str(user),
        "item_id": None if item is None else str(item),
        "rating": None if rating is None else str(rating),
        "timestamp": None if ts is None else str(ts),
    }


def mirror_index(folder: Path | None) -> dict[str, str]:
    """File name and stem -> file name for every image in the local mirror."""
    if folder is None or not folder.is_dir():
        return {}
    index: dict[str, str] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            index.setdefault(f.name, f.name)
            index.setdefault(f.stem, f.name)
    return index


def local_image(item_id: str | None, url: str | None, index: dict[str, str]) -> str | None:
    if item_id and item_id in index:
        return index[item_id]
    if url:
        name = Path(urlparse(url).path).name
        if name in index:
            return index[name]
    return None


def read(data: dict[str, Any]) -> RawData:
    opts = options(data, DEFAULTS)
    meta_path = required_path(data, "items")
    reviews_path = required_path(data, "interactions")
    key, sep = opts["item_key"], opts["category_separator"]
    meta = read_jsonl(meta_path, lambda r: item_record(r, key, sep), ITEM_FIELDS, loose=True)
    require_rows(meta, meta_path)
    reviews = read_jsonl(reviews_path, lambda r: review_record(r, key), INTERACTION_COLUMNS, loose=True)
    require_rows(reviews, reviews_path)
    images = path_or_none(data["images"])
    index = mirror_index(images)
    items = meta.frame.with_columns(
        pl.struct("item_id", "image_url")
        .map_elements(lambda s: local_image(s["item_id"], s["image_url"], index), return_dtype=pl.String)
        .alias("image_path")
    )
    return RawData(
        items=items,
        interactions=reviews.frame,
        image_root=images if images is not None else meta_path.parent,
        inputs=(meta_path, reviews_path),
        item_rejects=meta.rejects,
        interaction_rejects=reviews.rejects,
        facts={"format": "amazon", "item_key": key, "images_in_mirror": len(index)},
        item_input_rows=meta.counts(meta_path),
        interaction_input_rows=reviews.counts(reviews_path),
    )
