"""The feature cache: the previous published table of a feature, and publishing over it.

A feature table's rows are keyed by (cache key, content hash of the item's input). The
cache key names the encoder (model, weights, preprocessing) and the input-decoding
version; when the previous table's manifest carries the same key and dimension, its rows
for unchanged items are reused bit for bit. Publishing moves the replaced table to
``<features>/_previous/<name>`` (one generation kept) so drift checks can compare snapshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from features.inputs import INPUT_VERSION
from features.store import MANIFEST

PREVIOUS_DIR = "_previous"


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


@contextlib.contextmanager
def publish_keeping_previous(path: Path, *, keep_previous: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` by renames, and the replaced
    table becomes ``path.parent/_previous/<name>`` (the one before it is deleted).

    On error the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trash = []
    prev = path.parent / PREVIOUS_DIR / path.name
    if path.exists():
        if keep_previous:
            prev.parent.mkdir(exist_ok=True)
            if prev.exists():
                trash.append(prev.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(prev, trash[-1])
            os.rename(path, prev)
        else:
            trash.append(path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash[-1])
    os.rename(tmp, path)
    for t in trash:
        shutil.rmtree(t, ignore_errors=True)


def previous_manifest(path: Path) -> dict[str, Any] | None:
    """Manifest of the kept previous generation of the table at ``path`` (None when there is none)."""
    m = path.parent / PREVIOUS_DIR / path.name / MANIFEST
    return json.loads(m.read_text()) if m.is_file() else None
