"""SIGE: Semantic Item Graph Enhancement for multimodal recommendation (Zhang, Zhou, Zeng,
Niyato, Shen; arXiv 2508.06154). No public code; built from the paper's description, with
the choices it leaves open marked CHOICE (README "Model zoo, part 2" lists them too).

1. Collaborative signals infused into each modality's item graph:
   G_m = (1 - collab_weight) S_m + collab_weight C, with S_m the modality's top-k
   cosine graph (cosine-weighted, sym-normalised) and C the top-``collab_k`` co-occurrence
   graph of the *training* interactions (items sharing the most users; binary,
   normalised like a kNN graph). CHOICE: a fixed convex mix, built once (frozen).
2. Views: behaviour = LightGCN over the user-item graph (id embeddings, layer mean).
   Semantic view of modality m: the item id embeddings gated by the projected feature
   (``item_emb * sigmoid(Linear(feature))``, CHOICE: MGCN's gating) propagated over G_m;
   users average their items' semantics through the normalised user-item block R.
   Fused semantics = mean over modalities (CHOICE). Final = behaviour + fused semantics.
3. Modulus-based personalised perturbation: at every hop over G_m a perturbed view adds
   to each row h_i the noise eps * ||h_i|| * sign(h_i) * u_i / ||u_i||, u_i ~ U(0, 1)^d, so
   the noise norm is proportional to each embedding's own modulus (SimGCL's noise has a
   fixed norm, which swamps small embeddings and barely moves large ones). Two perturbed
   views are contrasted with InfoNCE on the batch's users and positive items.
4. Dual alignment: anchor-based InfoNCE (``losses.anchor_info_nce``) with the behaviour
   representations as anchors and every modality's semantic representation as views
   (CHOICE: anchors detached by ``anchor_stop_grad``, so the semantics move to the
   behaviour and not the reverse), then standard InfoNCE between behaviour and the fused
   semantics. CHOICE (``align_stop_grad``): its behaviour side is detached too. Trained
   both ways, this InfoNCE spreads the behaviour vectors apart and on MovieLens-100K
   wrecks them as MambaRec's InfoNCE does (valid Recall@20 0.094 -> 0.034 over three
   epochs); detached, SIGE reaches 0.200 at epoch 2 vs 0.181 with no contrastive term.
5. Loss: BPR + reg_weight 0.5 (|u|^2 + |i+|^2 + |i-|^2) / batch + cl_weight x perturbation
   InfoNCE + anchor_weight x anchor-based InfoNCE + align_weight x behaviour-fused InfoNCE.

Evaluation: the unperturbed graph, no noise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.blocks.losses import anchor_info_nce, info_nce
from training.blocks.semantic_graphs import (
    ConstTensors,
    cooccurrence_knn_graph,
    item_graph_view,
    similarity_knn_graph,
    user_item_adjacency,
    user_item_block,
    with_transpose,
)
from training.data import TrainData
from training.models.base import Recommender, bpr_loss, half_sq_reg, register


def modulus_perturbation(h: torch.Tensor, eps: float) -> torch.Tensor:
    """Noise for every row of ``h``: norm ``eps * ||h_i||``, in the orthant of ``h_i``
    (sign(h_i) * u / ||u||, u ~ U(0, 1)^d)."""
    u = F.normalize(torch.rand_like(h), dim=-1)
    return eps * h.norm(dim=-1, keepdim=True) * torch.sign(h) * u


@register("sige")
class SIGE(Recommender):
    defaults = {
        "embedding_dim": 64,
        "n_ui_layers": 2,  # LightGCN layers (mean) over the user-item graph
        "n_mm_layers": 1,  # hops over each enhanced item graph
        "knn_k": 10,
        "collab_k": 10,  # co-occurrence neighbours per item
        "collab_weight": 0.3,  # share of the collaborative graph in each enhanced graph
        "perturb_eps": 0.1,  # noise norm relative to each embedding's modulus
        "tau": 0.2,
        "cl_weight": 0.05,  # perturbed-view InfoNCE
        "anchor_weight": 0.05,  # anchor-based InfoNCE (behaviour anchors, semantic views)
        "align_weight": 0.05,  # InfoNCE(behaviour, fused semantics)
        "anchor_stop_grad": True,
        "align_stop_grad": True,  # detach the behaviour side of the second alignment (see docstring)
        "reg_weight": 1e-4,
        "knn_chunk_size": 1024,
    }
    needs_features = True

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d = self.add_id_embeddings(nn.init.xavier_uniform_)
        self.feats = self.feature_constants()
        self.proj = nn.ModuleList(nn.Linear(f.dim, d) for f in self.features)
        k, chunk = int(self.hp["knn_k"]), int(self.hp["knn_chunk_size"])
        beta = float(self.hp["collab_weight"])
        collab = cooccurrence_knn_graph(data, int(self.hp["collab_k"]), chunk)
        graphs = []
        for f in self.features:
            semantic = similarity_knn_graph(f.values, k, chunk)[0].to_sparse_coo()
            graphs.extend(with_transpose((1.0 - beta) * semantic + beta * collab))
        self.item_graphs = ConstTensors(graphs)
        self.r, self.r_t = user_item_block(data)
        self.adj = user_item_adjacency(data)

    def semantic_views(self, eps: float = 0.0) -> list[torch.Tensor]:
        """Per modality, users+items stacked; ``eps`` > 0 perturbs every hop."""
        noise = (lambda h: modulus_perturbation(h, eps)) if eps > 0 else None
        hops, r = int(self.hp["n_mm_layers"]), (self.r, self.r_t)
        return [
            item_graph_view(self.item_emb.weight * torch.sigmoid(proj(x)), graph, hops, r, noise)
            for proj, x, graph in zip(self.proj, self.feats, self.item_graphs.pairs(), strict=True)
        ]

    def behaviour(self) -> torch.Tensor:
        return self.propagate_ids(self.adj, int(self.hp["n_ui_layers"]))

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        nu = self.n_users
        behaviour = self.behaviour()
        views = self.semantic_views()
        fused = torch.stack(views).mean(0)
        final = behaviour + fused
        u, p, n = final[users], final[nu + pos], final[nu + neg]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1)) + float(self.hp["reg_weight"]) * half_sq_reg(
            u, p, n
        )
        tau, eps = float(self.hp["tau"]), float(self.hp["perturb_eps"])
        groups = [users.unique(), nu + pos.unique()]  # users and items contrasted separately
        if float(self.hp["cl_weight"]) > 0 and eps > 0:
            v1 = torch.stack(self.semantic_views(eps)).mean(0)
            v2 = torch.stack(self.semantic_views(eps)).mean(0)
            cl = sum(info_nce(v1[g], v2[g], tau) for g in groups)
            loss = loss + float(self.hp["cl_weight"]) * cl
        anchor = align = 0.0
        for g in groups:
            a = behaviour[g].detach() if self.hp["anchor_stop_grad"] else behaviour[g]
            anchor = anchor + anchor_info_nce(a, [v[g] for v in views], tau)
            b = behaviour[g].detach() if self.hp["align_stop_grad"] else behaviour[g]
            align = align + info_nce(b, fused[g], tau)
        loss = loss + float(self.hp["anchor_weight"]) * anchor + float(self.hp["align_weight"]) * align
        return loss

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.behaviour() + torch.stack(self.semantic_views()).mean(0))
