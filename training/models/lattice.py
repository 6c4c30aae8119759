"""LATTICE: a learned item-item graph (kept sparse top-k) mixed with the frozen feature graph.

Mechanics of MMRec's ``LATTICE`` (cf_model lightgcn), without its dense items x items
matrices:

- per feature, a frozen top-k cosine graph of the raw features, weighted by similarity,
  normalised D^-1/2 W D^-1/2 (D = row sums of W);
- each epoch, a learned top-k graph of the *projected* (trainable) features per feature,
  mixed by softmax(modal_weight), normalised the same way;
  item_adj = (1 - lambda) learned + lambda sum_m softmax(w)_m frozen_m;
- the graph is rebuilt with gradient on the first batch of each epoch and used detached
  for the epoch's other batches (as the reference does); evaluation rebuilds it;
- items = LightGCN(D^-1 (A + I), layer mean) item output + L2-normalised (item id
  embeddings propagated n_layers times over item_adj);
- loss = BPR (logsigmoid) + reg_weight x 0.5 (|u|^2 + |i+|^2 + |i-|^2) / batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.blocks.item_graph import cosine_edge_values, knn_edges, learned_knn_edges
from training.data import TrainData
from training.models.base import Recommender, bpr_loss, half_sq_reg, register
from training.sparse import (
    bipartite_row_norm_self_loops,
    spmm,
    transpose_csr,
    weighted_sym_norm,
)


@register("lattice")
class LATTICE(Recommender):
    defaults = {
        "embedding_dim": 64,
        "feat_embed_dim": 64,
        "knn_k": 10,
        "lambda_coeff": 0.9,
        "n_layers": 1,  # hops over the item-item graph
        "n_ui_layers": 2,  # LightGCN layers over the user-item graph
        "reg_weight": 1e-4,
        "knn_chunk_size": 1024,
    }
    needs_features = True

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        k = int(self.hp["knn_k"])
        self.add_id_embeddings(nn.init.xavier_uniform_)
        # Feature tables are trainable (``from_pretrained(freeze=False)`` in the reference).
        self.feats = self.feature_parameters()
        self.trs = nn.ModuleList(nn.Linear(f.dim, int(self.hp["feat_embed_dim"])) for f in self.features)
        m = len(self.features)
        self.modal_weight = nn.Parameter(torch.full((m,), 1.0 / m))
        # Frozen per-feature graphs as one edge list (plain tensors, moved with the model):
        # normalised values, and which feature each edge belongs to (for modal_weight).
        rows, cols, vals, which = [], [], [], []
        for i, (f, table) in enumerate(zip(self.features, self.feats, strict=True)):
            r, c = knn_edges(data, f.name, k, int(self.hp["knn_chunk_size"]))
            r_t, c_t = torch.from_numpy(r), torch.from_numpy(c)
            with torch.no_grad():
                v = weighted_sym_norm(r_t, c_t, cosine_edge_values(table, r_t, c_t), self.n_items)
            rows.append(r_t)
            cols.append(c_t)
            vals.append(v)
            which.append(torch.full_like(r_t, i))
        self.frozen_rows, self.frozen_cols = torch.cat(rows), torch.cat(cols)
        self.frozen_vals, self.frozen_feature = torch.cat(vals), torch.cat(which)
        self.ui_adj = bipartite_row_norm_self_loops(
            data.train.users, data.train.items, self.n_users, self.n_items
        )
        self.ui_adj_t = transpose_csr(self.ui_adj)
        self._rebuild = True
        self._item_adj: torch.Tensor | None = None
        self._item_adj_t: torch.Tensor | None = None

    def pre_epoch(self, rng: np.random.Generator) -> None:
        self._rebuild = True

    def item_graph(self) -> torch.Tensor:
        """item_adj as a COO tensor whose values carry gradients to the projections,
        the feature tables and modal_weight."""
        n, k, lam = self.n_items, int(self.hp["knn_k"]), float(self.hp["lambda_coeff"])
        w = torch.softmax(self.modal_weight, dim=0)
        rows, cols, vals = [], [], []
        for i, (table, trs) in enumerate(zip(self.feats, self.trs, strict=True)):
            r, c, v = learned_knn_edges(trs(table), k, int(self.hp["knn_chunk_size"]))
            rows.append(r)
            cols.append(c)
            vals.append(w[i] * v)
        lr, lc = torch.cat(rows), torch.cat(cols)
        learned = weighted_sym_norm(lr, lc, torch.cat(vals), n)
        idx = torch.stack([torch.cat([lr, self.frozen_rows]), torch.cat([lc, self.frozen_cols])])
        vals = torch.cat([(1.0 - lam) * learned, lam * w[self.frozen_feature] * self.frozen_vals])
        return torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False)

    def _item_hops(self, train: bool) -> torch.Tensor:
        h = self.item_emb.weight
        hops = int(self.hp["n_layers"])
        if not train or self._rebuild or self._item_adj is None:
            adj = self.item_graph()
            for _ in range(hops):
                h = torch.sparse.mm(adj, h)
            if train:
                csr = adj.detach().coalesce().to_sparse_csr()
                self._item_adj, self._item_adj_t = csr, transpose_csr(csr)
                self._rebuild = False
            return h
        for _ in range(hops):
            h = spmm(self._item_adj, h, self._item_adj_t)
        return h

    def propagate(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        built = self._rebuild
        h = self._item_hops(train)
        users, items = self.split(self.propagate_ids(self.ui_adj, int(self.hp["n_ui_layers"]), self.ui_adj_t))
        items = items + F.normalize(h, p=2, dim=1)
        if train and not built and dist.is_available() and dist.is_initialized():
            # DDP needs every parameter in the graph; the graph's inputs get no gradient on
            # the epoch's later batches (as in the reference), so add them with weight 0.
            items = items + 0.0 * sum(p.sum() for p in self._graph_params())
        return users, items

    def _graph_params(self) -> list[nn.Parameter]:
        return [*self.feats, *self.trs.parameters(), self.modal_weight]

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u_all, i_all = self.propagate(train=True)
        u, p, n = u_all[users], i_all[pos], i_all[neg]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        return loss + float(self.hp["reg_weight"]) * half_sq_reg(u, p, n)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(train=False)
