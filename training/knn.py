"""Item-item kNN graphs from feature tables, built in chunks of rows.

Memory follows ``chunk_size x n_items`` (one block of similarities), never items².
``knn_chunked`` is the torch block search (training-time graphs, tensors on any device);
``knn_graph`` is the graph stage's faiss search: exact flat inner product, or an IVF/HNSW
index past a size, with its recall against exact search measured on a sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def topk_neighbours(
    x: torch.Tensor, k: int, *, chunk_size: int = 1024, self_loops: bool = True, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of ``x @ x.T`` per row, one ``chunk_size x n`` block at a time:
    (indices, values), each ``(n, k)`` sorted by value. ``x`` is used as given (normalise
    it first for cosine); without ``self_loops`` the diagonal is excluded."""
    n = x.shape[0]
    k_eff = min(k, n if self_loops else n - 1)
    cols = torch.empty((n, k_eff), dtype=torch.int64, device=x.device)
    sims = torch.empty((n, k_eff), dtype=x.dtype, device=x.device)
    for start in tqdm(range(0, n, chunk_size), desc="kNN", disable=not progress, unit="chunk"):
        stop = min(start + chunk_size, n)
        block = x[start:stop] @ x.T
        if not self_loops:
            diag = torch.arange(start, stop, device=x.device)
            block[diag - start, diag] = -float("inf")
        val, ind = torch.topk(block, k_eff, dim=1)
        cols[start:stop] = ind
        sims[start:stop] = val
        del block
    return cols, sims


