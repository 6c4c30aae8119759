"""FREEDOM: a frozen item-item kNN graph from features + a denoised (pruned) user-item graph.

Mechanics as in the FREEDOM paper and its reference code: per-feature kNN graphs (binary, D^-1/2 A D^-1/2)
combined by weight and frozen; LightGCN over the user-item graph whose edges are
re-sampled each epoch with probability ~ 1/sqrt(deg_u deg_i); item = LightGCN item
output + id embeddings propagated over the item-item graph; loss = BPR + reg_weight x
BPR of users against projected features; ``matryoshka`` averages both BPR terms over
prefix sizes (every part is linear per embedding column, so a prefix is a smaller FREEDOM).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import TrainData
from training.models.base import Recommender, project_rows, register, touches_most
from training.sparse import spmm, sym_norm_values


def prune_edges(
    users: np.ndarray, items: np.ndarray, weights: np.ndarray, keep: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``keep`` edges sampled without replacement with probability ~ ``weights``
    (Efraimidis-Spirakis keys u^(1/w): vectorised, no category limit)."""
    keys = np.log(rng.random(len(weights))) / weights
    return np.argpartition(-keys, keep - 1)[:keep] if keep < len(weights) else np.arange(len(weights))


@register("freedom")
class FREEDOM(Recommender):
    defaults = {
        "embedding_dim": 64,
        "n_layers": 2,
        "n_mm_layers": 1,
        "dropout": 0.8,
        "reg_weight": 1e-4,
        "knn_k": 10,
        "feature_weights": None,  # {feature name: weight}; default: equal
        "train_features": True,  # fine-tune the raw feature tables (as the reference does)
        "knn_chunk_size": 1024,  # rows per block when the kNN graph is built here
        "matryoshka": [],  # prefix sizes, e.g. [8, 16, 32, 64]: both BPR terms averaged over them
        "matryoshka_rescale": True,  # each prefix's scores x dim / d in its BPR term
    }
    needs_features = True

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = self.add_id_embeddings(nn.init.xavier_uniform_)
        self.init_matryoshka(d)
        self.feature_names = [f.name for f in self.features]
        self.feats = self.feature_parameters(bool(self.hp["train_features"]))
        self.proj = nn.ModuleList(nn.Linear(f.dim, d) for f in self.features)
        self.mm_adj, self.mm_adj_t = self.item_knn_graph(data)
        # User-item edges and their degree-sensitive sampling weights (full graph).
        self.ui_users, self.ui_items = data.train.users, data.train.items
        self.edge_weights = sym_norm_values(self.ui_users, self.ui_items, self.n_users, self.n_items)
        self.full_adj = self._ui_adj(np.arange(len(self.ui_users)))
        self.adj = self.full_adj

    def _ui_adj(self, keep: np.ndarray) -> torch.Tensor:
        u, i = self.ui_users[keep], self.ui_items[keep]
        vals = sym_norm_values(u, i, self.n_users, self.n_items)
        r = np.concatenate([u, i + self.n_users])
        c = np.concatenate([i + self.n_users, u])
        n = self.n_users + self.n_items
        idx = torch.from_numpy(np.stack([r, c]))
        v = torch.from_numpy(np.concatenate([vals, vals]))
        return torch.sparse_coo_tensor(idx, v, (n, n), check_invariants=False).coalesce().to_sparse_csr()

    def pre_epoch(self, rng: np.random.Generator) -> None:
        dropout = float(self.hp["dropout"])
        if dropout <= 0:
            self.adj = self.full_adj
            return
        keep = int(len(self.edge_weights) * (1.0 - dropout))
        self.adj = self._ui_adj(prune_edges(self.ui_users, self.ui_items, self.edge_weights, keep, rng))

    def propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item_emb.weight
        for _ in range(int(self.hp["n_mm_layers"])):
            h = spmm(self.mm_adj, h, self.mm_adj_t)
        u, i = self.split(self.propagate_ids(adj, int(self.hp["n_layers"])))
        return u, i + h

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u_all, i_all = self.propagate(self.adj)
        b = len(pos)
        pn = torch.cat([pos, neg])
        # index_select: one gather per table (its backward, index_add, beats indexing's).
        u = u_all.index_select(0, users)
        items = i_all.index_select(0, pn)
        loss = self.ranking_loss(u, items[:b], items[b:])
        side = 0.0
        whole = touches_most(pos, neg, self.n_items)
        for feat, proj in zip(self.feats, self.proj, strict=True):
            fp, fn = project_rows(feat, proj, pos, neg, whole)  # a prefix = the projection's first rows
            side = side + self.ranking_loss(u, fp, fn)
        return loss + self.hp["reg_weight"] * side

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.full_adj)
