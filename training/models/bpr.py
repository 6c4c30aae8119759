"""BPR-MF: user and item id embeddings, dot-product score, BPR loss (MMRec's ``BPR``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.data import TrainData
from training.models.base import Recommender, emb_norm_reg, register


@register("bpr")
class BPR(Recommender):
    """Xavier-normal init, ``BPRLoss`` (gamma 1e-10) + reg_weight x ``EmbLoss`` on the batch;
    ``matryoshka``: the BPR term averaged over the listed prefix sizes."""

    defaults = {"embedding_dim": 64, "reg_weight": 1e-4, "matryoshka": [], "matryoshka_rescale": True}

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        self.init_matryoshka(self.add_id_embeddings(nn.init.xavier_normal_))

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        loss = self.ranking_loss(u, p, n, gamma=1e-10)
        return loss + float(self.hp["reg_weight"]) * emb_norm_reg(u, p, n)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight
