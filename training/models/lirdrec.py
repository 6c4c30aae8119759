"""LIRDRec ("learn item representations directly from features"; reference github.com/enoche/LIRDRec).

- items have no id embeddings: one channel per feature table (MLP feature -> 4d -> d)
  plus a shared channel, an MLP over the concatenated orthonormal DCT of every feature
  (computed once: the features are fixed inputs);
- the channels are propagated as in CM3 (``channel_gcn``: per-row normalised channels,
  user-item layers summed, item-item kNN hops);
- progressive weight copying (PWC) fuses a user's channels: attention = softmax(w1 a_u +
  w2 theta_u) with a_u one small MLP score per channel and theta_u a learned per-user
  vector; at the start of epoch e (1-based) w1 <- w1 base^e / (w1 base^e + w2), w2 <- 1 -
  w1, and theta is overwritten with the attention of the last training forward pass, so
  the learned attention is progressively copied into theta;
- loss: BPR (logsigmoid) on the batch + reg_weight (mean of u^2 over all users + mean of
  i^2 over all items).

``w1`` and the last attention are buffers, so a checkpoint restores the schedule exactly.
Evaluation recomputes the full graph (the reference scores with the vectors cached from
the last training batch) and never touches the copied attention.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.blocks.channel_gcn import feature_mlp, user_channel_preferences, xavier_normal_rows
from training.blocks.dct import dct_ortho
from training.data import TrainData
from training.models.base import ChannelRecommender, bpr_loss, register


def decayed_weight(w1: float, epoch: int, base: float) -> float:
    """One step of the reference's ``update_weights``: w1 base^epoch renormalised against
    w2 = 1 - w1 (the weights always sum to one)."""
    decayed = w1 * math.pow(base, epoch)
    return decayed / (decayed + (1.0 - w1))


class ProgressiveWeightCopying(nn.Module):
    """Per-user attention over C channels, softmax(w1 MLP scores + w2 theta)."""

    def __init__(self, n_users: int, n_channels: int, d: int, w1: float, base: float) -> None:
        super().__init__()
        self.scorers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d // 4), nn.LeakyReLU(), nn.Linear(d // 4, 1))
            for _ in range(n_channels)
        )
        self.theta = nn.Parameter(xavier_normal_rows(n_users, n_channels))
        self.base = base
        self.register_buffer("w1", torch.tensor(float(w1), dtype=torch.float64))
        self.register_buffer("epoch", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("last_att", self.theta.detach().clone())

    def next_epoch(self) -> None:
        """Decay w1 and copy the last attention into theta (the reference's ``update_w``)."""
        self.epoch += 1
        self.w1.fill_(decayed_weight(float(self.w1), int(self.epoch), self.base))
        with torch.no_grad():
            self.theta.copy_(self.last_att)

    def forward(self, channels: torch.Tensor) -> torch.Tensor:
        """``channels`` (n_users, C, d) -> fused (n_users, C * d)."""
        scores = torch.cat([s(channels[:, c]) for c, s in enumerate(self.scorers)], dim=1)
        w1 = float(self.w1)
        att = F.softmax(w1 * scores + (1.0 - w1) * self.theta, dim=1)
        if self.training:
            self.last_att.copy_(att.detach())
        return (channels * att.unsqueeze(-1)).flatten(1)


@register("lirdrec")
class LIRDRec(ChannelRecommender):
    defaults = {
        "embedding_dim": 64,
        "n_ui_layers": 2,
        "n_mm_layers": 1,
        "knn_k": 10,
        "feature_weights": None,  # {feature: weight} of the item-item graph; default equal
        "reg_weight": 1e-2,
        "decay_base": 0.9,
        "decay_weight": 0.9,  # initial w1
        "knn_chunk_size": 1024,
    }

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = self.add_feature_channels()
        # The shared channel's input: the features' DCT side by side (fixed, computed once).
        self.spectral = torch.cat([dct_ortho(x) for x in self.feats], dim=1)
        self.shared_mlp = feature_mlp(int(self.spectral.shape[1]), d)
        self.user_pref = user_channel_preferences(self.n_users, self.n_channels, d)
        self.fusion = ProgressiveWeightCopying(
            self.n_users, self.n_channels, d, float(self.hp["decay_weight"]), float(self.hp["decay_base"])
        )
        self.add_graphs(data)

    def pre_epoch(self, rng: np.random.Generator) -> None:
        self.fusion.next_epoch()

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate_channels(self.shared_mlp(self.spectral), self.fusion)

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u_all, i_all = self.propagate()
        u = u_all[users]
        loss = bpr_loss((u * i_all[pos]).sum(-1), (u * i_all[neg]).sum(-1))
        reg = u_all.pow(2).mean() + i_all.pow(2).mean()
        return loss + float(self.hp["reg_weight"]) * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
