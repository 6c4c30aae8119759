"""Warm-started vs cold retraining over successive demo snapshots (issue 13, item 5).

A "universe" demo catalog (``pipelines.demo_catalog``, the demo's own generator) is cut
into a base snapshot and ``--snapshots`` successive ones: each next snapshot changes the
titles of, adds and removes about ``--item-share`` of the items between them (2:1:1) and
adds about ``--interaction-share`` new interactions (the next ones in time; a new item's
interactions start when it appears, a removed item's go with it). Each snapshot is
ingested into one store with the real ingest, extract (incremental: only changed and new
items are re-embedded; the encoders of ``params.yaml``) and graph stages, with a temporal
split: the random-ratio split is redrawn every snapshot, so a warm-started model would
have trained on the next snapshot's test rows.

Per snapshot and default model (``params.yaml`` ``train.models``) the train stage runs
warm (from the previous snapshot's warm checkpoint; the base from a cold run) and cold,
interleaved W C W C for ``--rounds`` rounds (round r with seed + r, on both sides).
Reported: the median warm/cold wall-time (and CPU-time) ratio and its spread, epochs, the
test Recall@20 of both (the train stage's full-ranking metrics of the best weights, mean
over the rounds) and the paired per-user difference with its bootstrap CI. Targets: warm
<= 0.3x cold, warm Recall@20 at least 98% of cold's. Writes
``benchmarks/results/snapshot_runs.json``.

    .venv/bin/python -m benchmarks.snapshot_runs --snapshots 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PARAMS, RESULTS, bench_config, quiet_logs, skip, write_json

log = logging.getLogger("benchmarks.snapshot_runs")

TARGET_RATIO = 0.3
TARGET_RECALL = 0.98  # warm test Recall@20 >= this x cold's


# ------------------------------------------------------------------------------ snapshots


def make_universe(
    out: Path, params: Path, snapshots: int, item_share: float, inter_share: float
) -> tuple[Path, int]:
    """The demo catalog sized for the base plus every later snapshot's new items and rows;
    returns its folder and the items added (and removed) per snapshot."""
    from pipelines.config import load_config
    from pipelines.demo_catalog import DemoSpec, generate_demo

    d = load_config(params).demo
    new_per = round(d.n_items * item_share / 4)
    spec = DemoSpec(
        n_items=d.n_items + snapshots * new_per,
        n_users=d.n_users,
        n_interactions=round(d.n_interactions * (1 + inter_share) ** snapshots),
        image_size=d.image_size,
        seed=d.seed if d.seed is not None else 42,
    )
    if not (out / "items.csv").exists():
        generate_demo(out, spec, progress=False)
    return out, new_per


def cut_snapshots(
    universe: Path, out: Path, snapshots: int, per: int, inter_share: float, seed: int
) -> list[dict[str, Any]]:
    """``items.csv``/``interactions.csv`` of the base (0) and each later snapshot under
    ``out/<k>``: ``2 * per`` titles changed, ``per`` items added and ``per`` removed per
    snapshot; returns what changed in each."""
    import numpy as np
    import polars as pl

    items = pl.read_csv(universe / "items.csv", infer_schema_length=0)
    inter = pl.read_csv(universe / "interactions.csv").sort("timestamp", "user_id", "item_id")
    rng = np.random.default_rng(seed)
    all_ids = items["item_id"].to_list()
    future = list(rng.choice(all_ids, size=snapshots * per, replace=False))
    present = [i for i in all_ids if i not in set(future)]
    # Interaction cut-offs: the base holds 1/(1+s)^S of the rows, each snapshot s more.
    n = inter.height
    cut_rows = [round(n / (1 + inter_share) ** (snapshots - k)) - 1 for k in range(snapshots + 1)]
    cutoffs = [int(inter["timestamp"][r]) for r in cut_rows]
    titles: dict[str, str] = dict(zip(items["item_id"], items["title"], strict=True))
    appeared: dict[str, int] = dict.fromkeys(present, cutoffs[0] - 10**12)
    out_rows = []
    for k in range(snapshots + 1):
        changed: list[str] = []
        added: list[str] = []
        removed: list[str] = []
        if k:
            changed = list(rng.choice(present, size=2 * per, replace=False))
            for i in changed:
                titles[i] = f"{titles[i]} (revised in snapshot {k})"
            removed = list(rng.choice([i for i in present if i not in set(changed)], size=per, replace=False))
            added = future[(k - 1) * per : k * per]
            present = [i for i in present if i not in set(removed)] + added
            for i in added:
                appeared[i] = cutoffs[k - 1]
        folder = out / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        keep = pl.DataFrame({"item_id": present, "_since": [appeared[i] for i in present]})
        snap_items = items.filter(pl.col("item_id").is_in(present)).with_columns(
            pl.col("item_id").replace_strict(titles, return_dtype=pl.String).alias("title")
        )
        snap_inter = (
            inter.filter(pl.col("timestamp") <= cutoffs[k])
            .join(keep, on="item_id")
            .filter(pl.col("timestamp") > pl.col("_since"))
            .drop("_since")
            .sort("timestamp", "user_id", "item_id")
        )
        snap_items.write_csv(folder / "items.csv")
        snap_inter.write_csv(folder / "interactions.csv")
        fresh_rows = snap_inter.filter(pl.col("timestamp") > cutoffs[k - 1]).height if k else 0
        out_rows.append(
            {
                "snapshot": k,
                "items": snap_items.height,
                "interactions": snap_inter.height,
                "new_interactions": fresh_rows,
                "changed": len(changed),
                "added": len(added),
                "removed": len(removed),
            }
        )
    for k in range(1, len(out_rows)):
        prev = out_rows[k - 1]["interactions"]
        out_rows[k]["new_interaction_share"] = round(out_rows[k]["new_interactions"] / prev, 4)
        out_rows[k]["item_share"] = round(
            (out_rows[k]["changed"] + out_rows[k]["added"] + out_rows[k]["removed"])
            / out_rows[k - 1]["items"],
            4,
        )
    return out_rows


# ------------------------------------------------------------------------------ runs


def snapshot_config(params: Path, raw_dir: Path, images: Path, train: dict[str, Any]) -> Any:
    """``params.yaml`` on one snapshot's files, temporal split, ``train`` merged in."""
    import yaml

    data = yaml.safe_load(params.read_text())["data"]
    data.update(
        items=str(raw_dir / "items.csv"), interactions=str(raw_dir / "interactions.csv"), images=str(images)
    )
    config = bench_config(params=params, data=data, train=train)
    return config.updated({"ingest": {"split": {"method": "temporal"}}})


