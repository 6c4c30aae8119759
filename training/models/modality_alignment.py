"""Modality alignment over per-modality kNN graphs: the model of MambaRec (github.com/rkl71/MambaRec).

The public MambaRec code has no state-space (Mamba) layer; what it does is align
modalities, so it is registered here as ``modality_alignment``. Mechanics (MGCN backbone
plus two additions), for any number of feature tables:

- behaviour view: LightGCN over the user-item graph (id embeddings, layer mean);
- per modality m: the feature (trainable, as the reference fine-tunes its feature
  tables) goes through ``Linear`` (image-like tables first through a ``dim /
  reduction_factor`` bottleneck), the multi-scale dilated convolution attention block
  (``dilated_attention``), a LayerNorm shared by all modalities and dropout; it gates
  the item id embeddings (``item_emb * sigmoid(Linear(.))``), which propagate over the
  modality's own frozen kNN graph (cosine-weighted, sym-normalised); users average their
  items through the normalised user-item block R;
- fusion (MGCN): an attention over modalities gives the common part, each modality's
  remainder is gated by the behaviour view, side = (sum of gated remainders + common)
  / (M + 1); final = behaviour + side;
- loss: BPR + reg_weight 0.5 (|u|^2 + |i+|^2 + |i-|^2) / batch + cl_weight (InfoNCE(side,
  behaviour) of the batch's positive items + of its users, tau) + mmd_weight x mean over
  modality pairs of the Gaussian MMD between the L2-normalised DREAM outputs of the
  batch's positive items.

The reference recomputes the DREAM outputs for its MMD term (a second BatchNorm
running-statistics update per batch); here the forward pass's outputs are reused (same
values and gradients, one running-statistics update per batch).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.blocks.dilated_attention import DilatedConvAttention
from training.blocks.losses import gaussian_mmd, info_nce
from training.blocks.semantic_graphs import (
    ConstTensors,
    item_graph_view,
    similarity_knn_graph,
    user_item_adjacency,
    user_item_block,
)
from training.data import TrainData
from training.models.base import Recommender, bpr_loss, half_sq_reg, register


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register("modality_alignment")
class ModalityAlignment(Recommender):
    defaults = {
        "embedding_dim": 64,
        "n_ui_layers": 4,  # LightGCN layers (mean) over the user-item graph
        "n_layers": 1,  # hops over each modality's kNN graph
        "knn_k": 10,
        "reg_weight": 1e-4,
        "cl_weight": 0.01,
        "tau": 0.2,
        "mmd_weight": 0.1,
        "mmd_kernel_bandwidth": 1.0,
        "reduction_factor": 8,
        "reduce_features": None,  # feature names given the bottleneck; None = image modality
        "dropout": 0.2,
        "train_features": True,  # fine-tune the feature tables (as the reference does)
        "knn_chunk_size": 1024,
    }
    needs_features = True

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = self.add_id_embeddings(nn.init.xavier_uniform_)
        self.feats = self.feature_parameters(bool(self.hp["train_features"]))
        reduce = self.hp["reduce_features"]
        reduce = [f.name for f in self.features if f.modality == "image"] if reduce is None else list(reduce)
        rf = int(self.hp["reduction_factor"])
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(f.dim, f.dim // rf), nn.Linear(f.dim // rf, d))
            if f.name in reduce
            else nn.Linear(f.dim, d)
            for f in self.features
        )
        self.dream = nn.ModuleList(DilatedConvAttention(d, d) for _ in self.features)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(float(self.hp["dropout"]))
        self.item_gates = nn.ModuleList(_gate(d) for _ in self.features)
        self.multi = len(self.features) > 1
        if self.multi:  # fusion modules exist only when used (DDP rejects unused parameters)
            self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
            self.prefer_gates = nn.ModuleList(_gate(d) for _ in self.features)
        k, chunk = int(self.hp["knn_k"]), int(self.hp["knn_chunk_size"])
        self.mm_graphs = ConstTensors(
            [t for f in self.features for t in similarity_knn_graph(f.values, k, chunk)]
        )
        self.r, self.r_t = user_item_block(data)
        self.adj = user_item_adjacency(data)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(final, side, behaviour) for users+items stacked, and each modality's DREAM output."""
        behaviour = self.propagate_ids(self.adj, int(self.hp["n_ui_layers"]))
        dreams, views = [], []
        for m, feat in enumerate(self.feats):
            dream = self.dream[m](self.encoders[m](feat))
            dreams.append(dream)
            h = self.item_emb.weight * self.item_gates[m](self.drop(self.norm(dream)))
            graph = self.mm_graphs.pairs()[m]
            views.append(item_graph_view(h, graph, int(self.hp["n_layers"]), (self.r, self.r_t)))
        if self.multi:
            att = F.softmax(torch.cat([self.query_common(v) for v in views], dim=1), dim=1)
            common = sum(att[:, m : m + 1] * v for m, v in enumerate(views))
            remainders = [g(behaviour) * (v - common) for g, v in zip(self.prefer_gates, views, strict=True)]
            side = (sum(remainders) + common) / (len(views) + 1)
        else:
            side = views[0]
        return behaviour + side, side, behaviour, dreams

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        final, side, behaviour, dreams = self.propagate()
        nu = self.n_users
        u, p, n = final[users], final[nu + pos], final[nu + neg]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        loss = loss + float(self.hp["reg_weight"]) * half_sq_reg(u, p, n)
        tau = float(self.hp["tau"])
        cl = info_nce(side[nu + pos], behaviour[nu + pos], tau) + info_nce(side[users], behaviour[users], tau)
        loss = loss + float(self.hp["cl_weight"]) * cl
        if self.multi:
            bw = float(self.hp["mmd_kernel_bandwidth"])
            pairs = list(itertools.combinations(range(len(dreams)), 2))
            mmd = sum(
                gaussian_mmd(F.normalize(dreams[a][pos], dim=1), F.normalize(dreams[b][pos], dim=1), bw)
                for a, b in pairs
            ) / len(pairs)
            loss = loss + float(self.hp["mmd_weight"]) * mmd
        return loss

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.propagate()[0])
