"""Train stage: every model in ``train.models``, through Ray Train or in-process."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from training.data import load_train_data
from training.loop import LocalContext, TrainConfig, train
from training.models.base import model_class

log = logging.getLogger(__name__)


def train_one(name: str, params: dict[str, Any], store: Path, graphs: Path) -> dict[str, Any]:
    tp = params["train"]
    cfg = TrainConfig.from_params(name, tp, params["evaluate"]["ks"])
    features = list(params["extract"]["features"]) if model_class(name).needs_features else []
    backend = tp.get("backend", "ray")
    if backend == "ray":
        from training.ray_train import fit

        return fit(
            cfg,
            store=store,
            features=features,
            graphs=graphs,
            workers=int(tp["workers"]),
            ray_params=tp.get("ray", {}),
        )
    if backend != "local":
        raise ValueError(f"params.yaml train.backend: expected 'ray' or 'local', got {backend!r}")
    data = load_train_data(store, features, graphs)
    ctx = LocalContext()
    train(cfg, data, ctx)
    assert ctx.final_state is not None
    return ctx.final_state


def run(
    params: dict[str, Any], store: Path, graphs: Path, models_dir: Path, curves_dir: Path
) -> dict[str, Any]:
    summary = {}
    curves_dir.mkdir(parents=True, exist_ok=True)
    for name in params["train"]["models"]:
        model_class(name)  # unknown names fail before any training starts
        t0 = time.time()
        state = train_one(name, params, store, graphs)
        out = models_dir / name
        out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model_state": state["model_state"],
                "config": state["config"],
                "best_epoch": state["best_epoch"],
                "best_valid": state["best_valid"],
            },
            out / "model.pt",
        )
        history = state["history"]
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        (curves_dir / f"{name}.json").write_text(
            json.dumps(
                [
                    {"epoch": r["epoch"], "loss": r["loss"], "valid_recall@20": r.get("valid_recall@20")}
                    for r in history
                ],
                indent=1,
            )
            + "\n"
        )
        epochs = len(history)
        summary[name] = {
            "best_epoch": state["best_epoch"],
            "best_valid": state["best_valid"],
            "epochs": epochs,
            "seconds": round(time.time() - t0, 1),
            "seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(1, epochs), 4),
        }
        log.info(
            "train %s: best valid %.4f at epoch %d of %d (%.1fs)",
            name,
            state["best_valid"],
            state["best_epoch"],
            epochs,
            time.time() - t0,
        )
    return summary
