"""Sparse graph helpers: normalised user-item and item-item adjacencies, propagation.

Every graph is a torch sparse tensor (CSR for the constant ones, COO where the values
carry gradients); nothing here builds a dense nodes x nodes matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def sym_norm_values(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Values 1/sqrt(deg_row * deg_col) of a binary bipartite matrix's edges."""
    deg_r = np.bincount(rows, minlength=n_rows).astype(np.float64)
    deg_c = np.bincount(cols, minlength=n_cols).astype(np.float64)
    return (1.0 / np.sqrt(deg_r[rows] * deg_c[cols] + 1e-12)).astype(np.float32)


def _square(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> torch.Tensor:
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    t = torch.sparse_coo_tensor(
        idx, torch.from_numpy(vals.astype(np.float32)), (n, n), check_invariants=False
    )
    return t.coalesce().to_sparse_csr()


def bipartite_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the (users+items) square graph with A = [[0, R], [R^T, 0]] (LightGCN)."""
    vals = sym_norm_values(users, items, n_users, n_items)
    r = np.concatenate([users, items + n_users])
    c = np.concatenate([items + n_users, users])
    return _square(r, c, np.concatenate([vals, vals]), n_users + n_items)


def bipartite_row_norm_self_loops(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """D^-1 (A + I) of the (users+items) graph: LATTICE's user-item graph (row-normalised,
    not symmetric, so propagation needs its transpose for the backward pass)."""
    n = n_users + n_items
    loops = np.arange(n, dtype=np.int64)
    r = np.concatenate([users, items + n_users, loops])
    c = np.concatenate([items + n_users, users, loops])
    deg = np.bincount(r, minlength=n).astype(np.float64)
    return _square(r, c, (1.0 / deg[r]).astype(np.float32), n)


def knn_adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> torch.Tensor:
    """Binary kNN edges, normalised as FREEDOM does: value 1/sqrt(deg(row) deg(col)) with
    deg the *row* (out-)degree of each node, i.e. 1/k for a k-per-row graph."""
    deg = np.bincount(rows, minlength=n).astype(np.float64) + 1e-7
    inv = 1.0 / np.sqrt(deg)
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n), check_invariants=False).coalesce()


def weighted_sym_norm(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    """Values of D^-1/2 W D^-1/2 for weighted edges, D the row sums of W (LATTICE's
    ``compute_normalized_laplacian`` without the dense matrix; differentiable in ``vals``)."""
    deg = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add(0, rows, vals)
    inv = deg.pow(-0.5)
    inv = torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)
    return vals * inv[rows] * inv[cols]


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


def propagate_mean(
    adj: torch.Tensor, ego: torch.Tensor, n_layers: int, adj_t: torch.Tensor | None = None
) -> torch.Tensor:
    """LightGCN: mean of ego and its 1..n_layers hop propagations (``adj_t`` for a
    non-symmetric ``adj``)."""
    out = ego
    acc = ego
    for _ in range(n_layers):
        out = spmm(adj, out, adj_t)
        acc = acc + out
    return acc / (n_layers + 1)
