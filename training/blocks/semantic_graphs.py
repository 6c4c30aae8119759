"""Frozen graphs of the multimodal models, all sparse (torch CSR plus its transpose).

- ``mixed_knn_graph``: FREEDOM's item-item graph (binary top-k per feature, 1/k values,
  weighted sum over features), shared by FREEDOM, CM3 and LIRDRec;
- ``similarity_knn_graph``: MGCN's per-modality graph (top-k edges weighted by cosine,
  D^-1/2 W D^-1/2 with D the row sums), used by the modality-alignment model and SIGE;
- ``cooccurrence_knn_graph``: SIGE's collaborative item graph, top-k items by number of
  shared training users, built in row chunks (never items x items);
- ``user_item_block``: the users x items block of the normalised bipartite graph, which
  averages item vectors into user vectors (MGCN's ``R``); ``item_graph_view`` uses it
  for MGCN's per-modality semantic view;
- ``user_item_adjacency``: LightGCN's normalised (users + items) square graph.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.blocks.item_graph import knn_edges
from training.data import TrainData
from training.knn import knn_chunked
from training.sparse import bipartite_adjacency, knn_adjacency, spmm, sym_norm_values, transpose_csr

Graph = tuple[torch.Tensor, torch.Tensor]  # (adjacency, its transpose), both CSR


def csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    t = torch.sparse_coo_tensor(idx, torch.from_numpy(vals.astype(np.float32)), shape, check_invariants=False)
    return t.coalesce().to_sparse_csr()


def with_transpose(adj: torch.Tensor) -> Graph:
    adj = adj.coalesce().to_sparse_csr() if adj.layout == torch.sparse_coo else adj
    return adj, transpose_csr(adj)


def mixed_knn_graph(
    data: TrainData, names: list[str], weights: dict[str, float], k: int, chunk: int
) -> Graph:
    """sum_m w_m * (binary top-k cosine graph of feature m, values 1/sqrt(deg_r deg_c))."""
    total = None
    for n in names:
        rows, cols = knn_edges(data, n, k, chunk)
        adj = knn_adjacency(rows, cols, data.n_items) * weights[n]
        total = adj if total is None else total + adj
    assert total is not None
    return with_transpose(total)


def similarity_values(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, n: int) -> np.ndarray:
    """w_rc / sqrt(d_r d_c) with d the weighted row sums (0 where a degree is not positive)."""
    deg = np.bincount(rows, weights=sims.astype(np.float64), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(deg > 0, deg**-0.5, 0.0)
    return (sims * inv[rows] * inv[cols]).astype(np.float32)


def similarity_knn_graph(features: np.ndarray, k: int, chunk: int) -> Graph:
    """Top-k cosine neighbours (the item itself included), cosine-weighted, sym-normalised."""
    n = features.shape[0]
    rows, cols, sims = knn_chunked(features, k, chunk_size=chunk, self_loops=True)
    return with_transpose(csr(rows, cols, similarity_values(rows, cols, sims, n), (n, n)))


def cooccurrence_topk(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, counts): for every item its (up to) k items with the most shared
    training users, itself excluded, ties broken by the lower item index. Items with no
    co-occurring item get no edge. One ``chunk x n_items`` sparse block at a time."""
    r = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items)
    )  # duplicates summed; binarised below
    r.data[:] = 1.0
    rt = r.T.tocsr()
    out_r, out_c, out_v = [], [], []
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        block = (rt[start:stop] @ r).tocsr()  # (chunk, n_items) co-occurrence counts
        for local in range(stop - start):
            lo, hi = block.indptr[local], block.indptr[local + 1]
            cols, vals = block.indices[lo:hi], block.data[lo:hi]
            keep = (cols != start + local) & (vals > 0)
            cols, vals = cols[keep], vals[keep]
            if len(cols) == 0:
                continue
            order = np.lexsort((cols, -vals))[:k]
            out_r.append(np.full(len(order), start + local, np.int64))
            out_c.append(cols[order].astype(np.int64))
            out_v.append(vals[order].astype(np.float32))
    if not out_r:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)


def cooccurrence_knn_graph(data: TrainData, k: int, chunk: int) -> torch.Tensor:
    """SIGE's collaborative item graph: binary top-k co-occurrence edges normalised as
    the feature kNN graphs are (1/sqrt(deg_r deg_c), row out-degrees), as sparse COO."""
    rows, cols, _ = cooccurrence_topk(
        data.train.users, data.train.items, data.n_users, data.n_items, k, chunk
    )
    return knn_adjacency(rows, cols, data.n_items)


def user_item_adjacency(data: TrainData) -> torch.Tensor:
    """LightGCN's D^-1/2 A D^-1/2 of the training user-item graph (users then items)."""
    return bipartite_adjacency(data.train.users, data.train.items, data.n_users, data.n_items)


def item_graph_view(
    h: torch.Tensor,
    graph: Graph,
    n_hops: int,
    r: Graph,
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """MGCN's semantic view: item vectors ``h`` propagated ``n_hops`` over an item graph
    (``noise(h)`` added after every hop when given), under the users' average of them
    through the user-item block ``r``: ``(n_users + n_items, d)``."""
    adj, adj_t = graph
    for _ in range(n_hops):
        h = spmm(adj, h, adj_t)
        if noise is not None:
            h = h + noise(h)
    return torch.cat([spmm(r[0], h, r[1]), h])


def user_item_block(data: TrainData) -> Graph:
    """R with values 1/sqrt(deg_u deg_i) (users x items) and its transpose."""
    u, i = data.train.users, data.train.items
    vals = sym_norm_values(u, i, data.n_users, data.n_items)
    return with_transpose(csr(u, i, vals, (data.n_users, data.n_items)))


class ConstTensors(nn.Module):
    """Constant tensors (feature tables, graphs) held as plain attributes of a submodule:
    ``training.loop.move_to_device`` moves them with the model, they stay out of the
    state dict, and DDP never broadcasts them. Indexable like a list."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.size = len(tensors)
        for i, t in enumerate(tensors):
            setattr(self, f"t{i}", t)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        return getattr(self, f"t{i}")

    def __iter__(self):  # type: ignore[override]
        return (self[i] for i in range(self.size))

    def pairs(self) -> list[Graph]:
        """Consecutive (adjacency, transpose) pairs."""
        return [(self[i], self[i + 1]) for i in range(0, self.size, 2)]
