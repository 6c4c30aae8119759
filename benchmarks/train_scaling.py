"""Epoch time of the Ray Train loop with 1 vs 2 workers on this machine.

Per model: Ray with 1 worker x 1 thread, 1 worker x 2 threads (all the cores) and
2 workers x 1 thread (DDP, gloo), plus the in-process loop with 2 threads. The epoch
time is the median ``train_seconds`` (sampling + forward/backward/step, no valid
evaluation) over the epochs after the first. Speed-up is against 1 worker x 1 thread;
efficiency = speed-up / 2. Writes JSON.

    .venv/bin/python -m benchmarks.train_scaling --store store --out benchmarks/results/train_scaling.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, bench_config


def _epoch_stats(history: list[dict[str, Any]]) -> dict[str, float]:
    steady = [r["train_seconds"] for r in history[1:]] or [history[0]["train_seconds"]]
    return {
        "epoch_seconds_median": round(statistics.median(steady), 4),
        "epoch_seconds_min": round(min(steady), 4),
        "epochs_timed": len(steady),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--store", type=Path, default=Path("store"))
    ap.add_argument("--graphs", type=Path, default=Path("store/graphs/item_knn"))
    ap.add_argument("--models", nargs="+", default=["bpr", "lightgcn", "freedom"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--storage", default="/tmp/mmrec_train_scaling")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_scaling.json")
    args = ap.parse_args()

    import torch

    from pipelines.layout import Layout
    from pipelines.stages.common import data_source, model_features
    from training.data import load_train_data
    from training.loop import LocalContext, TrainConfig, train
    from training.ray_train import fit

    e = args.epochs
    # Time the training steps only: one evaluation and one report, at the end.
    common_ = {"epochs": e, "eval_every": e, "report_every": e, "checkpoint_every": e, "patience": 10**6}
    config = bench_config(params=args.params, train={"common": common_})
    tp = config.train
    layout = Layout(store=args.store)

    def source(features: list[str]):
        """The store's tables, with the graphs read from ``--graphs``."""
        src = data_source(layout, features)
        return dataclasses.replace(src, graphs={n: (args.graphs / n).resolve() for n in features})

    data_rows = load_train_data(source([])).train
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_avg_start": os.getloadavg(),
            "note": "2 cores shared with other jobs; no GPU (cuda path not measured)",
        },
        "store": str(args.store),
        "train_interactions": len(data_rows),
        "batch_size": tp.common.batch_size,
        "epochs": args.epochs,
        "models": {},
    }
    for name in args.models:
        cfg = TrainConfig.from_config(name, tp, config.evaluate.ks)
        features = model_features(name, config)
        row: dict[str, Any] = {}
        torch.set_num_threads(2)
        ctx = LocalContext()
        t0 = time.time()
        train(cfg, load_train_data(source(features)), ctx)
        row["in_process_2_threads"] = {
            **_epoch_stats(ctx.final_state["history"]),
            "wall": round(time.time() - t0, 1),
        }
        for label, workers, cpus in (("ray_1x1", 1, 1), ("ray_1x2", 1, 2), ("ray_2x1", 2, 1)):
            ray_params = tp.ray.model_copy(
                update={"storage_path": args.storage, "cpus_per_worker": cpus, "resume": False}
            )
            t0 = time.time()
            state = fit(cfg, source=source(features), workers=workers, ray_params=ray_params)
            row[label] = {**_epoch_stats(state["history"]), "fit_wall_seconds": round(time.time() - t0, 1)}
            print(name, label, row[label], flush=True)
        t1 = row["ray_1x1"]["epoch_seconds_median"]
        t1x2 = row["ray_1x2"]["epoch_seconds_median"]
        t2 = row["ray_2x1"]["epoch_seconds_median"]
        row["speedup_2_workers_vs_1x1"] = round(t1 / t2, 3)
        row["efficiency_2_workers"] = round(t1 / (2 * t2), 3)
        row["speedup_2_workers_vs_1x2_same_cores"] = round(t1x2 / t2, 3)
        results["models"][name] = row
    results["machine"]["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["models"], indent=1))


if __name__ == "__main__":
    main()
