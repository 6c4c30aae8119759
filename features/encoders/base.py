"""The encoder interface and the registry that maps ``params.yaml`` names to classes.

Building an encoder is cheap: it resolves which weights it would load, its dimension and
its id (what the manifest and the feature cache need) without loading them. ``load()``
does the heavy part once; ``encode()`` calls it on first use. So the launcher can describe
a feature without loading a model, and each Beam worker loads it once in ``setup()``.
"""

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
    "hf-llm": "features.encoders.hf_llm",
    "precomputed": "features.encoders.precomputed",
}
# What ``encode`` takes, per modality.
MODALITIES = ("text", "image", "item_id")


class EncoderError(PlatformError, RuntimeError):
    """An encoder cannot be built (unknown name, missing weights, bad option)."""


class Encoder(ABC):
    """Maps a batch of one modality's inputs to a float32 ``(n, dim)`` matrix.

    ``modality`` says what ``encode`` takes: ``text`` -> list[str], ``image`` ->
    list[PIL.Image.Image] (RGB), ``item_id`` -> list[str] (vectors looked up, not computed).
    ``id`` names model, weights and preprocessing so a cached vector is reused only if
    all three are the same.
    """

    name: ClassVar[str]
    modality: str
    dim: int
    normalized: bool
    weights: str  # what weights are loaded: a tag, a path + checksum, or "random-init(...)"

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    def loaded(self) -> bool:
        return True

    def load(self) -> None:  # noqa: B027 - encoders without weights have nothing to load
        """Load the weights (idempotent). Called once per worker process."""

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> np.ndarray: ...

    def unusable(self, batch: Sequence[Any]) -> list[str | None]:
        """Per input, why it cannot be encoded (a reject reason), or None. Checked before encode."""
        return [None] * len(batch)

    def truncation(self, batch: Sequence[Any]) -> list[str | None]:
        """Per input, a note when the encoder will cut it (e.g. text over max length), or None."""
        return [None] * len(batch)

    def describe(self) -> dict[str, Any]:
        """What goes into the feature table's manifest (no weights are loaded for this)."""
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
    """Build (without loading weights) from an encoder spec: ``{encoder: <name>, ...options}``."""
    spec = dict(spec)
    name = spec.pop("encoder", None)
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise EncoderError(f"unknown encoder {name!r}; registered: {registered()}")
    try:
        return _REGISTRY[name](**spec)
    except TypeError as e:
        raise EncoderError(f"encoder {name!r}: bad options {sorted(spec)}: {e}") from e


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero (validation flags them)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
