"""Model checkpoints: one way to write them, one way to read them back.

A checkpoint is a ``torch.save``d dict holding only tensors and plain values (dict,
list, tuple, str, int, float, bool, None): ``model_state`` (the weights), ``config``
(``TrainConfig`` as a dict: ``model``, ``hparams``, ...), ``best_epoch``, ``best_valid``
and whatever else the writer adds. It is read with ``torch.load(weights_only=True)``,
so a file that would run code when unpickled is refused before anything runs.

The train stage's ``models/<model>/model.pt`` also holds what the next snapshot needs to
warm-start from it (``training.warm_start.checkpoint_extras``): ``ids`` (``users`` and
``items``: the raw ids, lists of str, in index order), ``features`` (the feature tables
read) and ``feature_digests`` (one int64 tensor per table, a digest per item row).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from features.errors import PlatformError
from training.data import TrainData
from training.models import Recommender, build_model

REQUIRED_KEYS = ("model_state", "config", "best_epoch", "best_valid")
_PLAIN = (str, int, float, bool, type(None))
_EXPECTED = (
    "a torch.save'd dict of tensors and plain values (dict/list/tuple/str/int/float/bool/None) "
    f"with keys {list(REQUIRED_KEYS)}, as training.checkpoint.save_checkpoint writes"
)


class CheckpointError(PlatformError, ValueError):
    """A checkpoint that is missing, unreadable, refused as unsafe, or not what was expected."""


def _check_plain(value: Any, where: str) -> None:
    """Refuse, before writing, what ``torch.load(weights_only=True)`` would refuse to read."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise CheckpointError(
                    f"checkpoint {where}: key {k!r} is a {type(k).__name__}; expected str or int"
                )
            _check_plain(v, f"{where}.{k}")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"checkpoint {where}: a {type(value).__module__}.{type(value).__qualname__} cannot be loaded "
        "with weights_only=True; expected a tensor or a plain value (dict/list/tuple/str/int/float/bool/None)"
    )


def save_checkpoint(
    path: Path,
    *,
    model_state: dict[str, torch.Tensor],
    config: dict[str, Any],
    best_epoch: int,
    best_valid: float,
    **extra: Any,
) -> None:
    """Write a checkpoint atomically: a temporary file in ``path``'s folder, then
    ``os.replace`` (a reader sees the old file or the new one, never half of one).
    Contents that could not be read back with ``weights_only=True`` are refused."""
    path = Path(path)
    state = {
        "model_state": model_state,
        "config": config,
        "best_epoch": int(best_epoch),
        "best_valid": float(best_valid),
        **extra,
    }
    for key, value in state.items():
        _check_plain(value, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unpickler_reason(e: Exception) -> str:
    """The line of torch's weights-only refusal that says what was refused."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(boilerplate)]
    return (useful or lines or [type(e).__name__])[0]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True``; any failure (no such file,
    unpickling refused, a corrupt or foreign file) is a ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file; expected {_EXPECTED}")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path}: refused by the weights-only unpickler ({_unpickler_reason(e)}): it holds "
            "objects only a full unpickle, which could run code, would rebuild, or it is damaged; "
            f"expected {_EXPECTED}"
        ) from e
    except Exception as e:  # RuntimeError/EOFError/... (corrupt, truncated, not torch's format), OSError
        lines = str(e).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path}: unreadable ({type(e).__name__}: {lines[0] if lines else 'no detail'}); "
            f"expected {_EXPECTED}"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(ckpt).__name__}; expected {_EXPECTED}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {missing}; expected {_EXPECTED}")
    return ckpt


def load_model(path: Path, data: TrainData) -> tuple[Recommender, dict[str, Any]]:
    """The checkpoint's model rebuilt on ``data`` (``config.model`` with ``config.hparams``),
    its weights loaded, in eval mode; and the checkpoint itself."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if not isinstance(config, dict) or "model" not in config or "hparams" not in config:
        raise CheckpointError(
            f"checkpoint {path}: config has no 'model' and 'hparams'; expected the TrainConfig dict"
        )
    try:
        model = build_model(config["model"], data, config["hparams"])
        model.load_state_dict(ckpt["model_state"])
    except (PlatformError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path}: does not fit model {config['model']!r} built on this data ({e}); "
            "expected a checkpoint trained on the same users, items and feature tables"
        ) from e
    model.eval()
    return model, ckpt
