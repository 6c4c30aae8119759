"""open_clip image and text towers, any architecture, weights by tag or local path."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import Encoder, EncoderError, register

log = logging.getLogger(__name__)
PREPROCESS_VERSION = "oc-1"


def load_open_clip(
    model: str, pretrained: str | None, allow_random_init: bool, seed: int, model_config: str | None = None
) -> tuple[Any, Any, Any, str]:
    """(model, image preprocess, tokenizer, weights description).

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local
    checkpoint path. When it cannot be loaded and ``allow_random_init`` is set, the
    model is initialised randomly from ``seed`` and that is recorded as the weights.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip
    import torch

    if model_config:
        # A custom architecture: a JSON config (or a folder of them) named after the model.
        if not Path(model_config).exists():
            raise EncoderError(f"open_clip: model_config {model_config!r} does not exist")
        open_clip.add_model_config(model_config)
    if model not in open_clip.list_models():
        raise EncoderError(f"open_clip: unknown architecture {model!r}; e.g. {open_clip.list_models()[:5]}")
    weights = "random-init"
    net = preprocess = None
    if pretrained:
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, require_pretrained=True
            )
            weights = pretrained if not Path(pretrained).exists() else f"file:{Path(pretrained).name}"
        except Exception as e:  # noqa: BLE001 - download/loading errors come in many types
            if not allow_random_init:
                raise EncoderError(
                    f"open_clip {model}: cannot load pretrained weights {pretrained!r}: {e}. "
                    "Give a local checkpoint path, or set allow_random_init: true for a demo."
                ) from e
            log.warning(
                "open_clip %s: weights %r unavailable (%s); using RANDOM weights", model, pretrained, e
            )
            weights = f"random-init(seed={seed}; '{pretrained}' unavailable offline)"
    if net is None:
        if not allow_random_init:
            raise EncoderError(
                f"open_clip {model}: no pretrained weights given and allow_random_init is false"
            )
        torch.manual_seed(seed)
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None)
        if not weights.startswith("random-init("):
            weights = f"random-init(seed={seed})"
    net.eval()
    return net, preprocess, open_clip.get_tokenizer(model), weights


class _OpenClipBase(Encoder):
    def __init__(
        self,
        *,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        allow_random_init: bool = False,
        seed: int = 0,
        normalize: bool = True,
        device: str = "cpu",
        model_config: str | None = None,
    ) -> None:
        import torch

        self._torch = torch
        self.model_name = model
        self.pretrained = pretrained
        self._net, self._preprocess, self._tokenizer, self.weights = load_open_clip(
            model, pretrained, allow_random_init, seed, model_config
        )
        self.device = device
        self._net.to(device)
        self.normalized = normalize
        self.dim = (
            int(self._net.text_projection.shape[1])
            if hasattr(self._net, "text_projection") and self._net.text_projection is not None
            else int(self._probe_dim())
        )

    def _probe_dim(self) -> int:
        return int(self._net.visual.output_dim)

    @property
    def id(self) -> str:
        return f"open_clip:{self.model_name}:{self.modality}:{self.weights}:{PREPROCESS_VERSION}"

    def _finish(self, x: Any) -> np.ndarray:
        if self.normalized:
            x = self._torch.nn.functional.normalize(x, dim=-1)
        return x.float().cpu().numpy()


@register("open_clip")
class OpenClipEncoder(_OpenClipBase):
    """``modality: image`` (default) embeds PIL images; ``modality: text`` embeds strings."""

    def __init__(self, *, modality: str = "image", **kwargs: Any) -> None:
        if modality not in ("image", "text"):
            raise EncoderError(f"open_clip: modality must be 'image' or 'text', got {modality!r}")
        self.modality = modality
        super().__init__(**kwargs)

    def preprocess(self, image: Any) -> Any:
        """open_clip's own resize/crop/normalise for one RGB PIL image."""
        return self._preprocess(image)

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            if self.modality == "text":
                x = self._net.encode_text(self._tokenizer(list(batch)).to(self.device))
            else:
                pixels = [b if isinstance(b, torch.Tensor) else self._preprocess(b) for b in batch]
                x = self._net.encode_image(torch.stack(pixels).to(self.device))
        return self._finish(x)
