"""One interface for every recommender: loss on (user, pos, neg) triples, embeddings for ranking.

Losses and regularisers follow MMRec's forms exactly (they change the numbers): its
``BPRLoss`` is ``-mean log(1e-10 + sigmoid(pos - neg))`` and its ``EmbLoss`` is the sum of
the *unsquared* Frobenius norms of the batch's embedding matrices divided by the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from features.errors import PlatformError
from training.blocks import matryoshka
from training.blocks.channel_gcn import feature_mlp, item_graph_hops, propagate_channels
from training.blocks.matryoshka import prefix_bpr_loss, prefix_sizes
from training.blocks.semantic_graphs import ConstTensors, Graph, mixed_knn_graph, user_item_adjacency
from training.data import TrainData
from training.sparse import propagate_mean

_REGISTRY: dict[str, type[Recommender]] = {}


class ModelError(PlatformError, ValueError):
    """Unknown model name or a hyper-parameter the model does not take."""


@dataclass(frozen=True)
class ItemFeature:
    """One modality's item feature table from the store: ``values[item_idx]`` is its vector."""

    name: str
    modality: str
    values: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.values, dtype=np.float32)).clone()


def item_features(data: TrainData) -> list[ItemFeature]:
    """The loaded feature tables as typed inputs, in a stable (name) order."""
    return [
        ItemFeature(name, data.feature_modality.get(name, "unknown"), data.features[name])
        for name in sorted(data.features)
    ]


