"""VBPR: BPR whose item vector is [id embedding, linear projection of the item's features].

As MMRec's ``VBPR``: users get a 2d-dim embedding, items a d-dim id embedding concatenated
with ``Linear(concat of all feature tables) -> d``; the features are fixed inputs (not
trained). ``BPRLoss`` + reg_weight x ``EmbLoss`` on the full user/item vectors of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.data import TrainData
from training.models.base import (
    Recommender,
    bpr_loss,
    emb_norm_reg,
    project_rows,
    register,
    xavier_normal_linear,
)


@register("vbpr")
class VBPR(Recommender):
    defaults = {"embedding_dim": 64, "reg_weight": 1e-4}
    needs_features = True

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = int(self.hp["embedding_dim"])
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, 2 * d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        raw = torch.cat([f.tensor() for f in self.features], dim=1)
        # A plain attribute (not a parameter or buffer): constant input, not broadcast by DDP.
        self.raw_features = raw
        self.item_linear = xavier_normal_linear(nn.Linear(raw.shape[1], d))

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([self.item_emb, self.item_linear(self.raw_features)], dim=1)

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u = self.user_emb[users]
        fp, fn = project_rows(self.raw_features, self.item_linear, pos, neg)
        p = torch.cat([self.item_emb[pos], fp], dim=1)
        n = torch.cat([self.item_emb[neg], fn], dim=1)
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1), gamma=1e-10)
        return loss + float(self.hp["reg_weight"]) * emb_norm_reg(u, p, n)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb, self.item_vectors()