def knn_chunked(
    features: np.ndarray, k: int, *, chunk_size: int = 1024, self_loops: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of every row: (rows, cols, sims), k per row, sorted by rank.

    With ``self_loops`` the item itself competes for a slot (as FREEDOM's reference
    does); without, the diagonal is excluded.
    """
    n = features.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(features, np.float32)), dim=1)
    cols, sims = topk_neighbours(x, k, chunk_size=chunk_size, self_loops=self_loops, progress=progress)
    rows = np.repeat(np.arange(n, dtype=np.int64), cols.shape[1])
    return rows, cols.numpy().reshape(-1), sims.numpy().reshape(-1)


# ------------------------------------------------------------------------- faiss (graph stage)

METHODS = ("auto", "exact", "ivf", "hnsw")


@dataclass(frozen=True)
class KnnIndex:
    """How ``knn_graph`` searches: ``exact`` (flat inner product, query chunk by chunk), ``ivf``
    (inverted lists over k-means cells) or ``hnsw`` (graph); ``auto`` picks exact up to
    ``exact_max_items`` rows, else ``hnsw`` (at 100k x 384 it reached recall@10 0.997 in the
    time IVF with 128 probes reached 0.925: benchmarks/knn_memory.py). Zero values mean
    "derive from the size"."""

    method: str = "auto"
    exact_max_items: int = 250_000
    nlist: int = 0  # ivf cells; 0: 4 * sqrt(n), at most n / 39 (faiss wants >= 39 points per cell)
    nprobe: int = 32  # ivf cells visited per query
    train_size: int = 0  # ivf k-means training rows; 0: min(n, 64 * nlist)
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    recall_sample: int = 1000  # query rows whose approximate neighbours are checked against exact search
    threads: int = 0  # faiss OpenMP threads; 0: faiss's default (all cores)
    seed: int = 0

    def resolved(self, n: int) -> str:
        if self.method not in METHODS:
            raise ValueError(f"graph.method: expected one of {METHODS}, got {self.method!r}")
        if self.method == "auto":
            return "exact" if n <= self.exact_max_items else "hnsw"
        return self.method

    def cells(self, n: int) -> int:
        return max(1, self.nlist or min(int(4 * np.sqrt(n)), n // 39))


def unit_rows(features: np.ndarray, chunk_size: int = 65536) -> np.ndarray:
    """float32 C-contiguous rows of unit norm (zero rows stay zero). Already-normalised input is
    returned as is, not copied: at 1M x 384 a copy is another 1.5 GB."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    ok = True
    for s in range(0, len(x), chunk_size):
        n = np.linalg.norm(x[s : s + chunk_size], axis=1)
        if not np.all((np.abs(n - 1) < 1e-4) | (n == 0)):
            ok = False
            break
    if ok:
        return x
    out = np.empty_like(x)
    for s in range(0, len(x), chunk_size):
        block = x[s : s + chunk_size]
        n = np.linalg.norm(block, axis=1, keepdims=True)
        out[s : s + chunk_size] = block / np.maximum(n, 1e-12)
    return out


def build_index(x: np.ndarray, spec: KnnIndex, method: str) -> Any:
    """A faiss inner-product index over the unit rows ``x`` (trained and filled)."""
    import faiss

    n, d = x.shape
    if method == "exact":
        index = faiss.IndexFlatIP(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    elif method == "ivf":
        nlist = spec.cells(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        size = min(n, spec.train_size or 64 * nlist)
        rows = np.sort(np.random.default_rng(spec.seed).choice(n, size=size, replace=False))
        index.cp.seed = spec.seed
        index.train(x[rows])
        index.nprobe = min(spec.nprobe, nlist)
    else:
        raise ValueError(f"graph.method: expected one of {METHODS}, got {method!r}")
    for s in range(0, n, 65536):
        index.add(x[s : s + 65536])
    return index


def search(
    index: Any,
    x: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    chunk_size: int = 1024,
    self_loops: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``x[rows]`` (all rows by default) in ``index``: (indices, similarities), each
    ``(len(rows), k)`` sorted by similarity, one ``chunk_size`` block of queries at a time."""
    n = len(x)
    k_eff = min(k, n if self_loops else n - 1)
    rows = np.arange(n) if rows is None else rows
    cols = np.empty((len(rows), k_eff), dtype=np.int64)
    sims = np.empty((len(rows), k_eff), dtype=np.float32)
    extra = 0 if self_loops else 1
    for s in tqdm(range(0, len(rows), chunk_size), desc="kNN", disable=not progress, unit="chunk"):
        q = rows[s : s + chunk_size]
        val, ind = index.search(x[q], k_eff + extra)
        if not self_loops:
            me = q[:, None]
            keep = ind != me
            keep[keep.sum(1) > k_eff, -1] = False
            ind, val = ind[keep].reshape(-1, k_eff), val[keep].reshape(-1, k_eff)
        cols[s : s + len(q)], sims[s : s + len(q)] = ind, val
    return cols, sims


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-k found in its approximate top-k."""
    if not len(exact):
        return 1.0
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.sum(hits) / exact.size)


def knn_graph(
    features: np.ndarray,
    k: int,
    *,
    spec: KnnIndex | None = None,
    chunk_size: int = 1024,
    self_loops: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-k cosine neighbours of every row with faiss: (rows, cols, sims, info), k per row
    sorted by rank, as ``knn_chunked``. ``info`` names the index and, for an approximate one,
    its recall@k against exact search on ``spec.recall_sample`` seeded query rows."""
    import faiss

    spec = spec or KnnIndex()
    n = features.shape[0]
    method = spec.resolved(n)
    info: dict[str, Any] = {"method": method, "requested": spec.method}
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32), info
    threads_before = faiss.omp_get_max_threads()
    if spec.threads:
        faiss.omp_set_num_threads(spec.threads)
    try:
        x = unit_rows(features)
        t0 = time.time()
        index = build_index(x, spec, method)
        info["build_seconds"] = round(time.time() - t0, 2)
        if method == "ivf":
            info |= {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
        elif method == "hnsw":
            info |= {
                "hnsw_m": spec.hnsw_m,
                "ef_construction": spec.ef_construction,
                "ef_search": spec.ef_search,
            }
        t0 = time.time()
        cols, sims = search(index, x, k, chunk_size=chunk_size, self_loops=self_loops, progress=progress)
        info["search_seconds"] = round(time.time() - t0, 2)
        if method != "exact":
            del index
            m = min(n, spec.recall_sample)
            sample = np.sort(np.random.default_rng(spec.seed).choice(n, size=m, replace=False))
            flat = build_index(x, spec, "exact")
            truth, _ = search(flat, x, k, rows=sample, chunk_size=chunk_size, self_loops=self_loops)
            info |= {
                "recall_sample": m,
                f"recall_at_{cols.shape[1]}": round(recall_at_k(cols[sample], truth), 4),
            }
    finally:
        faiss.omp_set_num_threads(threads_before)
    rows = np.repeat(np.arange(n, dtype=np.int64), cols.shape[1])
    return rows, cols.reshape(-1), sims.reshape(-1), info
