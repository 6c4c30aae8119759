"""open_clip image and text towers, any architecture, weights by tag or local checkpoint path.

Which weights will be used is decided when the encoder is built (cheap: a tag is looked up
in the local cache, a file is checksummed — a tag's cached file too, so a re-downloaded or
replaced file changes the id); the model itself is created in ``load()``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import Encoder, EncoderError, register
from features.encoders.weights import file_checksum, weights_checksum

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


def _tag_file(cfg: dict[str, Any]) -> tuple[Path | None, str | None]:
    """(the local file a known tag's weights load from, or None; why they cannot be had, or None).

    ``(None, None)``: not cached yet but downloadable (online); the checksum is unknown.
    """
    from open_clip import pretrained as ocp

    try:
        if cfg.get("file"):
            path = Path(cfg["file"])
            return (path, None) if path.is_file() else (None, f"file {cfg['file']} missing")
        if cfg.get("hf_hub") and ocp.has_hf_hub():
            model_id, filename = os.path.split(cfg["hf_hub"])
            got = ocp.download_pretrained_from_hf(
                model_id, filename=filename or "open_clip_pytorch_model.bin"
            )
            return Path(got), None
        if cfg.get("url"):
            cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
            if cached.is_file():
                return cached, None
            if os.environ.get("HF_HUB_OFFLINE") != "1":
                return None, None
            return None, "not in the local cache and HF_HUB_OFFLINE=1"
    except Exception as e:  # noqa: BLE001 - offline/cache misses come in many types
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    return None, "no download source"


@register("open_clip")
class OpenClipEncoder(Encoder):
    """``modality: image`` (default) embeds PIL images; ``modality: text`` embeds strings.

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local
    checkpoint path (its checksum goes into the id). When a tag cannot be had offline and
    ``allow_random_init`` is set, the model is initialised randomly from ``seed`` and that
    is recorded as the weights; a missing local path is always an error.
    """

    libraries = ("torch", "torchvision", "open_clip_torch", "Pillow", "numpy")

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
        # A custom architecture's config (a file or a folder of them) is part of the id.
        self.arch = f"cfg@{weights_checksum(model_config)}" if model_config else "builtin"
        self._checkpoint: str | None = None
        self._tag: str | None = None
        self.weights = self._resolve(open_clip, pretrained, allow_random_init)

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
            found, why = _tag_file(cfg)
            if why is None:
                self._tag = pretrained
                if found is None:  # downloaded on load: the id changes once it is cached
                    return f"{pretrained}(not cached yet: checksum unknown)"
                return f"{pretrained}@{file_checksum(found)}"
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

    def id_parts(self) -> tuple[str, ...]:
        return (self.model_name, self.arch, self.modality, self.weights, self.norm, PREPROCESS_VERSION)

    def _load(self) -> tuple[Any, Any, Any]:
        """(network, image preprocessing, tokenizer)."""
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
        return net, preprocess, open_clip.get_tokenizer(self.model_name)

    def preprocess(self, image: Any) -> Any:
        """open_clip's own resize/crop/normalise for one RGB PIL image."""
        self.load()
        return self._resource[1](image)

    def truncation(self, batch: Sequence[Any]) -> list[str | None]:
        if self.modality != "text":
            return [None] * len(batch)
        self.load()
        tok = self._resource[2]
        ctx = int(getattr(tok, "context_length", 77))
        if not hasattr(tok, "encode"):
            return [None] * len(batch)
        counts = [len(tok.encode(t)) + 2 for t in batch]  # + start and end tokens
        return [f"{n} tokens > context_length {ctx}, cut" if n > ctx else None for n in counts]

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        self.load()
        net, preprocess, tokenizer = self._resource
        with torch.inference_mode():
            if self.modality == "text":
                x = net.encode_text(tokenizer(list(batch)).to(self.device))
            else:
                pixels = [b if isinstance(b, torch.Tensor) else preprocess(b) for b in batch]
                x = net.encode_image(torch.stack(pixels).to(self.device))
            if self.normalized:
                x = torch.nn.functional.normalize(x, dim=-1)
        return x.float().cpu().numpy()
