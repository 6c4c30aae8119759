"""CM3 (Zhou, Wang, Shen 2025, "Calibrating Multimodal Recommendation"), any number of modalities.

Mechanics (the reference is github.com/enoche/CM3, two modalities):

- items: one channel per feature table (MLP feature -> 4d -> d) plus a fused channel:
  each feature is projected (``Linear(feature, d)``, xavier-normal) and normalised, and
  the unit vectors are fused on the sphere by a spherical Bezier curve (de Casteljau of
  slerps; one slerp for two modalities) at a parameter t drawn per item from
  Beta(alpha, alpha) at every training forward pass and fixed to ``eval_mix`` (0.5, the
  mean of that Beta) at evaluation;
- users: one learned vector per channel; the (N + 1) channels are propagated together
  over the user-item graph (``channel_gcn``); a per-user softmax weights the user's
  channels; items add hops over the frozen item-item kNN graph;
- loss (no BPR): alignment mean ||u - i+||^2 of the L2-normalised user/positive
  vectors + gamma (U(users) + U_cal(negatives)) / 2 with the uniformity U (t = 2) and the
  calibrated uniformity U_cal whose pair similarities are the clamped cosines of the
  negatives' fused vectors (``losses.calibrated_uniformity``).

Scoring: ``embeddings()`` recomputes everything on the full graph with the fixed mixing
parameter. The reference scores with the vectors cached from the *last training batch*
(one optimiser step stale, with that batch's random mixing); benchmarks/parity_zoo2.py
measures what that changes. ``score_normalized`` picks cosine scores (the geometry the
loss trains) or, as the reference, raw dot products of the propagated vectors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.blocks.channel_gcn import user_channel_preferences, xavier_normal_rows
from training.blocks.fusion import sample_mix, spherical_bezier
from training.blocks.losses import alignment, calibrated_uniformity, uniformity
from training.data import TrainData
from training.models.base import ChannelRecommender, register


@register("cm3")
class CM3(ChannelRecommender):
    defaults = {
        "embedding_dim": 64,
        "n_ui_layers": 3,  # user-item propagation layers (summed)
        "n_mm_layers": 1,  # hops over the item-item kNN graph
        "knn_k": 10,
        "feature_weights": None,  # {feature: weight} of the item-item graph; default equal
        "gamma": 0.5,  # weight of the uniformity terms
        "uniformity_t": 2.0,
        "alpha": 0.1,  # Beta(alpha, alpha) of the per-item mixing parameter
        "eval_mix": 0.5,  # the mixing parameter at evaluation
        "min_sim": 0.0,  # clamp of the calibration similarities
        "max_sim": 0.8,
        "score_normalized": False,  # cosine scores; False = the reference's raw dot products
        "knn_chunk_size": 1024,
    }

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = self.add_feature_channels()
        self.fuse_proj = nn.ModuleList(nn.Linear(f.dim, d) for f in self.features)
        for layer in self.fuse_proj:
            nn.init.xavier_normal_(layer.weight)
        self.user_pref = user_channel_preferences(self.n_users, self.n_channels, d)
        self.theta = nn.Parameter(xavier_normal_rows(self.n_users, self.n_channels))
        self.add_graphs(data)

    def fused(self, mix: torch.Tensor | float) -> torch.Tensor:
        """The fused channel: unit vectors on the spherical Bezier curve of the projections."""
        return spherical_bezier([proj(x) for proj, x in zip(self.fuse_proj, self.feats, strict=True)], mix)

    def propagate(self, mix: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user, item, fused) representations on the full graph, not normalised."""
        fused = self.fused(mix)
        u, i = self.propagate_channels(fused, self.fuse_users)
        return u, i, fused

    def fuse_users(self, channels: torch.Tensor) -> torch.Tensor:
        """A per-user softmax over the ``(n_users, C, d)`` channels, concatenated."""
        return (channels * F.softmax(self.theta, dim=1).unsqueeze(-1)).flatten(1)

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        mix = sample_mix(self.n_items, float(self.hp["alpha"]), device=self.user_pref.device)
        u_all, i_all, fused = self.propagate(mix)
        u = F.normalize(u_all[users], dim=-1)
        p = F.normalize(i_all[pos], dim=-1)
        n = F.normalize(i_all[neg], dim=-1)
        m = F.normalize(fused[neg], dim=-1)
        sim = (m @ m.T).clamp(float(self.hp["min_sim"]), float(self.hp["max_sim"]))
        t = float(self.hp["uniformity_t"])
        uniform = (uniformity(u, t) + calibrated_uniformity(n, sim, t)) / 2
        return alignment(u, p) + float(self.hp["gamma"]) * uniform

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        u, i, _ = self.propagate(float(self.hp["eval_mix"]))
        if self.hp["score_normalized"]:
            return F.normalize(u, dim=-1), F.normalize(i, dim=-1)
        return u, i
