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
from training.data import TrainData

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


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of the batch's embeddings, averaged over the batch."""
    return sum(t.pow(2).sum() for t in tensors) / tensors[0].shape[0]


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
