"""Reading a feature table back as a numpy matrix aligned to the dense item index.

Downstream code usually wants ``matrix[item_idx]``; this reads only ``item_idx`` and
``embedding``, batch by batch into one preallocated matrix (no second copy of the table),
and checks the table against its manifest on the way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.store import MANIFEST, StoreError, arrow_to_embeddings, read_manifest

# The history of ``<store>/<table>`` is the Delta table ``<store>/history/<table>``.
HISTORY_ROOT = "history"


@dataclass(frozen=True)
class Features:
    """One feature table as arrays: row ``i`` of ``matrix`` is item ``i`` (zeros where not ``present``)."""

    name: str
    matrix: np.ndarray
    present: np.ndarray
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def normalized(self) -> bool:
        return bool(self.manifest.get("normalized"))


def load_features(path: Path | str, *, n_items: int, batch_rows: int = 65536) -> Features:
    """The feature table at ``path`` as a (n_items, dim) float32 matrix plus a presence mask.

    The one embedding reader (training, graph, validation, benchmarks). Raises
    ``StoreError`` naming the table when it is missing, unpublished, or disagrees with
    its manifest.
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise StoreError(f"feature table {path}: not published (no {MANIFEST}); run the extract stage")
    manifest = read_manifest(path)
    name = str(manifest.get("table", path.name))
    if "dim" not in manifest:
        raise StoreError(f"table {path}: manifest has no 'dim'; expected a feature table's manifest")
    dim = int(manifest["dim"])
    matrix = np.zeros((n_items, dim), dtype=np.float32)
    present = np.zeros(n_items, dtype=bool)
    rows = 0
    for f in sorted(path.glob("*.parquet")):
        for rb in pq.ParquetFile(f).iter_batches(columns=["item_idx", "embedding"], batch_size=batch_rows):
            idx = rb.column(0).to_numpy()
            emb = arrow_to_embeddings(rb.column(1))
            if emb.shape[1] != dim:
                raise StoreError(f"table {path}: embedding width {emb.shape[1]}, manifest says dim {dim}")
            if len(idx) and (idx.min() < 0 or idx.max() >= n_items):
                raise StoreError(f"table {path} ({f.name}): item_idx outside [0, {n_items})")
            if present[idx].any() or len(np.unique(idx)) != len(idx):
                raise StoreError(f"table {path} ({f.name}): an item_idx appears more than once")
            matrix[idx], present[idx] = emb, True
            rows += len(idx)
    if rows != manifest["row_count"]:
        raise StoreError(f"table {path}: {rows} rows on disk, manifest says {manifest['row_count']}")
    return Features(name, matrix, present, manifest)


def as_of(
    store: Path | str,
    table: str,
    snapshot: str | None = None,
    *,
    timestamp: dt.datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Table ``table`` (e.g. ``features/text_minilm``) of ``store`` as of a snapshot id or time.

    Reads its Delta history (``<store>/history/<table>``); the default is the latest snapshot.
    The result has the latest view's schema (``fixed_size_list`` embeddings). Raises
    ``HistoryError`` naming the table and the snapshots available when none matches.
    """
    from features.history import read_as_of

    return read_as_of(Path(store) / HISTORY_ROOT / table, snapshot, timestamp, columns)
