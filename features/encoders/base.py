"""The encoder interface and the registry that maps ``params.yaml`` names to classes.

Building an encoder is cheap: it resolves which weights it would load, its dimension and
its id (what the manifest and the feature cache need) without loading them. ``load()``
does the heavy part once; ``encode()`` calls it on first use. So the launcher can describe
a feature without loading a model, and each Beam worker loads it once in ``setup()``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from features.encoders.weights import FolderHash, folder_hash
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
    ``id`` names model, weights, preprocessing and the versions of the ``libraries`` that
    change outputs, so a cached vector is reused only if all of them are the same.

    A subclass gives ``id_parts()`` (the template ``id`` is ``<name>:<parts>:libs@<digest>``)
    and, when it has something heavy to load, ``_load()`` returning it: ``load()`` calls it
    once and keeps the result in ``self._resource``.
    """

    name: ClassVar[str]
    # Distributions whose version changes what ``encode`` returns (their digest is in the id).
    libraries: ClassVar[tuple[str, ...]] = ("numpy",)
    modality: str
    dim: int
    normalized: bool
    weights: str  # what weights are loaded: a tag, a path + checksum, or "random-init(...)"
    _resource: Any = None  # what ``_load()`` returned (None until loaded)

    def id_parts(self) -> Sequence[str]:
        """What names this encoder's outputs, besides its name and library versions."""
        raise NotImplementedError(f"{type(self).__name__} must define id_parts() (or id)")

    @property
    def id(self) -> str:
        return ":".join((self.name, *self.id_parts(), f"libs@{libraries_digest(self.libraries)}"))

    @property
    def norm(self) -> str:
        """How outputs are scaled, as it goes into an id."""
        return "l2" if self.normalized else "raw"

    @property
    def loaded(self) -> bool:
        return self._resource is not None or type(self)._load is Encoder._load

    def load(self) -> None:
        """Load the weights (idempotent). Called once per worker process."""
        if self._resource is None:
            self._resource = self._load()

    def _load(self) -> Any:
        """Create what ``encode`` needs (a model, an index) and return it; never None."""
        return True  # encoders without weights have nothing to load

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> np.ndarray: ...

    def unusable(self, batch: Sequence[Any]) -> list[str | None]:
        """Per input, why it cannot be encoded (a reject reason), or None. Checked before encode."""
        return [None] * len(batch)

    def truncation(self, batch: Sequence[Any]) -> list[str | None]:
        """Per input, a note when the encoder will cut it (e.g. text over max length), or None."""
        return [None] * len(batch)

    def key_parts(self) -> dict[str, Any]:
        """Why the id is what it is: the pieces a reader compares when a cache was not reused."""
        return {"weights": self.weights, "libraries": library_versions(self.libraries)}

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
            "cache_key_parts": self.key_parts(),
        }


class FolderEncoder(Encoder):
    """An encoder whose model is a folder: the whole tree's checksum names its weights."""

    path: str
    model_name: str
    tree: FolderHash

    def _hash_folder(self, label: str) -> str:
        """Checksum ``self.path`` (once per process) and return the ``weights`` it names."""
        self.tree = folder_hash(self.path)
        return f"{label}@{self.tree.checksum}"

    def key_parts(self) -> dict[str, Any]:
        return {**super().key_parts(), "model_folder": self.tree.describe()}


@functools.cache
def library_version(dist: str) -> str:
    """The installed version of a distribution (``absent`` when it is not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def library_versions(dists: Sequence[str]) -> dict[str, str]:
    return {d: library_version(d) for d in dists}


def libraries_digest(dists: Sequence[str]) -> str:
    """8 hex digits naming the versions of ``dists`` (the full list is in ``key_parts()``)."""
    text = ";".join(f"{d}={v}" for d, v in sorted(library_versions(dists).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _add(name: str, cls: type[Encoder]) -> type[Encoder]:
    cls.name = name
    _REGISTRY[name] = cls
    return cls


def register(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: ``@register("<name>")`` makes ``build_encoder({"encoder": name})`` build it."""
    return functools.partial(_add, name)


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
