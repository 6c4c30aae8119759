"""One interface for every recommender: loss on (user, pos, neg) triples, embeddings for ranking."""

from __future__ import annotations

from collections.abc import Callable
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

    def pre_epoch(self, rng: np.random.Generator) -> None:
        """Per-epoch work before the batches (e.g. FREEDOM's edge pruning)."""

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(pos - neg)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of the batch's embeddings, averaged over the batch."""
    return sum(t.pow(2).sum() for t in tensors) / tensors[0].shape[0]


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
