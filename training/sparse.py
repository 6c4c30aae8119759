"""Sparse graph helpers: normalised user-item and item-item adjacencies, propagation."""

from __future__ import annotations

import numpy as np
import torch


def sym_norm_values(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Values 1/sqrt(deg_row * deg_col) of a binary bipartite matrix's edges."""
    deg_r = np.bincount(rows, minlength=n_rows).astype(np.float64)
    deg_c = np.bincount(cols, minlength=n_cols).astype(np.float64)
    return (1.0 / np.sqrt(deg_r[rows] * deg_c[cols] + 1e-12)).astype(np.float32)


def bipartite_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the (users+items) square graph with A = [[0, R], [R^T, 0]]."""
    vals = sym_norm_values(users, items, n_users, n_items)
    r = np.concatenate([users, items + n_users])
    c = np.concatenate([items + n_users, users])
    v = np.concatenate([vals, vals])
    n = n_users + n_items
    idx = torch.from_numpy(np.stack([r, c]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(v), (n, n)).coalesce().to_sparse_csr()


def knn_adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> torch.Tensor:
    """Binary kNN edges, symmetric-normalised by row degree as in FREEDOM: D^-1/2 A D^-1/2."""
    deg = np.bincount(rows, minlength=n).astype(np.float64) + 1e-7
    inv = 1.0 / np.sqrt(deg)
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n)).coalesce()


def to_csr(t: torch.Tensor) -> torch.Tensor:
    return t.coalesce().to_sparse_csr() if t.layout == torch.sparse_coo else t


def propagate_mean(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: mean of ego and its 1..n_layers hop propagations."""
    out = ego
    acc = ego
    for _ in range(n_layers):
        out = torch.sparse.mm(adj, out)
        acc = acc + out
    return acc / (n_layers + 1)
