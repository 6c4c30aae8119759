"""LightGCN: id embeddings propagated over the normalised user-item graph, layer mean."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.blocks.semantic_graphs import user_item_adjacency
from training.data import TrainData
from training.models.base import Recommender, emb_norm_reg, register


@register("lightgcn")
class LightGCN(Recommender):
    """As MMRec's ``LightGCN``: xavier-uniform init, D^-1/2 A D^-1/2, mean over layers
    0..n, ``BPRLoss`` on propagated embeddings + reg_weight x ``EmbLoss`` on the ego ones;
    ``matryoshka``: the BPR term averaged over the listed prefix sizes (propagation acts on
    each column alone, so a prefix is exactly a smaller LightGCN)."""

    defaults = {
        "embedding_dim": 64,
        "n_layers": 2,
        "reg_weight": 1e-4,
        "matryoshka": [],
        "matryoshka_rescale": True,
    }

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        self.init_matryoshka(self.add_id_embeddings(nn.init.xavier_uniform_))
        # A plain attribute, not a buffer: DDP must not try to broadcast a sparse tensor.
        self.adj = user_item_adjacency(data)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.propagate_ids(self.adj, int(self.hp["n_layers"])))

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u_all, i_all = self.propagate()
        u, p, n = u_all[users], i_all[pos], i_all[neg]
        loss = self.ranking_loss(u, p, n, gamma=1e-10)
        reg = emb_norm_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        return loss + float(self.hp["reg_weight"]) * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