def missing_encoders(config: Any) -> list[str]:
    """sentence-transformers models of the features that are neither a folder nor cached."""
    from features.encoders.sentence import resolve_model_path

    return [
        f.model
        for f in config.extract.features.values()
        if getattr(f, "encoder", None) == "sentence-transformers"
        and not Path(resolve_model_path(f.model)).exists()
    ]


def build_store(config: Any, layout: Any) -> dict[str, float]:
    """The real ingest, extract (incremental) and graph stages on this snapshot."""
    from pipelines.stages import extract, graph, ingest

    out: dict[str, float] = {}
    for name, stage in (("ingest", ingest), ("extract", extract), ("graph", graph)):
        t0 = time.time()
        stage.run(config, layout)
        out[f"{name}_seconds"] = round(time.time() - t0, 1)
    return out


def train_run(
    config: Any, store: Any, run_dir: Path, model: str, warm_from: Path | None, seed: int
) -> dict[str, Any]:
    """One train-stage run of ``model`` with ``seed`` into ``run_dir`` (warm when
    ``warm_from`` is given)."""
    from pipelines.layout import Layout
    from pipelines.stages import train as train_stage

    if run_dir.exists():
        shutil.rmtree(run_dir)
    layout = Layout(store=store.store, models=run_dir / "models", reports=run_dir / "reports")
    if warm_from is not None:
        layout.model_dir(model).mkdir(parents=True)
        shutil.copy2(warm_from, layout.checkpoint(model))
    cfg = config.updated(
        {"train": {"models": [model], "seed": seed, "warm_start": {"enabled": warm_from is not None}}}
    )
    t0, c0 = time.time(), time.process_time()
    summary = train_stage.run(cfg, layout)[model]
    wall, cpu = time.time() - t0, time.process_time() - c0
    start = summary["warm_start"]
    if warm_from is not None and start["mode"] != "warm":
        raise RuntimeError(f"{model}: expected a warm start, got {start}")
    return {
        "mode": start["mode"],
        "seed": seed,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),  # this process, all threads: less sensitive to other jobs
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "test_recall@20": summary["test_mean"]["recall@20"],
        "test_ndcg@20": summary["test_mean"]["ndcg@20"],
        "valid_recall@20": summary["best_valid"],
        **({k: start[k] for k in ("items", "users")} if start["mode"] == "warm" else {}),
        "checkpoint": str(layout.checkpoint(model)),
    }


