"""open_clip image and text towers, any architecture, weights by tag or local checkpoint path.

Which weights will be used is decided when the encoder is built (cheap: a tag is looked up
in the local cache, a file is checksummed); the model itself is created in ``load()``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import Encoder, EncoderError, register
from features.encoders.weights import file_checksum

log = logging.getLogger(__name__)
PREPROCESS_VERSION = "oc-2"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def _open_clip(model_config: str | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    if model_config:
        # A custom architecture: a JSON config (or a folder of them) named after the model.
        if not Path(model_config).exists():
            raise EncoderError(f"open_clip: model_config {model_config!r} does not exist")
        open_clip.add_model_config(model_config)
    return open_clip


def _tag_available(open_clip: Any, cfg: dict[str, Any]) -> str | None:
    """Why a known tag's weights cannot be had here (None when they are cached or downloadable)."""
    from open_clip import pretrained as ocp

    try:
        if cfg.get("file"):
            return None if Path(cfg["file"]).is_file() else f"file {cfg['file']} missing"
        if cfg.get("hf_hub") and ocp.has_hf_hub():
            model_id, filename = os.path.split(cfg["hf_hub"])
            ocp.download_pretrained_from_hf(model_id, filename=filename or "open_clip_pytorch_model.bin")
            return None
        if cfg.get("url"):
            cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
            if cached.is_file() or os.environ.get("HF_HUB_OFFLINE") != "1":
                return None
            return "not in the local cache and HF_HUB_OFFLINE=1"
    except Exception as e:  # noqa: BLE001 - offline/cache misses come in many types
        return f"{type(e).__name__}: {str(e)[:200]}"
    return "no download source"


@register("open_clip")
class OpenClipEncoder(Encoder):
    """``modality: image`` (default) embeds PIL images; ``modality: text`` embeds strings.

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local
    checkpoint path (its checksum goes into the id). When a tag cannot be had offline and
    ``allow_random_init`` is set, the model is initialised randomly from ``seed`` and that
    is recorded as the weights; a missing local path is always an error.
    """

    def __init__(
        self,
        *,
        modality: str = "image",
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        allow_random_init: bool = False,
        seed: int = 0,
        normalize: bool = True,
        device: str = "cpu",
        model_config: str | None = None,
    ) -> None:
        if modality not in ("image", "text"):
            raise EncoderError(f"open_clip: modality must be 'image' or 'text', got {modality!r}")
        open_clip = _open_clip(model_config)
        if model not in open_clip.list_models():
            raise EncoderError(
                f"open_clip: unknown architecture {model!r}; e.g. {open_clip.list_models()[:5]} "
                "(or give model_config: <path to a JSON config named after the model>)"
            )
        self.modality, self.model_name, self.seed = modality, model, int(seed)
        self.normalized, self.device, self.model_config = normalize, device, model_config
        self.dim = int(open_clip.get_model_config(model)["embed_dim"])
        self.arch = (
            f"cfg@{file_checksum(model_config)}"
            if model_config and Path(model_config).is_file()
            else "builtin"
        )
        self._checkpoint: str | None = None
        self._tag: str | None = None
        self.weights = self._resolve(open_clip, pretrained, allow_random_init)
        self._net = self._preprocess = self._tokenizer = None

    def _resolve(self, open_clip: Any, pretrained: str | None, allow_random: bool) -> str:
        """Decide the weights without loading them: a tag, a checksummed file, or random init."""
        if not pretrained:
            if not allow_random:
                raise EncoderError(
                    f"open_clip {self.model_name}: no pretrained weights given and allow_random_init is false"
                )
            return f"random-init(seed={self.seed})"
        cfg = open_clip.get_pretrained_cfg(self.model_name, pretrained)
        if cfg:
            why = _tag_available(open_clip, cfg)
            if why is None:
                self._tag = pretrained
                return pretrained
            if not allow_random:
                raise EncoderError(
                    f"open_clip {self.model_name}: cannot get pretrained weights {pretrained!r}: {why}. "
                    "Give a local checkpoint path, or set allow_random_init: true for a demo."
                )
            log.warning(
                "open_clip %s: weights %r unavailable (%s); using RANDOM weights",
                self.model_name,
                pretrained,
                why,
            )
            return f"random-init(seed={self.seed}; '{pretrained}' unavailable offline)"
        path = Path(pretrained)
        if path.is_file():
            self._checkpoint = str(path)
            return f"file:{path.name}@{file_checksum(path)}"
        if path.suffix in _CHECKPOINT_SUFFIXES or os.sep in pretrained:
            raise EncoderError(f"open_clip {self.model_name}: checkpoint file {pretrained!r} does not exist")
        tags = open_clip.list_pretrained_tags_by_model(self.model_name)
        if not allow_random:
            raise EncoderError(
                f"open_clip {self.model_name}: {pretrained!r} is neither a known tag {tags} nor a file"
            )
        return f"random-init(seed={self.seed}; '{pretrained}' unknown)"

    @property
    def id(self) -> str:
        norm = "l2" if self.normalized else "raw"
        parts = (self.model_name, self.arch, self.modality, self.weights, norm, PREPROCESS_VERSION)
        return "open_clip:" + ":".join(parts)

    @property
    def loaded(self) -> bool:
        return self._net is not None

    def load(self) -> None:
        if self._net is not None:
            return
        import torch

        open_clip = _open_clip(self.model_config)
        if self._checkpoint or self._tag:
            try:
                net, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self._checkpoint or self._tag, require_pretrained=True
                )
            except Exception as e:  # noqa: BLE001 - torch/open_clip raise many types for a bad file
                raise EncoderError(
                    f"open_clip {self.model_name}: cannot load weights {self._checkpoint or self._tag!r}: {e}"
                ) from e
        else:
            torch.manual_seed(self.seed)
            net, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=None)
        net.eval().to(self.device)
        self._net, self._preprocess = net, preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model_name)
        self._torch = torch

    def preprocess(self, image: Any) -> Any:
        """open_clip's own resize/crop/normalise for one RGB PIL image."""
        self.load()
        return self._preprocess(image)

    def truncation(self, batch: Sequence[Any]) -> list[str | None]:
        if self.modality != "text":
            return [None] * len(batch)
        self.load()
        tok, ctx = self._tokenizer, int(getattr(self._tokenizer, "context_length", 77))
        if not hasattr(tok, "encode"):
            return [None] * len(batch)
        counts = [len(tok.encode(t)) + 2 for t in batch]  # + start and end tokens
        return [f"{n} tokens > context_length {ctx}, cut" if n > ctx else None for n in counts]

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        self.load()
        torch = self._torch
        with torch.inference_mode():
            if self.modality == "text":
                x = self._net.encode_text(self._tokenizer(list(batch)).to(self.device))
            else:
                pixels = [b if isinstance(b, torch.Tensor) else self._preprocess(b) for b in batch]
                x = self._net.encode_image(torch.stack(pixels).to(self.device))
            if self.normalized:
                x = torch.nn.functional.normalize(x, dim=-1)
        return x.float().cpu().numpy()