class Recommender(nn.Module):
    """Subclasses set ``defaults`` (every hyper-parameter with its default) and implement
    ``forward`` (returns the training loss of a batch) and ``embeddings`` (user and item
    matrices whose dot products are the scores, computed on the full graph)."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    needs_features: ClassVar[bool] = False
    # Value checks params.yaml runs on a hyper-parameter (value, section with defaults) ->
    # why it is invalid or None; beyond the type check against ``defaults``.
    hparam_checks: ClassVar[dict[str, Callable[[Any, dict[str, Any]], str | None]]] = {
        "matryoshka": matryoshka.check_hparam
    }

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__()
        unknown = sorted(set(hp) - set(self.defaults))
        if unknown:
            raise ModelError(
                f"model {self.name!r}: unknown hyper-parameter(s) {unknown}; it takes {sorted(self.defaults)}"
            )
        self.hp = {**self.defaults, **hp}
        self.n_users, self.n_items = data.n_users, data.n_items
        if self.needs_features and not data.features:
            raise ModelError(f"model {self.name!r} needs item features; none were loaded")
        self.features = item_features(data) if self.needs_features else []
        # Matryoshka prefix sizes the loss trains (``init_matryoshka``); [] = an ordinary model.
        self.prefixes: list[int] = []

    # -- set-up shared by the models (same creation order and init calls as each model had,
    # so a seed still gives the same weights) --

    def add_id_embeddings(self, init: Callable[[torch.Tensor], torch.Tensor]) -> int:
        """``self.user_emb`` and ``self.item_emb``: ``nn.Embedding`` tables ``embedding_dim``
        wide, both created before ``init`` overwrites the users' then the items' weights.
        Returns the width."""
        d = int(self.hp["embedding_dim"])
        self.user_emb = nn.Embedding(self.n_users, d)
        self.item_emb = nn.Embedding(self.n_items, d)
        init(self.user_emb.weight)
        init(self.item_emb.weight)
        return d

    def init_matryoshka(self, dim: int) -> list[int]:
        """``self.prefixes`` from the ``matryoshka`` hyper-parameter (sizes <= ``dim``, ``dim``
        added; [] when off): the nested sizes ``ranking_loss`` trains and evaluation reports."""
        try:
            self.prefixes = prefix_sizes(self.hp.get("matryoshka"), dim)
        except ValueError as e:
            raise ModelError(f"model {self.name!r}: matryoshka: {e}") from None
        return self.prefixes

    def ranking_loss(
        self, u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, gamma: float = 0.0
    ) -> torch.Tensor:
        """BPR of the batch's user and item vectors; with Matryoshka prefixes, the mean of BPR
        over the first d dimensions for every prefix size, each prefix's scores scaled by
        dim / d when ``matryoshka_rescale`` (``training.blocks.matryoshka``)."""
        if self.prefixes:
            rescale = bool(self.hp.get("matryoshka_rescale", True))
            return prefix_bpr_loss(u, pos, neg, self.prefixes, gamma, rescale)
        return bpr_loss((u * pos).sum(-1), (u * neg).sum(-1), gamma=gamma)

    def feature_parameters(self, trainable: bool = True) -> nn.ParameterList:
        """The feature tables as parameters (in the state dict; fine-tuned when ``trainable``)."""
        return nn.ParameterList(nn.Parameter(f.tensor(), requires_grad=trainable) for f in self.features)

    def feature_constants(self) -> ConstTensors:
        """The feature tables as constant inputs (moved with the model, not in the state dict)."""
        return ConstTensors([f.tensor() for f in self.features])

    def item_knn_graph(self, data: TrainData) -> Graph:
        """FREEDOM's frozen item-item graph (and its transpose) from the hyper-parameters
        ``feature_weights`` (None: equal), ``knn_k`` and ``knn_chunk_size``."""
        names = [f.name for f in self.features]
        weights = feature_weights(names, self.hp["feature_weights"], self.name)
        return mixed_knn_graph(data, names, weights, int(self.hp["knn_k"]), int(self.hp["knn_chunk_size"]))

    def propagate_ids(
        self, adj: torch.Tensor, n_layers: int, adj_t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LightGCN over the id embeddings: users and items stacked, mean of layers 0..n."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        return propagate_mean(adj, ego, n_layers, adj_t)

    def split(self, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Users' and items' rows of a users-then-items stacked matrix."""
        return stacked[: self.n_users], stacked[self.n_users :]

    def pre_epoch(self, rng: np.random.Generator) -> None:
        """Per-epoch work before the batches (e.g. FREEDOM's edge pruning)."""

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of ``users`` against every item, ``(len(users), n_items)``."""
        u, i = self.embeddings()
        return u[users] @ i.T

    @torch.no_grad()
    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user and item matrices for ranking: eval mode, no autograd graph, detached
        float32. Leaves the model in eval mode (what a loaded checkpoint is for)."""
        self.eval()
        u, i = self.embeddings()
        return u.detach().float(), i.detach().float()


class ChannelRecommender(Recommender):
    """Base of the multi-channel models (CM3, LIRDRec; ``training.blocks.channel_gcn``):
    items from their features only, one ``feature_mlp`` channel per feature table plus one
    channel of the model's own, a learned preference vector per user and channel
    (``self.user_pref``, set by the subclass), propagated over the user-item graph, then
    item-graph hops. Subclasses say how a user fuses its channels."""

    needs_features = True

    def add_feature_channels(self) -> int:
        """``self.d``, ``self.n_channels``, the constant feature tables ``self.feats`` and
        their channel MLPs ``self.mlps``. Returns d."""
        d = self.d = int(self.hp["embedding_dim"])
        self.n_channels = len(self.features) + 1
        # Constant inputs, plain attributes (not buffers): DDP must not broadcast them.
        self.feats = self.feature_constants()
        self.mlps = nn.ModuleList(feature_mlp(f.dim, d) for f in self.features)
        return d

    def add_graphs(self, data: TrainData) -> None:
        """The frozen item-item graph (``item_knn_graph``) and the user-item graph."""
        self.mm_adj, self.mm_adj_t = self.item_knn_graph(data)
        self.adj = user_item_adjacency(data)

    def propagate_channels(
        self, extra: torch.Tensor, fuse_users: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) on the full graph: item channels ``mlp(feature)`` per table plus
        ``extra``; ``fuse_users`` maps the users' ``(n_users, C, d)`` channels to vectors."""
        items = torch.stack([mlp(x) for mlp, x in zip(self.mlps, self.feats, strict=True)] + [extra], dim=1)
        users = self.user_pref.view(self.n_users, self.n_channels, self.d)
        u, i = propagate_channels(self.adj, users, items, int(self.hp["n_ui_layers"]))
        u = fuse_users(u.view(self.n_users, self.n_channels, self.d))
        return u, item_graph_hops(self.mm_adj, self.mm_adj_t, i, int(self.hp["n_mm_layers"]))


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, gamma: float = 0.0) -> torch.Tensor:
    """-mean log(gamma + sigmoid(pos - neg)); gamma=1e-10 is MMRec's ``BPRLoss``, 0 its
    ``logsigmoid`` form used by FREEDOM and LATTICE (they differ only below pos-neg < -20)."""
    diff = pos_scores - neg_scores
    if gamma:
        return -torch.log(gamma + torch.sigmoid(diff)).mean()
    return -F.logsigmoid(diff).mean()


