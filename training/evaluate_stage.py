"""Evaluate stage: full ranking on test (train items masked) for every trained model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.data import load_train_data
from training.loop import TrainConfig
from training.metrics import evaluate
from training.models import build_model

log = logging.getLogger(__name__)


def load_model(models_dir: Path, name: str, data: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    path = models_dir / name / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint for model {name!r}; run the train stage")
    ckpt = torch.load(path, weights_only=False)
    cfg = TrainConfig(**ckpt["config"])
    model = build_model(name, data, cfg.hparams)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, ckpt


def run(
    params: dict[str, Any], store: Path, graphs: Path, models_dir: Path, out_metrics: Path, per_user_dir: Path
) -> dict[str, Any]:
    ks = list(params["evaluate"]["ks"])
    chunk = int(params["evaluate"]["chunk_size"])
    names = list(params["train"]["models"])
    feats = list(params["extract"]["features"])
    base = load_train_data(store, feats, graphs)
    per_user_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in names:
        data = base
        model, ckpt = load_model(models_dir, name, data)
        with torch.no_grad():
            ue, ie = model.embeddings()
        test, per_user, users = evaluate(
            ue, ie, data.test, data.train, data.n_users, ks, chunk, return_per_user=True
        )
        valid = evaluate(ue, ie, data.valid, data.train, data.n_users, ks, chunk)
        results[name] = {
            "test": {k: round(v, 6) if isinstance(v, float) else v for k, v in test.items()},
            "valid": {k: round(v, 6) if isinstance(v, float) else v for k, v in valid.items()},
            "best_epoch": ckpt["best_epoch"],
        }
        pq.write_table(
            pa.table({"user_idx": users, **{k: v.astype(np.float32) for k, v in per_user.items()}}),
            per_user_dir / f"{name}.parquet",
        )
        log.info(
            "evaluate %s: test %s", name, ", ".join(f"{k}={v:.4f}" for k, v in test.items() if k != "users")
        )
    out_metrics.parent.mkdir(parents=True, exist_ok=True)
    out_metrics.write_text(json.dumps(results, indent=2) + "\n")
    return results