def compare(warm: list[dict[str, Any]], cold: list[dict[str, Any]]) -> dict[str, Any]:
    """Median warm/cold wall ratio (pairs of one round) and its spread; recall of both."""
    ratios = [w["wall_seconds"] / c["wall_seconds"] for w, c in zip(warm, cold, strict=True)]
    cpu = [w["cpu_seconds"] / c["cpu_seconds"] for w, c in zip(warm, cold, strict=True)]
    rw = statistics.mean(r["test_recall@20"] for r in warm)  # rounds differ by seed: the mean
    rc = statistics.mean(r["test_recall@20"] for r in cold)
    ratio = statistics.median(ratios)
    return {
        "wall_ratio_median": round(ratio, 4),
        "wall_ratio_min": round(min(ratios), 4),
        "wall_ratio_max": round(max(ratios), 4),
        "cpu_ratio_median": round(statistics.median(cpu), 4),
        "cpu_ratio_min": round(min(cpu), 4),
        "cpu_ratio_max": round(max(cpu), 4),
        "warm_wall_median": round(statistics.median(r["wall_seconds"] for r in warm), 2),
        "cold_wall_median": round(statistics.median(r["wall_seconds"] for r in cold), 2),
        "warm_epochs": [r["epochs"] for r in warm],
        "cold_epochs": [r["epochs"] for r in cold],
        "warm_recall@20": rw,
        "cold_recall@20": rc,
        "recall_rel_diff": round((rw - rc) / rc, 4) if rc else None,
        "ratio_ok": ratio <= TARGET_RATIO,
        "recall_ok": rw >= TARGET_RECALL * rc,
    }


def paired_recall(config: Any, store: Any, model: str, warm: list[Path], cold: list[Path]) -> dict[str, Any]:
    """Per-user test Recall@20 of the warm and the cold checkpoints (each side averaged over
    its rounds' seeds) on this snapshot's store: the paired difference with its 95%
    bootstrap CI (users resampled) and Wilcoxon p. One test item per user makes a single
    run's mean noisy (about +-4% relative here)."""
    from evaluation.metrics import evaluate
    from evaluation.significance import paired_test
    from pipelines.stages.common import data_source, model_features
    from training.checkpoint import load_model
    from training.data import load_train_data

    data = load_train_data(data_source(store, model_features(model, config)))
    per: dict[str, Any] = {}
    for name, paths in (("warm", warm), ("cold", cold)):
        runs = []
        for path in paths:
            m, _ = load_model(path, data)
            ue, ie = m.inference_embeddings()
            _, per_user, _ = evaluate(
                ue, ie, data.test, data.train, data.n_users, (20,), return_per_user=True
            )
            runs.append(per_user["recall@20"])
        per[name] = sum(runs) / len(runs)
    t = paired_test(per["warm"], per["cold"], n_boot=2000, seed=config.seed)
    cold_mean = t["mean_b"]
    return {
        "users": t["users"],
        "warm": round(t["mean_a"], 6),
        "cold": round(cold_mean, 6),
        "diff": round(t["diff"], 6),
        "rel_diff": round(t["diff"] / cold_mean, 4),
        "rel_ci95": [round(t["ci_low"] / cold_mean, 4), round(t["ci_high"] / cold_mean, 4)],
        "p_wilcoxon": t["p_wilcoxon"],
        "warm_better_users": t["a_better_users"],
        "cold_better_users": t["b_better_users"],
    }


