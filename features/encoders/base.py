"""The encoder interface and the registry that maps ``params.yaml`` names to classes."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from features.errors import PlatformError

_REGISTRY: dict[str, type[Encoder]] = {}
# Modules that register encoders on import; imported lazily so torch loads only when needed.
_MODULES = {
    "sentence-transformers": "features.encoders.sentence",
    "open_clip": "features.encoders.clip",
}


class EncoderError(PlatformError, RuntimeError):
    """An encoder cannot be built (unknown name, missing weights, bad option)."""


class Encoder(ABC):
    """Maps a batch of one modality's inputs to a float32 matrix.

    ``modality`` says what ``encode`` takes: ``text`` -> list[str], ``image`` ->
    list[PIL.Image.Image] (RGB). ``id`` names model, weights and preprocessing so a
    cached vector is reused only if all three are the same.
    """

    name: ClassVar[str]
    modality: str
    dim: int
    normalized: bool
    weights: str  # what weights were loaded: a tag, a path + checksum, or "random-init"

    @property
    @abstractmethod
    def id(self) -> str: ...

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """What goes into the feature table's manifest."""
        return {
            "encoder": self.name,
            "encoder_id": self.id,
            "modality": self.modality,
            "dim": self.dim,
            "normalized": self.normalized,
            "weights": self.weights,
            "random_weights": self.weights.startswith("random-init"),
        }


def register(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    def deco(cls: type[Encoder]) -> type[Encoder]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def registered() -> list[str]:
    return sorted(set(_REGISTRY) | set(_MODULES))


def build_encoder(spec: dict[str, Any]) -> Encoder:
    """Build from a params.yaml feature spec: ``{encoder: <name>, ...options}``."""
    spec = dict(spec)
    name = spec.pop("encoder", None)
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise EncoderError(f"unknown encoder {name!r}; registered: {registered()}")
    for key in ("fields", "modality_input", "batch_size"):
        spec.pop(key, None)
    try:
        return _REGISTRY[name](**spec)
    except TypeError as e:
        raise EncoderError(f"encoder {name!r}: bad options {sorted(spec)}: {e}") from e
