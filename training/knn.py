"""Item-item kNN graphs from feature tables, built in chunks of rows.

Memory follows ``chunk_size x n_items`` (one block of similarities), never items².
"""

from __future__ import annotations

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
