"""Hugging Face language-model features: a decoder or encoder model's hidden states, pooled.

The item text is put into a prompt template, tokenised up to ``max_length`` tokens, run
through ``AutoModel`` and the last hidden layer is pooled (``mean`` over real tokens, or
the ``last`` real token, the usual choice for decoder LLMs). Weights come from a local
folder or a hub id already in the local cache; the checksum of the whole folder (weights,
configs, tokenizer, and the ``*.py`` files ``trust_remote_code`` would run) goes into the id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import EncoderError, FolderEncoder, register
from features.encoders.sentence import hub_snapshot, model_label

PREPROCESS_VERSION = "llm-1"
POOLINGS = ("mean", "last")
DTYPES = ("float32", "bfloat16", "float16")


def _code_outside(folder: Path) -> list[str]:
    """``auto_map`` references (``org/repo--module.Class``) whose code lives outside ``folder``."""
    refs: list[str] = []
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((folder / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for v in auto_map.values():
            refs += [r for r in (v if isinstance(v, list) else [v]) if isinstance(r, str) and "--" in r]
    return sorted(set(refs))


@register("hf-llm")
class HFLanguageModelEncoder(FolderEncoder):
    modality = "text"
    libraries = ("torch", "transformers", "tokenizers", "numpy")

    def __init__(
        self,
        *,
        model: str,
        pooling: str = "mean",
        prompt: str = "{text}",
        max_length: int = 512,
        normalize: bool = True,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if pooling not in POOLINGS:
            raise EncoderError(f"hf-llm: pooling must be one of {POOLINGS}, got {pooling!r}")
        if "{text}" not in prompt:
            raise EncoderError(f"hf-llm: prompt {prompt!r} must contain the placeholder {{text}}")
        if dtype not in DTYPES:
            raise EncoderError(f"hf-llm: dtype must be one of {DTYPES}, got {dtype!r}")
        self.model_name, self.pooling, self.prompt = model, pooling, prompt
        self.max_length, self.normalized, self.dtype = int(max_length), normalize, dtype
        self.device, self.trust_remote_code = device, trust_remote_code
        self.path = model if Path(model).is_dir() else hub_snapshot(model)
        if self.path is None:
            raise EncoderError(
                f"hf-llm: model {model!r} is neither a local folder nor a hub id in the local cache "
                "(offline runs cannot download; save_pretrained it to a folder and give that path)"
            )
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        except Exception as e:  # noqa: BLE001 - a broken folder fails in many ways
            raise EncoderError(f"hf-llm: cannot read the config of {model!r} at {self.path}: {e}") from e
        dim = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if not dim:
            raise EncoderError(f"hf-llm: config of {model!r} has no hidden_size")
        self.dim = int(dim)
        self.weights = self._hash_folder(Path(self.path).name if Path(model).is_dir() else model)

    def id_parts(self) -> tuple[str, ...]:
        prompt = hashlib.sha256(self.prompt.encode()).hexdigest()[:8]
        return (
            model_label(self.model_name),
            self.weights,
            self.pooling,
            f"len{self.max_length}",
            f"prompt@{prompt}",
            self.norm,
            self.dtype,
            PREPROCESS_VERSION,
            *(("remote-code",) if self.trust_remote_code else ()),
        )

    def key_parts(self) -> dict[str, Any]:
        return {**super().key_parts(), "trust_remote_code": self.trust_remote_code}

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "trust_remote_code": self.trust_remote_code}
        if self.trust_remote_code:  # what may run: the folder checksum covers these files
            out["code_files"] = self.tree.code_files
            outside = _code_outside(Path(self.path))
            if outside:  # auto_map entries naming another repository: not in the checksum
                out["code_outside_folder"] = outside
        return out

    def _load(self) -> tuple[Any, Any, Any]:
        import torch
        from transformers import AutoModel, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
            model = AutoModel.from_pretrained(
                self.path, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code
            )
        except Exception as e:  # noqa: BLE001 - one clear message for any loading failure
            raise EncoderError(f"hf-llm: cannot load {self.model_name!r} from {self.path}: {e}") from e
        if tok.pad_token is None:  # decoder LLMs often ship without one; padding is masked anyway
            tok.pad_token = tok.eos_token or tok.unk_token
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        return torch, tok, model.eval().to(self.device)

    def _prompted(self, batch: Sequence[str]) -> list[str]:
        return [self.prompt.replace("{text}", t) for t in batch]

    def truncation(self, batch: Sequence[str]) -> list[str | None]:
        self.load()
        ids = self._resource[1](self._prompted(batch), truncation=False)["input_ids"]
        m = self.max_length
        return [f"{len(t)} tokens > max_length {m}, cut" if len(t) > m else None for t in ids]

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        self.load()
        torch, tok, model = self._resource
        enc = tok(
            self._prompted(batch),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        mask = enc["attention_mask"].to(self.device)
        with torch.inference_mode():
            out = model(input_ids=enc["input_ids"].to(self.device), attention_mask=mask)
            hidden = out.last_hidden_state.float()
            if self.pooling == "mean":
                m = mask.unsqueeze(-1).to(hidden.dtype)
                x = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            else:  # the last real token, whichever side the tokenizer pads
                positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
                last = (positions * mask).argmax(dim=1)
                x = hidden[torch.arange(hidden.shape[0]), last]
            if self.normalized:
                x = torch.nn.functional.normalize(x, dim=-1)
        return x.cpu().numpy().astype(np.float32, copy=False)
