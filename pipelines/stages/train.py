"""Train stage: every model in ``train.models``, through Ray Train or in-process.

Per model: every configuration of its grid (``training.selection``) with every seed in
``train.seeds``; the configuration with the best mean valid metric is chosen, its best
seed's checkpoint is saved as ``models/<name>/model.pt`` and its test metrics (mean and
std over seeds) go to ``models/<name>/selection.json``. The default params are one
configuration and one seed, i.e. one run per model.

With ``train.warm_start.enabled`` a run whose model and hyper-parameters match the
previous snapshot's ``models/<name>/model.pt`` starts from those weights (rows mapped by
raw id, ``training.warm_start``) with the warm budget's epochs and patience; any other run
trains cold and the log says why. ``model.pt`` records the raw ids it was trained on, and
``selection.json`` and the train summary whether each run was warm or cold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import torch

from evaluation.metrics import evaluate
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.stages.common import data_source, model_features
from training.checkpoint import save_checkpoint
from training.data import TrainData, load_train_data
from training.loop import LocalContext, TrainConfig, train
from training.models.base import model_class
from training.selection import ConfigResult, aggregate, choose, expand_grid, make_config, seeds_of
from training.sequential import check_task, ranking_inputs
from training.warm_start import checkpoint_extras, cold_report, describe, plan

log = logging.getLogger(__name__)


class _DataCache:
    """Loads the store once per feature set (local training and test evaluation)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: dict[tuple[str, ...], TrainData] = {}

    def get(self, features: list[str]) -> TrainData:
        key = tuple(features)
        if key not in self._cache:
            self._cache[key] = load_train_data(data_source(self.layout, features))
        return self._cache[key]


def data_fingerprint(layout: Layout, features: list[str]) -> str:
    """The training data's identity from the manifests the stage reads: the split hash and
    row counts of interactions, items and users, and each feature table's (and graph's)
    cache key and row count. ``--resume`` continues only a checkpoint of the same data."""
    from features.store import MANIFEST, read_manifest

    def facts(path: Any, *keys: str) -> dict[str, Any]:
        if not (path / MANIFEST).exists():
            return {"missing": True}
        m = read_manifest(path)
        return {k: m.get(k) for k in ("row_count", *keys)}

    parts = {
        "interactions": facts(layout.interactions(), "split_hash"),
        "items": facts(layout.items()),
        "users": facts(layout.users()),
        "features": {n: facts(layout.feature(n), "cache_key") for n in sorted(features)},
        "graphs": {n: facts(layout.graph(n), "k") for n in sorted(features)},
    }
    return json.dumps(parts, sort_keys=True, default=str)


def train_config(cfg: TrainConfig, config: Config, features: list[str], cache: _DataCache) -> dict[str, Any]:
    """One run; returns the final state (best weights as ``model_state``, history, ...)."""
    tp = config.train
    if tp.backend == "ray":
        from training.ray_train import fit

        return fit(
            cfg,
            source=data_source(cache.layout, features),
            workers=tp.workers,
            ray_params=tp.ray,
            data_fingerprint=data_fingerprint(cache.layout, features),
        )
    if tp.threads:
        torch.set_num_threads(tp.threads)
    ctx = LocalContext()
    train(cfg, cache.get(features), ctx)
    if ctx.final_state is None:
        raise RuntimeError(f"train {cfg.model}: the loop reported no final state")
    return ctx.final_state


def _metrics_of(state: dict[str, Any], name: str, data: TrainData, cfg: TrainConfig) -> dict[str, Any]:
    """Valid and test metrics of a run's best weights (full ranking; train items masked, or
    the sequential task's protocol, ``training.sequential.ranking_inputs``)."""
    from training.models import build_model

    model = build_model(name, data, cfg.hparams)
    model.load_state_dict(state["model_state"])
    out = {}
    for split, truth in (("valid", data.valid), ("test", data.test)):
        ue, ie, mask = ranking_inputs(
            model, data, split, sequential_task=cfg.task == "sequential", mask_history=cfg.mask_history
        )
        out[split] = evaluate(ue, ie, truth, mask, data.n_users, cfg.ks, cfg.eval_chunk_size)
    return out


