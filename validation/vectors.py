"""Feature tables loaded once for validation, and scalar summaries of their vectors.

GX sees one row per vector; these functions turn an (n, d) matrix into per-row scalars
(norm, non-finite count, exact-duplicate flag) and seeded samples of pair cosines
without building anything n x n. The same loaded table serves the feature suite and
drift, so a 100k x 384 table is read and decoded once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.store import StoreError, arrow_to_embeddings, read_manifest, read_table

FEATURE_COLUMNS = ("item_idx", "item_id", "embedding", "content_hash")
CHUNK = 16384  # rows per chunk where a gathered copy of the matrix would be made


@dataclass
class FeatureVectors:
    """One feature table as validation needs it: every row, in file order."""

    path: Path
    manifest: dict[str, Any]
    item_idx: np.ndarray
    item_id: pd.Series
    content_hash: pd.Series
    emb: np.ndarray
    nonfinite: np.ndarray  # non-finite entries per row
    norms: np.ndarray  # L2 norm with non-finite entries counted as 0

    def __len__(self) -> int:
        return len(self.emb)

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])


def load_vectors(path: Path) -> FeatureVectors:
    """A feature table row by row (ids, content hashes, embeddings), as written.

    Unlike ``features.reader.load_features`` (a matrix aligned to the item index, which
    rejects duplicate or out-of-range ``item_idx``) this keeps every row, so the feature
    suite can report such rows as failures. Reading, the manifest and row-count checks
    and the embedding decoding are ``features.store``'s.
    """
    path = Path(path)
    manifest = read_manifest(path)
    try:
        table = read_table(path, columns=list(FEATURE_COLUMNS))
    except (KeyError, pa.ArrowInvalid) as e:
        raise StoreError(f"feature table {path}: expected columns {list(FEATURE_COLUMNS)}: {e}") from e
    column = table.column("embedding")
    if column.null_count:
        raise StoreError(f"feature table {path}: column 'embedding' has {column.null_count} null rows")
    emb = arrow_to_embeddings(column)
    nonfinite, norms = row_stats(emb)
    return FeatureVectors(
        path=path,
        manifest=manifest,
        item_idx=table.column("item_idx").to_numpy(),
        item_id=table.column("item_id").to_pandas(),
        content_hash=table.column("content_hash").to_pandas(),
        emb=emb,
        nonfinite=nonfinite,
        norms=norms,
    )


def row_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(non-finite entries per row, L2 norm with those entries as 0), no (n, d) temporaries.

    A row's sum of squares is finite iff all its entries are finite (barring float32
    overflow above ~1e19, which is rechecked exactly), so only suspect rows are scanned.
    """
    n = len(emb)
    sq = np.einsum("ij,ij->i", emb, emb) if n else np.zeros(0, np.float32)
    nonfinite = np.zeros(n, np.int64)
    bad = np.flatnonzero(~np.isfinite(sq))
    if len(bad):
        sub = emb[bad]
        finite = np.isfinite(sub)
        nonfinite[bad] = (~finite).sum(1)
        sub = np.where(finite, sub, np.float32(0)).astype(np.float64)
        sq[bad] = np.einsum("ij,ij->i", sub, sub)
    return nonfinite, np.sqrt(sq)


def _safe(fv: FeatureVectors, rows: np.ndarray) -> np.ndarray:
    sub = fv.emb[rows]
    return np.where(np.isfinite(sub), sub, np.float32(0)) if fv.nonfinite[rows].any() else sub


def cosines(
    a: FeatureVectors, rows_a: np.ndarray, b: FeatureVectors, rows_b: np.ndarray, chunk: int = CHUNK
) -> np.ndarray:
    """cos(a[rows_a[i]], b[rows_b[i]]) for each i, in chunks (non-finite entries as 0)."""
    out = np.empty(len(rows_a), np.float64)
    for s in range(0, len(rows_a), chunk):
        ra, rb = rows_a[s : s + chunk], rows_b[s : s + chunk]
        dots = np.einsum("ij,ij->i", _safe(a, ra), _safe(b, rb))
        out[s : s + chunk] = dots / np.maximum(a.norms[ra] * b.norms[rb], 1e-12)
    return out


def duplicate_flags(emb: np.ndarray) -> np.ndarray:
    """True for every row whose bytes equal another row's (128-bit digest per row).

    A digest per row is ~4x faster than ``np.unique`` over void views at 100k x 384 and
    needs no sort of 1.5 kB keys.
    """
    if len(emb) < 2:
        return np.zeros(len(emb), bool)
    emb = np.ascontiguousarray(emb)
    digests = np.array([hashlib.blake2b(r, digest_size=16).digest() for r in emb], dtype="S16")
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def sample_pairs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``min(n, size)`` seeded pairs (i, j) with i != j and distinct i."""
    if n < 2 or size <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(n, size), replace=False)
    other = (rows + rng.integers(1, n, len(rows))) % n
    return rows, other


def wasserstein(a: np.ndarray, b: np.ndarray, points: int = 1001) -> float:
    """1-D earth mover's distance between two samples, on a quantile grid.

    It is in the units of the values (cosine, norm), so a threshold reads directly as
    "the distribution moved by this much on average".
    """
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    q = np.linspace(0, 1, points)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))
