"""Split dictionaries in JSON: ``{user: [item, ...]}`` per split (``train.json``,
``val.json``, ``test.json``), with ``item2id.json`` / ``user2id.json`` (original id ->
index). This is how the LATTICE / FREEDOM line of work ships Amazon 5-core data.

Store ids are the ids the split files use (the indices); the catalog is the set of
``item2id.json`` values when ``data.items`` points at it, so items that only the
catalog knows stay rankable and an item missing from it is rejected as unknown.
``_row`` of a pair is its 1-based position in its file (JSON has no useful lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.adapters.common import items_from_interactions, options, path_or_none, required_path
from pipelines.sources import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    RawData,
    SourceError,
    derived_rows,
    empty_rejects,
    input_rows,
    reject_frame,
    with_columns,
)

DEFAULTS: dict[str, Any] = {
    "files": {"train": "train.json", "valid": "val.json", "test": "test.json"},
}


def load_json(path: Path) -> Any:
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    text = path.read_bytes()
    if not text.strip():
        raise SourceError(f"{path}: empty file; expected a JSON object")
    try:
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: byte {e.start}: not valid UTF-8") from e
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from e


def read_split_file(path: Path, label: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """One ``{user: [items]}`` file -> (user_id, item_id, label) rows; a user whose value
    is not a list of ids is a reject."""
    obj = load_json(path)
    if not isinstance(obj, dict):
        raise SourceError(
            f"{path}: line 1, column 1: expected a JSON object {{user: [items]}}, found {type(obj).__name__}"
        )
    users: list[str] = []
    items: list[str] = []
    rows: list[int] = []
    bad_rows, bad_reasons, bad_records = [], [], []
    n = 0
    for user, value in obj.items():
        n += 1
        if not isinstance(value, list) or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in value
        ):
            bad_rows.append(n)
            bad_reasons.append(f"user {user!r}: expected a list of item ids, found {json.dumps(value)[:80]}")
            bad_records.append(json.dumps({user: value})[:2000])
            continue
        n -= 1
        for v in value:
            n += 1
            users.append(str(user))
            items.append(str(v))
            rows.append(n)
    frame = pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=pl.String),
            "item_id": pl.Series(items, dtype=pl.String),
            "label": pl.Series([label] * len(users), dtype=pl.String),
            "_row": pl.Series(rows, dtype=pl.Int64),
            "_source": pl.Series([str(path)] * len(users), dtype=pl.String),
        }
    )
    rejects = reject_frame(path, bad_rows, bad_reasons, bad_records)
    return with_columns(frame, INTERACTION_COLUMNS), rejects, {str(path): n}


def catalog(path: Path) -> pl.DataFrame:
    """Items from an ``item2id.json`` mapping (original id -> index): one row per index."""
    obj = load_json(path)
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: line 1, column 1: expected a JSON object {{original id: index}}")
    ids = [str(v) for v in obj.values()]
    df = pl.DataFrame(
        {
            "item_id": pl.Series(ids, dtype=pl.String),
            "_row": pl.Series(range(1, len(ids) + 1), dtype=pl.Int64),
            "_source": pl.Series([str(path)] * len(ids), dtype=pl.String),
        }
    )
    return with_columns(df, ITEM_COLUMNS)


def read(data: dict[str, Any]) -> RawData:
    opts = options(data, DEFAULTS)
    folder = required_path(data, "interactions")
    if folder.is_file():
        folder = folder.parent
    frames, rejects, inputs, counts = [], [], [], []
    for label, name in opts["files"].items():
        if label not in ("train", "valid", "test"):
            raise SourceError(
                f"params.yaml data.options.files: unknown split {label!r}; expected train/valid/test"
            )
        f, r, c = read_split_file(folder / name, label)
        frames.append(f)
        rejects.append(r)
        counts.append(c)
        inputs.append(folder / name)
    inter = pl.concat(frames)
    if inter.height == 0:
        raise SourceError(f"{folder}: the split files hold no interactions")
    item_map = path_or_none(data["items"])
    if item_map is not None:
        items = catalog(item_map)
        item_rows = {str(item_map): items.height}
        inputs.append(item_map)
    else:
        items = items_from_interactions(inter)
        item_rows = derived_rows(items, inputs)
    images = path_or_none(data["images"])
    return RawData(
        items=items,
        interactions=inter,
        image_root=images if images is not None and images.is_dir() else folder,
        inputs=tuple(inputs),
        item_rejects=empty_rejects(),
        interaction_rejects=pl.concat(rejects),
        facts={"format": "split_json", "files": opts["files"]},
        item_input_rows=item_rows,
        interaction_input_rows=input_rows(*counts),
    )
