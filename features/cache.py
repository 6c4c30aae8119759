"""The feature cache: whether the published table of a feature can serve the next run.

A feature table's rows are keyed by (cache key, content hash of the item's input). The
cache key names the encoder (model, weights, preprocessing) and the input-decoding
version; when the previous table's manifest carries the same key and dimension, its rows
for unchanged items are reused bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

from features.inputs import INPUT_VERSION
from features.store import MANIFEST


def cache_key(encoder_id: str) -> str:
    """What must match for a cached vector to be reused: encoder id + input-decoding version."""
    return f"{encoder_id}|inputs:{INPUT_VERSION}"


def previous_table(path: Path, key: str, dim: int) -> tuple[Path | None, str]:
    """(the published table at ``path`` when it can serve as the cache, why or why not)."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        return None, "no previous table"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        return None, f"previous manifest unreadable: {e}"
    if manifest.get("cache_key") != key:
        return None, f"encoder or input version changed (previous key {manifest.get('cache_key')!r})"
    if manifest.get("dim") != dim:
        return None, f"dimension changed ({manifest.get('dim')} -> {dim})"
    if not list(path.glob("*.parquet")) or not manifest.get("row_count"):
        return None, "previous table has no rows"
    return path, f"previous table of {manifest.get('row_count')} rows"


def previous_rows(path: Path) -> int:
    return int(json.loads((path / MANIFEST).read_text()).get("row_count", 0))