def emb_norm_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: sum of each matrix's Frobenius norm (not squared) / batch size."""
    return sum(torch.linalg.vector_norm(t) for t in tensors) / tensors[-1].shape[0]


def half_sq_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """LATTICE's regulariser: sum of 0.5 * squared L2 norms / batch size."""
    return sum(0.5 * t.pow(2).sum() for t in tensors) / tensors[0].shape[0]


def feature_weights(names: list[str], weights: dict[str, float] | None, model: str) -> dict[str, float]:
    """Per-feature weights of a mixed item graph; ``None`` (or empty) means equal weights."""
    if not weights:
        return {n: 1.0 / len(names) for n in names}
    missing = [n for n in names if n not in weights]
    if missing:
        raise ModelError(f"{model}.feature_weights: no weight for feature(s) {missing}; got {weights}")
    return {n: float(weights[n]) for n in names}


def xavier_normal_linear(layer: nn.Linear) -> nn.Linear:
    """MMRec's ``xavier_normal_initialization`` for a linear layer (zero bias)."""
    nn.init.xavier_normal_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def touches_most(a: torch.Tensor, b: torch.Tensor, n_rows: int, share: float = 0.5) -> bool:
    """Whether a batch's rows ``a`` and ``b`` cover at least ``share`` of a table's rows.
    Called every batch: a mask of seen rows, not ``torch.unique`` (a sort; ~6x slower)."""
    if len(a) + len(b) < share * n_rows:
        return False
    seen = torch.zeros(n_rows, dtype=torch.bool, device=a.device)
    seen[a] = True
    seen[b] = True
    return int(seen.sum()) >= share * n_rows


def project_rows(
    table: torch.Tensor, layer: nn.Module, a: torch.Tensor, b: torch.Tensor, whole: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer(table)[a]`` and ``layer(table)[b]``: the whole table in one matmul when the
    batch touches most of it (``whole``, decided by ``touches_most`` if not given), else
    each distinct row once (large catalogs, small batches)."""
    ab = torch.cat([a, b])
    if whole is None:
        whole = touches_most(a, b, table.shape[0])
    if whole:
        out = layer(table).index_select(0, ab)
    else:
        uniq, inv = torch.unique(ab, return_inverse=True)
        out = layer(table.index_select(0, uniq)).index_select(0, inv)
    return out[: len(a)], out[len(a) :]


def register(name: str) -> Callable[[type[Recommender]], type[Recommender]]:
    def deco(cls: type[Recommender]) -> type[Recommender]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Recommender]:
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered models: {model_names()}")
    return _REGISTRY[name]


def build_model(name: str, data: TrainData, hp: dict[str, Any]) -> Recommender:
    return model_class(name)(data, hp)
