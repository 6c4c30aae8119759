"""Hyper-parameter grids and their selection on the valid split (never on test).

A model's ``params.yaml`` section is one configuration, or a grid where a value is a
list (the product of all lists, in the order written). Keys that are ``TrainConfig``
fields (``lr``, ``weight_decay``, ``epochs``, ...) override ``train.common`` for that
model and may be grids too. Every configuration is trained with each seed; the chosen
configuration has the best *mean valid* metric over seeds (MMRec picks by test, which
leaks). Test metrics are reported for the chosen configuration only, as mean and
sample standard deviation over the seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.config import TrainParams
from training.loop import TrainConfig

_NOT_OVERRIDABLE = {"model", "hparams", "seed", "ks"}


def train_fields() -> set[str]:
    """``TrainConfig`` fields a model section may override."""
    return {f.name for f in dataclasses.fields(TrainConfig)} - _NOT_OVERRIDABLE


def list_valued_hparams() -> set[str]:
    """Hyper-parameters whose value is itself a list (a model's default is a list, e.g.
    ``matryoshka: [8, 16]``): a grid over them is a list of lists."""
    from training.models.base import model_class, model_names

    return {k for name in model_names() for k, v in model_class(name).defaults.items() if isinstance(v, list)}


def _is_axis(key: str, value: Any, list_valued: set[str]) -> bool:
    if not isinstance(value, list | tuple):
        return False
    return key not in list_valued or (bool(value) and all(isinstance(v, list | tuple) for v in value))


def expand_grid(section: dict[str, Any] | None, list_valued: set[str] | None = None) -> list[dict[str, Any]]:
    """All configurations of a model section: list values are axes of the grid.

    ``{"a": [1, 2], "b": 3}`` -> ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``; an empty list
    is an error (it would select nothing). Keys in ``list_valued`` (default: every
    registered model's list-valued hyper-parameters) take a list as one value and are an
    axis only as a list of lists.
    """
    section = dict(section or {})
    lv = list_valued_hparams() if list_valued is None else list_valued
    axes = {k: v for k, v in section.items() if _is_axis(k, v, lv)}
    for k, v in axes.items():
        if not v:
            raise ValueError(f"grid axis {k!r} is an empty list; give at least one value")
    fixed = {k: v for k, v in section.items() if k not in axes}
    if not axes:
        return [fixed]
    keys = list(axes)
    return [{**fixed, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*axes.values())]


def make_config(base: TrainConfig, config: dict[str, Any], seed: int) -> TrainConfig:
    """``base`` with this configuration's train-field overrides, hyper-parameters and seed."""
    fields = train_fields()
    overrides = {k: v for k, v in config.items() if k in fields}
    hparams = {k: v for k, v in config.items() if k not in fields}
    return dataclasses.replace(base, hparams=hparams, seed=int(seed), **overrides)


def seeds_of(train: TrainParams) -> list[int]:
    """``train.seeds`` (a list) or else the single ``train.seed``."""
    if train.seeds is None:
        return [train.seed]
    if not train.seeds:
        raise ValueError("params.yaml train.seeds: an empty list; give one or more seeds or null")
    return list(train.seeds)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "std": std, "n": int(len(a))}


@dataclass
class ConfigResult:
    """One configuration's runs: per-seed best valid score, epoch and state."""

    config: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)

    @property
    def valid_mean(self) -> float:
        return float(np.mean(self.valid)) if self.valid else -math.inf

    def best_seed_index(self) -> int:
        """The seed whose run scored best on valid (its checkpoint is the one saved)."""
        return int(np.argmax(self.valid))

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "seeds": self.seeds,
            "valid": mean_std(self.valid),
            "valid_per_seed": self.valid,
            "best_epochs": self.best_epochs,
        }


def choose(results: Sequence[ConfigResult]) -> int:
    """Index of the configuration with the best mean valid score (first one on ties)."""
    if not results:
        raise ValueError("no configuration was trained")
    return int(np.argmax([r.valid_mean for r in results]))


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Metric -> mean/std over seeds (keys common to all runs; ``users`` is dropped)."""
    keys = [k for k in per_seed[0] if k != "users" and all(k in m for m in per_seed)]
    return {k: mean_std([m[k] for m in per_seed]) for k in keys}