def warm_or_cold(
    cfg: TrainConfig, config: Config, layout: Layout, features: list[str]
) -> tuple[TrainConfig, str]:
    """``cfg`` set to warm-start from the previous snapshot's checkpoint (with the warm
    budget's epochs and patience) when ``train.warm_start`` allows it; else ``cfg`` and the
    reason it trains cold."""
    ws = config.train.warm_start
    if not ws.enabled:
        return cfg, "train.warm_start.enabled is false"
    decision = plan(
        layout.checkpoint(cfg.model),
        model=cfg.model,
        hparams=cfg.hparams,
        features=features,
        users=layout.users(),
        items=layout.items(),
        init=ws.init,
        content_k=ws.content_k,
    )
    if not decision.warm:
        return cfg, decision.reason
    return dataclasses.replace(cfg, warm_start=decision.spec, epochs=ws.epochs, patience=ws.patience), ""


def select_model(name: str, config: Config, cache: _DataCache) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grid x seeds for one model: (state of the saved run, selection report)."""
    tp = config.train
    base = TrainConfig.from_config(name, tp, config.evaluate.ks)
    features = model_features(name, config)
    configs, seeds = expand_grid(tp.section(name)), seeds_of(tp)
    best: ConfigResult | None = None
    results: list[ConfigResult] = []
    starts: list[dict[str, Any]] = []
    for i, grid_point in enumerate(configs):
        res = ConfigResult(config=grid_point)
        for seed in seeds:
            cfg, cold_reason = warm_or_cold(
                make_config(base, grid_point, seed), config, cache.layout, features
            )
            log.info("train %s: config %d/%d %s, seed %d", name, i + 1, len(configs), grid_point, seed)
            if cfg.warm_start is None and tp.warm_start.enabled:
                log.info("train %s: training cold: %s", name, cold_reason)
            state = train_config(cfg, config, features, cache)
            start = state.get("warm_start") or cold_report(cold_reason)
            state["warm_start"] = start
            if start["mode"] == "warm" or tp.warm_start.enabled:
                log.info("train %s: %s", name, describe(start))
            starts.append({"config": i, "seed": seed, **{k: v for k, v in start.items() if k != "tables"}})
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
        "warm_start": best.states[best.best_seed_index()]["warm_start"],
        "warm_start_runs": starts,
    }
    return best.states[best.best_seed_index()], report


def _write_outputs(
    name: str, state: dict[str, Any], report: dict[str, Any], layout: Layout, extras: dict[str, Any]
) -> None:
    out = layout.model_dir(name, write=True)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        layout.checkpoint(name, write=True),
        model_state=state["model_state"],
        config=state["config"],
        best_epoch=state["best_epoch"],
        best_valid=state["best_valid"],
        **extras,
    )
    curves_dir = layout.curves(write=True)
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


def run(config: Config, layout: Layout) -> dict[str, Any]:
    """Train every model in ``train.models``; writes checkpoints, curves and the summary."""
    summary = {}
    layout.curves(write=True).mkdir(parents=True, exist_ok=True)
    names = list(config.train.models)
    for name in names:
        model_class(name)  # unknown names fail before any training starts
        expand_grid(config.train.section(name))  # and so do malformed grids
    seeds_of(config.train)
    split = config.effective_ingest().split.method
    check_task(config.train.task, names, split)
    if config.train.warm_start.enabled and split == "random_ratio":
        log.warning(
            "train.warm_start with ingest.split.method random_ratio: the split is redrawn each "
            "snapshot, so a warm-started model may have trained on this snapshot's valid/test rows "
            "(optimistic metrics); a temporal or labels split keeps them apart"
        )
    cache = _DataCache(layout)
    for name in names:
        t0 = time.time()
        state, report = select_model(name, config, cache)
        features = model_features(name, config)
        extras = checkpoint_extras(layout.users(), layout.items(), cache.get(features), features)
        _write_outputs(name, state, report, layout, extras)
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
            "warm_start": {k: v for k, v in state["warm_start"].items() if k != "tables"},
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
    path = layout.train_summary(write=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
