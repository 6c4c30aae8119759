"""Evaluate stage: full ranking on test (train items masked) for every trained model,
with coverage, popularity buckets, few-interaction users and paired tests between models;
Matryoshka models also at every prefix size (``prefixes`` in ``reports/metrics.json``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evaluation.metrics import evaluate, evaluate_prefixes, rank
from evaluation.significance import compare_models
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.stages.common import load_data
from training.checkpoint import load_model
from training.sequential import ranking_inputs

log = logging.getLogger(__name__)


def run(config: Config, layout: Layout) -> dict[str, Any]:
    """Test (and valid) metrics per model -> ``reports/metrics.json``; per-user test metrics
    -> ``reports/per_user/<model>.parquet``; paired tests -> ``reports/significance.json``."""
    ev = config.evaluate
    ks = list(ev.ks)
    data = load_data(config, layout)
    train_counts = np.bincount(data.train.users, minlength=data.n_users)
    per_user_dir = layout.per_user(write=True)
    per_user_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    compared: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for name in config.train.models:
        model, ckpt = load_model(layout.checkpoint(name), data)
        seq = {
            "sequential_task": config.train.task == "sequential",
            "mask_history": config.train.sequential.mask_history,
        }
        ue, ie, mask = ranking_inputs(model, data, "test", **seq)
        test = rank(
            ue,
            ie,
            data.test,
            mask,
            data.n_users,
            ks,
            ev.chunk_size,
            max_chunk_mb=ev.chunk_memory_mb,
            popularity_split=ev.popularity_split,
            few_train_max=ev.few_train_max,
        )
        vu, vi, vmask = ranking_inputs(model, data, "valid", **seq)
        valid = evaluate(
            vu, vi, data.valid, vmask, data.n_users, ks, ev.chunk_size, max_chunk_mb=ev.chunk_memory_mb
        )
        summary = test.summary()
        results[name] = {
            "test": {k: v for k, v in summary.items() if not isinstance(v, dict)},
            "valid": {k: round(v, 6) if isinstance(v, float) else v for k, v in valid.items()},
            "best_epoch": ckpt["best_epoch"],
            "test_breakdown": {k: v for k, v in summary.items() if isinstance(v, dict)},
        }
        if model.prefixes:  # Matryoshka: test metrics of every trained prefix size
            prefixes = evaluate_prefixes(
                ue,
                ie,
                model.prefixes,
                data.test,
                data.train,
                data.n_users,
                ks,
                ev.chunk_size,
                max_chunk_mb=ev.chunk_memory_mb,
            )
            results[name]["prefixes"] = {
                d: {k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}
                for d, m in prefixes.items()
            }
            log.info(
                "evaluate %s prefixes: %s",
                name,
                ", ".join(
                    f"d={d} recall@{max(ks)}={m[f'recall@{max(ks)}']:.4f}" for d, m in prefixes.items()
                ),
            )
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
    out_metrics = layout.metrics(write=True)
    out_metrics.parent.mkdir(parents=True, exist_ok=True)
    out_metrics.write_text(json.dumps(results, indent=2) + "\n")
    sig = ev.significance
    comparison = compare_models(
        compared,
        list(sig.metrics),
        n_boot=sig.bootstrap,
        alpha=sig.alpha,
        seed=sig.seed if sig.seed is not None else config.seed,
    )
    layout.significance(write=True).write_text(json.dumps(comparison, indent=2) + "\n")
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
