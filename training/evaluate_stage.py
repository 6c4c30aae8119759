"""Evaluate stage: full ranking on test (train items masked) for every trained model,
with coverage, popularity buckets, few-interaction users and paired tests between models."""

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
from training.metrics import DEFAULT_CHUNK_MB, evaluate, rank
from training.models import build_model
from training.significance import compare_models

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
    params: dict[str, Any],
    store: Path,
    graphs: Path,
    models_dir: Path,
    out_metrics: Path,
    per_user_dir: Path,
    significance_path: Path | None = None,
) -> dict[str, Any]:
    """Test (and valid) metrics per model -> ``out_metrics``; per-user test metrics ->
    ``per_user_dir/<model>.parquet``; paired tests between every two models ->
    ``significance_path`` (default: ``significance.json`` beside ``out_metrics``)."""
    ev = params["evaluate"]
    ks = list(ev["ks"])
    chunk = int(ev["chunk_size"])
    options = {
        "max_chunk_mb": ev.get("chunk_memory_mb", DEFAULT_CHUNK_MB),
        "popularity_split": ev.get("popularity_split"),
        "few_train_max": ev.get("few_train_max"),
    }
    names = list(params["train"]["models"])
    feats = list(params["extract"]["features"])
    data = load_train_data(store, feats, graphs)
    train_counts = np.bincount(data.train.users, minlength=data.n_users)
    per_user_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    compared: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for name in names:
        model, ckpt = load_model(models_dir, name, data)
        with torch.no_grad():
            ue, ie = model.embeddings()
        test = rank(ue, ie, data.test, data.train, data.n_users, ks, chunk, **options)
        valid = evaluate(
            ue, ie, data.valid, data.train, data.n_users, ks, chunk, max_chunk_mb=options["max_chunk_mb"]
        )
        summary = test.summary()
        results[name] = {
            "test": {k: v for k, v in summary.items() if not isinstance(v, dict)},
            "valid": {k: round(v, 6) if isinstance(v, float) else v for k, v in valid.items()},
            "best_epoch": ckpt["best_epoch"],
            "test_breakdown": {k: v for k, v in summary.items() if isinstance(v, dict)},
        }
        compared[name] = (test.users, test.per_user)
        pq.write_table(
            pa.table(
                {
                    "user_idx": test.users,
                    "train_items": train_counts[test.users],
                    **{k: v.astype(np.float32) for k, v in test.per_user.items()},
                }
            ),
            per_user_dir / f"{name}.parquet",
        )
        log.info(
            "evaluate %s: test %s; coverage %s",
            name,
            ", ".join(f"{k}={v:.4f}" for k, v in test.means.items() if k != "users"),
            test.coverage,
        )
    out_metrics.parent.mkdir(parents=True, exist_ok=True)
    out_metrics.write_text(json.dumps(results, indent=2) + "\n")
    sig = ev.get("significance") or {}
    comparison = compare_models(
        compared,
        list(sig.get("metrics", [f"recall@{max(ks)}", f"ndcg@{max(ks)}"])),
        n_boot=int(sig.get("bootstrap", 1000)),
        alpha=float(sig.get("alpha", 0.05)),
        seed=int(sig.get("seed", params.get("seed", 0))),
    )
    significance_path = significance_path or out_metrics.parent / "significance.json"
    significance_path.write_text(json.dumps(comparison, indent=2) + "\n")
    for row in comparison["pairs"]:
        log.info(
            "%s vs %s %s: diff %+.4f [%.4f, %.4f], Wilcoxon p=%.3g (Holm %.3g)",
            row["a"],
            row["b"],
            row["metric"],
            row["diff"],
            row["ci_low"],
            row["ci_high"],
            row["p_wilcoxon"],
            row["p_wilcoxon_holm"],
        )
    return results
