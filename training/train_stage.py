"""Train stage: every model in ``train.models``, through Ray Train or in-process.

Per model: every configuration of its grid (``training.selection``) with every seed in
``train.seeds``; the configuration with the best mean valid metric is chosen, its best
seed's checkpoint is saved as ``models/<name>/model.pt`` and its test metrics (mean and
std over seeds) go to ``models/<name>/selection.json``. The default params are one
configuration and one seed, i.e. one run per model.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from training.data import TrainData, load_train_data
from training.loop import LocalContext, TrainConfig, train
from training.metrics import evaluate
from training.models import build_model
from training.models.base import model_class
from training.selection import ConfigResult, aggregate, choose, expand_grid, make_config, seeds_of

log = logging.getLogger(__name__)


class _DataCache:
    """Loads the store once per feature set (local training and test evaluation)."""

    def __init__(self, store: Path, graphs: Path) -> None:
        self.store, self.graphs = store, graphs
        self._cache: dict[tuple[str, ...], TrainData] = {}

    def get(self, features: list[str]) -> TrainData:
        key = tuple(features)
        if key not in self._cache:
            self._cache[key] = load_train_data(self.store, features, self.graphs)
        return self._cache[key]


def model_features(name: str, params: dict[str, Any]) -> list[str]:
    return list(params["extract"]["features"]) if model_class(name).needs_features else []


def train_config(
    cfg: TrainConfig, params: dict[str, Any], features: list[str], cache: _DataCache
) -> dict[str, Any]:
    """One run; returns the final state (best weights as ``model_state``, history, ...)."""
    tp = params["train"]
    backend = tp.get("backend", "ray")
    if backend == "ray":
        from training.ray_train import fit

        return fit(
            cfg,
            store=cache.store,
            features=features,
            graphs=cache.graphs,
            workers=int(tp["workers"]),
            ray_params=tp.get("ray", {}),
        )
    if backend != "local":
        raise ValueError(f"params.yaml train.backend: expected 'ray' or 'local', got {backend!r}")
    if tp.get("threads"):
        torch.set_num_threads(int(tp["threads"]))
    ctx = LocalContext()
    train(cfg, cache.get(features), ctx)
    assert ctx.final_state is not None
    return ctx.final_state


def train_one(name: str, params: dict[str, Any], store: Path, graphs: Path) -> dict[str, Any]:
    """Train ``name`` with the first configuration of its section and ``train.seed``."""
    cfg = TrainConfig.from_params(name, params["train"], params["evaluate"]["ks"])
    cfg = make_config(cfg, expand_grid(params["train"].get(name))[0], cfg.seed)
    return train_config(cfg, params, model_features(name, params), _DataCache(store, graphs))


def _metrics_of(state: dict[str, Any], name: str, data: TrainData, cfg: TrainConfig) -> dict[str, Any]:
    """Valid and test metrics of a run's best weights (full ranking, train items masked)."""
    model = build_model(name, data, cfg.hparams)
    model.load_state_dict(state["model_state"])
    model.eval()
    with torch.no_grad():
        ue, ie = model.embeddings()
    out = {}
    for split, truth in (("valid", data.valid), ("test", data.test)):
        out[split] = evaluate(ue, ie, truth, data.train, data.n_users, cfg.ks, cfg.eval_chunk_size)
    return out


def select_model(
    name: str, params: dict[str, Any], cache: _DataCache
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grid x seeds for one model: (state of the saved run, selection report)."""
    tp = params["train"]
    base = TrainConfig.from_params(name, tp, params["evaluate"]["ks"])
    features = model_features(name, params)
    configs, seeds = expand_grid(tp.get(name)), seeds_of(tp)
    best: ConfigResult | None = None
    results: list[ConfigResult] = []
    for i, config in enumerate(configs):
        res = ConfigResult(config=config)
        for seed in seeds:
            cfg = make_config(base, config, seed)
            log.info("train %s: config %d/%d %s, seed %d", name, i + 1, len(configs), config, seed)
            state = train_config(cfg, params, features, cache)
            res.seeds.append(seed)
            res.valid.append(float(state["best_valid"]))
            res.best_epochs.append(int(state["best_epoch"]))
            res.states.append(state)
        results.append(res)
        if best is None or res.valid_mean > best.valid_mean:
            best = res
        else:
            res.states = []  # only the leading configuration's weights are kept in memory
    chosen = choose(results)
    best = results[chosen]
    data = cache.get(features)
    per_seed = [
        _metrics_of(s, name, data, TrainConfig(**{**s["config"], "ks": tuple(s["config"]["ks"])}))
        for s in best.states
    ]
    report = {
        "model": name,
        "valid_metric": base.valid_metric,
        "seeds": seeds,
        "chosen": chosen,
        "chosen_config": best.config,
        "saved_seed": best.seeds[best.best_seed_index()],
        "configs": [r.summary() for r in results],
        "valid": aggregate([m["valid"] for m in per_seed]),
        "test": aggregate([m["test"] for m in per_seed]),
        "test_per_seed": [{k: v for k, v in m["test"].items()} for m in per_seed],
    }
    return best.states[best.best_seed_index()], report


def _write_outputs(
    name: str, state: dict[str, Any], report: dict[str, Any], models_dir: Path, curves_dir: Path
) -> None:
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
    (out / "selection.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
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


def run(
    params: dict[str, Any], store: Path, graphs: Path, models_dir: Path, curves_dir: Path
) -> dict[str, Any]:
    summary = {}
    curves_dir.mkdir(parents=True, exist_ok=True)
    names = list(params["train"]["models"])
    for name in names:
        model_class(name)  # unknown names fail before any training starts
        expand_grid(params["train"].get(name))  # and so do malformed grids
    seeds_of(params["train"])
    cache = _DataCache(store, graphs)
    for name in names:
        t0 = time.time()
        state, report = select_model(name, params, cache)
        _write_outputs(name, state, report, models_dir, curves_dir)
        history = state["history"]
        epochs = len(history)
        summary[name] = {
            "best_epoch": state["best_epoch"],
            "best_valid": state["best_valid"],
            "epochs": epochs,
            "seconds": round(time.time() - t0, 1),
            "seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(1, epochs), 4),
            "configs": len(report["configs"]),
            "seeds": report["seeds"],
            "chosen_config": report["chosen_config"],
            "test_mean": {k: round(v["mean"], 6) for k, v in report["test"].items()},
            "test_std": {k: round(v["std"], 6) for k, v in report["test"].items()},
        }
        log.info(
            "train %s: chose %s (valid %s %.4f over %d seed(s)); test recall@20 %s",
            name,
            report["chosen_config"],
            report["valid_metric"],
            report["configs"][report["chosen"]]["valid"]["mean"],
            len(report["seeds"]),
            summary[name]["test_mean"].get("recall@20"),
        )
    return summary
