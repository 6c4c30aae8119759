"""Sparse graph helpers: normalised user-item and item-item adjacencies, propagation."""

from __future__ import annotations

import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def sym_norm_values(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Values 1/sqrt(deg_row * deg_col) of a binary bipartite matrix's edges."""
    deg_r = np.bincount(rows, minlength=n_rows).astype(np.float64)
    deg_c = np.bincount(cols, minlength=n_cols).astype(np.float64)
    return (1.0 / np.sqrt(deg_r[rows] * deg_c[cols] + 1e-12)).astype(np.float32)


def bipartite_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the (users+items) square graph with A = [[0, R], [R^T, 0]]."""
    vals = sym_norm_values(users, items, n_users, n_items)
    r = np.concatenate([users, items + n_users])
    c = np.concatenate([items + n_users, users])
    v = np.concatenate([vals, vals])
    n = n_users + n_items
    idx = torch.from_numpy(np.stack([r, c]).astype(np.int64))
    return (
        torch.sparse_coo_tensor(idx, torch.from_numpy(v), (n, n), check_invariants=False)
        .coalesce()
        .to_sparse_csr()
    )


def knn_adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> torch.Tensor:
    """Binary kNN edges, symmetric-normalised by row degree as in FREEDOM: D^-1/2 A D^-1/2."""
    deg = np.bincount(rows, minlength=n).astype(np.float64) + 1e-7
    inv = 1.0 / np.sqrt(deg)
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n), check_invariants=False).coalesce()


def to_csr(t: torch.Tensor) -> torch.Tensor:
    return t.coalesce().to_sparse_csr() if t.layout == torch.sparse_coo else t


class _SpMM(torch.autograd.Function):
    """``adj @ x`` whose backward uses a precomputed ``adj.T`` (no per-step transpose)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:  # type: ignore[override]
        return None, None, ctx.adj_t @ grad


def spmm(adj: torch.Tensor, x: torch.Tensor, adj_t: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse (constant) times dense; ``adj_t`` defaults to ``adj`` (symmetric graphs)."""
    return _SpMM.apply(adj, adj if adj_t is None else adj_t, x)


def transpose_csr(adj: torch.Tensor) -> torch.Tensor:
    return adj.to_sparse_coo().t().coalesce().to_sparse_csr()


def propagate_mean(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: mean of ego and its 1..n_layers hop propagations (``adj`` symmetric)."""
    out = ego
    acc = ego
    for _ in range(n_layers):
        out = spmm(adj, out)
        acc = acc + out
    return acc / (n_layers + 1)