def summarise(results: dict[str, Any]) -> None:
    """Per model: the median ratios over snapshots and whether every snapshot met the targets."""
    for res in results["models"].values():
        snaps = res["snapshots"]
        res["summary"] = {
            "wall_ratio_median": round(statistics.median(s["wall_ratio_median"] for s in snaps), 4),
            "wall_ratio_worst": max(s["wall_ratio_median"] for s in snaps),
            "cpu_ratio_median": round(statistics.median(s["cpu_ratio_median"] for s in snaps), 4),
            "recall_rel_diff_worst": min(s["recall_rel_diff"] for s in snaps),
            "ratio_ok": all(s["ratio_ok"] for s in snaps),
            "recall_ok": all(s["recall_ok"] for s in snaps),
            # a shortfall beyond 2% that the paired CI says is real (its upper end below -2%)
            "recall_significantly_worse": any(
                s.get("paired", {}).get("rel_ci95", [0, 0])[1] < -(1 - TARGET_RECALL) for s in snaps
            ),
        }


def paired_only(
    args: argparse.Namespace, results: dict[str, Any], universe: Path, store: Any, train: dict
) -> None:
    """Add the paired analysis to an earlier run's results (rebuilding each snapshot's store)."""
    for snaps in zip(*(r["snapshots"] for r in results["models"].values()), strict=True):
        k = snaps[0]["snapshot"]
        config = snapshot_config(args.params, args.work / "raw" / str(k), universe / "images", train)
        build_store(config, store)
        for model, s in zip(results["models"], snaps, strict=True):
            s["paired"] = paired_recall(
                config,
                store,
                model,
                [Path(r["checkpoint"]) for r in s["warm_runs"]],
                [Path(r["checkpoint"]) for r in s["cold_runs"]],
            )
            log.info("snapshot %d %s: paired test R@20 %s", k, model, s["paired"])
    summarise(results)
    write_json(args.out, results)
    print(markdown_table(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=PARAMS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmrec_snapshot_runs"))
    ap.add_argument("--snapshots", type=int, default=3, help="successive snapshots after the base")
    ap.add_argument("--rounds", type=int, default=3, help="warm/cold pairs per snapshot and model")
    ap.add_argument("--models", nargs="+", default=None, help="default: params.yaml train.models")
    ap.add_argument(
        "--item-share", type=float, default=0.05, help="items changed + new + removed per snapshot"
    )
    ap.add_argument("--interaction-share", type=float, default=0.05, help="new interactions per snapshot")
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the local backend")
    ap.add_argument("--fresh", action="store_true", help="regenerate the catalog and the store")
    ap.add_argument(
        "--reuse-base",
        action="store_true",
        help="reuse the base snapshot's cold runs of an earlier run in --work",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "snapshot_runs.json")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    ap.add_argument(
        "--paired-only",
        action="store_true",
        help="add the paired per-user test comparison to --out from the checkpoints in --work",
    )
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    if args.snapshots < 3 or args.rounds < 1:
        raise SystemExit("--snapshots must be at least 3 and --rounds at least 1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_logs()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pipelines.config import load_config
    from pipelines.layout import Layout

    work = args.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    # One copy of the params for the whole run: params.yaml may change while it runs.
    source_params = args.params
    if not (args.paired_only and (work / "params.yaml").exists()):  # keep the analysed run's copy
        shutil.copy2(args.params, work / "params.yaml")
    args.params = work / "params.yaml"
    params = load_config(args.params)
    models = args.models or list(params.train.models)
    missing = missing_encoders(params)
    if missing:
        skip(
            f"the text encoder(s) {missing} of {source_params} are not available offline "
            "(no local folder, bundled copy or hub cache)"
        )
        return
    universe, per = make_universe(
        work / "universe", args.params, args.snapshots, args.item_share, args.interaction_share
    )
    cuts = cut_snapshots(universe, work / "raw", args.snapshots, per, args.interaction_share, params.seed)
    log.info("snapshots: %s", cuts)
    store = Layout(store=work / "store", models=work / "models", reports=work / "reports")
    train = {"backend": args.backend, "threads": args.threads, "seeds": None}
    if args.paired_only:
        paired_only(args, json.loads(args.out.read_text()), universe, store, train)
        return
    results: dict[str, Any] = {
        "what": "train-stage wall time and test Recall@20, warm start vs cold retrain, per snapshot",
        "targets": {"wall_ratio_max": TARGET_RATIO, "recall_min_share_of_cold": TARGET_RECALL},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_start": os.getloadavg(),
            "note": "2 cores shared with other jobs; wall time of the whole train stage per run",
        },
        "settings": {
            "snapshots": args.snapshots,
            "rounds": args.rounds,
            "seeds": [params.seed + r for r in range(args.rounds)],
            "backend": args.backend,
            "threads": args.threads,
            "split": "temporal",
            "cold": params.train.common.model_dump(include={"epochs", "patience"}),
            "warm": params.train.warm_start.model_dump(),
        },
        "snapshots": cuts,
        "models": {m: {"snapshots": []} for m in models},
    }
    chain: dict[str, Path] = {}
    for k in range(args.snapshots + 1):
        config = snapshot_config(args.params, work / "raw" / str(k), universe / "images", train)
        timings = build_store(config, store)
        cuts[k].update(timings)
        log.info("snapshot %d store: %s", k, timings)
        for model in models:
            runs_dir = work / "runs" / str(k) / model
            if k == 0:
                record = runs_dir / "cold0" / "record.json"
                if args.reuse_base and record.exists():
                    base = json.loads(record.read_text())
                    log.info("snapshot 0 %s: reusing the base run in %s", model, record.parent)
                else:
                    base = train_run(config, store, runs_dir / "cold0", model, None, params.seed)
                    write_json(record, base)
                chain[model] = Path(base["checkpoint"])
                results["models"][model]["base"] = base
                continue
            warm, cold = [], []
            for r in range(args.rounds):  # interleaved: W C W C ..., round r with seed + r
                seed = params.seed + r
                warm.append(train_run(config, store, runs_dir / f"warm{r}", model, chain[model], seed))
                cold.append(train_run(config, store, runs_dir / f"cold{r}", model, None, seed))
                log.info(
                    "snapshot %d %s round %d: warm %.1fs (%d epochs, R@20 %.4f) "
                    "cold %.1fs (%d epochs, R@20 %.4f)",
                    k, model, r, warm[-1]["wall_seconds"], warm[-1]["epochs"], warm[-1]["test_recall@20"],
                    cold[-1]["wall_seconds"], cold[-1]["epochs"], cold[-1]["test_recall@20"],
                )  # fmt: skip
            chain[model] = Path(warm[0]["checkpoint"])  # the next snapshot warms from this warm model
            paired = paired_recall(
                config,
                store,
                model,
                [Path(r["checkpoint"]) for r in warm],
                [Path(r["checkpoint"]) for r in cold],
            )
            results["models"][model]["snapshots"].append(
                {"snapshot": k, **compare(warm, cold), "paired": paired, "warm_runs": warm, "cold_runs": cold}
            )
            write_json(args.out, results)
    summarise(results)
    results["load_avg_end"] = os.getloadavg()
    write_json(args.out, results)
    print(json.dumps({m: r["summary"] for m, r in results["models"].items()}, indent=1))
    print(markdown_table(results))


def _ci(s: dict[str, Any]) -> str:
    ci = s.get("paired", {}).get("rel_ci95")
    return f" ({100 * ci[0]:+.1f}% to {100 * ci[1]:+.1f}%)" if ci else ""


def markdown_table(results: dict[str, Any]) -> str:
    """The docs/scheduled-runs.md table: one row per model and snapshot."""
    lines = [
        "| model | snapshot | warm s | cold s | wall warm/cold (median, min-max) | CPU warm/cold "
        "| epochs warm / cold | test R@20 warm | cold | diff (paired 95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, res in results["models"].items():
        for s in res["snapshots"]:
            lines.append(
                f"| {model} | {s['snapshot']} | {s['warm_wall_median']:.1f} | {s['cold_wall_median']:.1f} "
                f"| {s['wall_ratio_median']:.2f} ({s['wall_ratio_min']:.2f}-{s['wall_ratio_max']:.2f}) "
                f"| {s['cpu_ratio_median']:.2f} "
                f"| {statistics.median(s['warm_epochs']):.0f} / {statistics.median(s['cold_epochs']):.0f} "
                f"| {s['warm_recall@20']:.4f} | {s['cold_recall@20']:.4f} "
                f"| {100 * s['recall_rel_diff']:+.1f}%{_ci(s)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
