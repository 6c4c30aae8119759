"""The feature cache: whether the published table of a feature can serve the next run.

A feature table's rows are keyed by (cache key, content hash of the item's input). The
cache key is the encoder id — model name, the checksum of every file it loads (a whole
model folder: weights, configs, tokenizer, pooling and other module folders, custom code),
preprocessing, and a digest of the versions of the libraries that change its outputs —
plus the input-decoding version and the store schema version. When the previous table's
manifest carries the same key and dimension, its rows for unchanged items are reused bit
for bit. The manifest's ``cache_key_parts`` (from ``Encoder.describe()``) spell the pieces
out, so a reader can see why a cache was not reused.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from features.inputs import INPUT_VERSION
from features.schemas import SCHEMA_VERSION
from features.store import MANIFEST


def cache_key(encoder_id: str) -> str:
    """What must match for a cached vector to be reused: encoder id + input and schema versions."""
    return f"{encoder_id}|inputs:{INPUT_VERSION}|schema:{SCHEMA_VERSION}"


def key_change(old: str, new: str) -> str:
    """The pieces of a cache key that differ, e.g. ``libs@1a2b3c4d -> libs@5e6f7a8b``."""
    a, b = re.split(r"[:|]", old), re.split(r"[:|]", new)
    diffs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            diffs.append(f"{':'.join(a[i1:i2]) or '-'} -> {':'.join(b[j1:j2]) or '-'}")
    return "; ".join(diffs) or "identical"


def previous_table(path: Path, key: str, dim: int) -> tuple[Path | None, str]:
    """(the published table at ``path`` when it can serve as the cache, why or why not)."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        return None, "no previous table"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        return None, f"previous manifest unreadable: {e}"
    old = manifest.get("cache_key")
    if old != key:
        change = key_change(str(old), key) if isinstance(old, str) else f"previous key {old!r}"
        return None, f"encoder or input version changed: cache key changed ({change})"
    if manifest.get("dim") != dim:
        return None, f"dimension changed ({manifest.get('dim')} -> {dim})"
    if not list(path.glob("*.parquet")) or not manifest.get("row_count"):
        return None, "previous table has no rows"
    return path, f"previous table of {manifest.get('row_count')} rows"


def previous_rows(path: Path) -> int:
    return int(json.loads((path / MANIFEST).read_text()).get("row_count", 0))
