"""Real-data results: ingest -> (extract -> graph) -> train -> evaluate on public datasets.

Runs the pipeline's own stage code (``pipelines.tables``, ``pipelines.beam.extract``,
``training.knn``, ``pipelines.stages.train``, ``pipelines.stages.evaluate``) on the
datasets in ``../shared/datasets`` (never copied into the project) through the named
profiles of ``params.yaml``, with ``train.backend: local`` (in-process: no Ray start-up
per run; the same training loop Ray Train wraps). Each (dataset, model, seed) run is
appended to the results JSON as soon as it ends, so an interrupted benchmark resumes
where it stopped; the per-model summary (test Recall@20 / NDCG@20 mean and std over
seeds, epochs, seconds per epoch) is recomputed after every run.

    .venv/bin/python -m benchmarks.real_data                      # everything (hours on 2 cores)
    .venv/bin/python -m benchmarks.real_data --datasets ml100k --models bpr --seeds 0
    .venv/bin/python -m benchmarks.real_data --table              # print the README table

Skips with a message (exit 0) when the datasets folder is absent.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "real_data.json"
PROFILE_PREFIX = "../shared/datasets"

# dataset -> (profile in params.yaml, models); FREEDOM needs text, which Baby lacks here.
DATASETS: dict[str, tuple[str, list[str]]] = {
    "baby": ("baby", ["bpr", "lightgcn"]),
    "ml100k": ("ml100k", ["bpr", "lightgcn", "freedom"]),
    "dbbook": ("dbbook", ["bpr", "lightgcn", "freedom"]),
}
# Hyper-parameters of the MMRec runs the datasets README quotes for Baby (BPR reg 1e-4;
# LightGCN 1 layer, reg 1e-2), used on every dataset for comparability. FREEDOM: the
# project's defaults with the text feature only (no images in these datasets).
HPARAMS: dict[str, dict[str, Any]] = {
    "bpr": {"embedding_dim": 64, "reg_weight": 1.0e-4},
    "lightgcn": {"embedding_dim": 64, "n_layers": 1, "reg_weight": 1.0e-2},
    "freedom": {"feature_weights": {"text_minilm": 1.0}},
}
TEXT_FEATURE = "text_minilm"
# Test Recall@20 / NDCG@20 on Amazon Baby: published (MMRec protocol, its own split) and the
# MMRec toolbox run on exactly this split (../shared/datasets/README.md; CPU, seed 999).
REFERENCE = {
    "baby": {
        "bpr": {"published": [0.0575, 0.0249], "mmrec_on_this_split": [0.0558, 0.0231]},
        "lightgcn": {"published": [0.0754, 0.0328], "mmrec_on_this_split": [0.0720, 0.0311]},
    }
}

log = logging.getLogger("benchmarks.real_data")


def rebase(profile: dict[str, Any], datasets: Path) -> dict[str, Any]:
    """The profile with its ``../shared/datasets`` paths pointed at ``datasets``."""
    out = copy.deepcopy(profile)
    for key in ("items", "interactions", "images"):
        v = out.get(key)
        if isinstance(v, str) and v.startswith(PROFILE_PREFIX):
            out[key] = str(datasets / v[len(PROFILE_PREFIX) :].lstrip("/"))
    return out


def bench_params(
    base: dict[str, Any], dataset: str, model: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """params.yaml with the dataset's profile, one model, one seed, the local backend."""
    p = copy.deepcopy(base)
    p["data"] = rebase(p["profiles"][DATASETS[dataset][0]], args.datasets)
    text = copy.deepcopy(base["extract"]["features"][TEXT_FEATURE])
    text["fields"] = ["title", "description"]  # ML-100K: title + genres; DBbook: title
    p["extract"]["features"] = {TEXT_FEATURE: text} if model == "freedom" else {}
    tp = p["train"]
    tp.update(backend="local", models=[model], seed=seed, seeds=[seed])
    tp["common"].update(epochs=args.epochs, patience=args.patience, eval_every=args.eval_every)
    tp[model] = {**(tp.get(model) or {}), **HPARAMS[model]}
    p["evaluate"]["ks"] = sorted(set(p["evaluate"]["ks"]) | {20})
    return p


def prepare(dataset: str, args: argparse.Namespace, base: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Ingest once per dataset (the split does not depend on the training seed) and, for
    FREEDOM, extract the text feature and its kNN graph."""
    from pipelines import extract, ingest
    from training import graph

    work = args.work / dataset
    p = bench_params(base, dataset, "freedom" if "freedom" in DATASETS[dataset][1] else "bpr", 0, args)
    stats = work / "reports" / "ingest.json"
    if not stats.exists() or args.fresh:
        summary = ingest.run(p, work / "store", stats)
    else:
        summary = json.loads(stats.read_text())
    if p["extract"]["features"] and (
        args.fresh or not (work / "store/graphs/item_knn" / TEXT_FEATURE).exists()
    ):
        t0 = time.time()
        extract.run(p, work / "store")
        graph.run(p, work / "store", work / "store/graphs/item_knn")
        summary["extract_seconds"] = round(time.time() - t0, 1)
    return work, summary


def run_one(dataset: str, model: str, seed: int, work: Path, args: argparse.Namespace, base: dict[str, Any]):
    """Train and evaluate one (model, seed) through the train and evaluate stages."""
    import torch

    from training import evaluate_stage, train_stage

    torch.set_num_threads(args.threads)  # the extract stage sets its own thread count in-process
    p = bench_params(base, dataset, model, seed, args)
    run_dir = work / "runs" / f"{model}-seed{seed}"
    store, graphs = work / "store", work / "store/graphs/item_knn"
    t0 = time.time()
    summary = train_stage.run(p, store, graphs, run_dir / "models", run_dir / "curves")[model]
    train_s = time.time() - t0
    metrics = evaluate_stage.run(
        p, store, graphs, run_dir / "models", run_dir / "metrics.json", run_dir / "per_user"
    )
    history = json.loads((run_dir / "models" / model / "history.json").read_text())
    epochs = len(history)
    return {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "hparams": p["train"][model],
        "test": {k: metrics[model]["test"][k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")},
        "valid_recall@20": metrics[model]["valid"]["recall@20"],
        "best_epoch": summary["best_epoch"],
        "epochs": epochs,
        "hit_epoch_cap": epochs >= args.epochs,
        "train_seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(1, epochs), 3),
        "seconds_per_epoch": round(sum(r["seconds"] for r in history) / max(1, epochs), 3),
        "wall_seconds": round(train_s, 1),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset and model: test metrics mean/std over seeds (sample std, as the train stage)."""
    from training.selection import mean_std

    out: dict[str, Any] = {}
    for r in runs:
        out.setdefault(r["dataset"], {}).setdefault(r["model"], []).append(r)
    table: dict[str, Any] = {}
    for ds, models in out.items():
        for model, rs in models.items():
            rs = sorted(rs, key=lambda r: r["seed"])
            table.setdefault(ds, {})[model] = {
                "seeds": [r["seed"] for r in rs],
                **{f"test_{k}": mean_std([r["test"][k] for r in rs]) for k in ("recall@20", "ndcg@20")},
                "epochs": [r["epochs"] for r in rs],
                "best_epochs": [r["best_epoch"] for r in rs],
                "hit_epoch_cap": any(r["hit_epoch_cap"] for r in rs),
                "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in rs]),
                "train_seconds_per_epoch": mean_std([r["train_seconds_per_epoch"] for r in rs]),
                "hparams": rs[0]["hparams"],
            }
    return table


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| dataset | model | test R@20 | test N@20 | R@20 published / MMRec on this split | seeds "
        "| epochs (best) | s/epoch (train + valid eval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, models in results.get("summary", {}).items():
        for model, s in models.items():
            r, n = s["test_recall@20"], s["test_ndcg@20"]
            eps = ", ".join(f"{e} ({b})" for e, b in zip(s["epochs"], s["best_epochs"], strict=True))
            ref = REFERENCE.get(ds, {}).get(model)
            ref_s = f"{ref['published'][0]:.4f} / {ref['mmrec_on_this_split'][0]:.4f}" if ref else "—"
            lines.append(
                f"| {ds} | {model} | {r['mean']:.4f} ± {r['std']:.4f} | {n['mean']:.4f} ± {n['std']:.4f} "
                f"| {ref_s} | {len(s['seeds'])} | {eps} | {s['seconds_per_epoch']['mean']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", dest="names", default=",".join(DATASETS), help="comma-separated")
    ap.add_argument("--datasets-root", dest="datasets", type=Path, default=DEFAULT_DATASETS)
    ap.add_argument("--models", default=None, help="comma-separated subset of each dataset's models")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=1000, help="cap (MMRec protocol: 1000)")
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmrec-real-data")
    ap.add_argument("--fresh", action="store_true", help="re-ingest and re-extract")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine two threads ran 5x slower than one)",
    )
    ap.add_argument("--table", action="store_true", help="print the results table and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("apache_beam", "sentence_transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.table:
        print(markdown(results))
        return 0
    if not args.datasets.is_dir():
        print(f"skip: datasets folder {args.datasets} not found (set --datasets-root)", file=sys.stderr)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = yaml.safe_load(args.params.read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: list[dict[str, Any]] = results.get("runs", [])
    done = {(r["dataset"], r["model"], r["seed"]) for r in runs}
    results.setdefault("datasets", {})
    import torch

    torch.set_num_threads(args.threads)
    results["setup"] = {
        "command": "python -m benchmarks.real_data " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backend": "local (in-process, the loop Ray Train wraps; no Ray start-up per run)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "protocol": f"Adam lr 1e-3, batch 2048, one sampled negative, early stopping on valid "
        f"Recall@20 with patience {args.patience}, at most {args.epochs} epochs, "
        f"eval every {args.eval_every}",
    }
    for ds in args.names.split(","):
        if ds not in DATASETS:
            raise SystemExit(f"unknown dataset {ds!r}; expected one of {list(DATASETS)}")
        work, ingest_summary = prepare(ds, args, base)
        results["datasets"][ds] = {
            "profile": DATASETS[ds][0],
            "split_method": ingest_summary.get("split_method"),
            "split_hash": ingest_summary.get("split_hash"),
            "dataset": ingest_summary.get("dataset"),
            "counts": ingest_summary.get("counts", {}).get("interactions"),
        }
        models = DATASETS[ds][1]
        if args.models:
            models = [m for m in models if m in args.models.split(",")]
        for model in models:
            for seed in seeds:
                if (ds, model, seed) in done:
                    continue
                log.info("real_data: %s %s seed %d", ds, model, seed)
                runs.append(run_one(ds, model, seed, work, args, base))
                done.add((ds, model, seed))
                results["runs"] = runs
                results["summary"] = summarise(runs)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
                log.info("real_data: %s", json.dumps(runs[-1]))
    results["reference"] = REFERENCE
    if runs:
        results["summary"] = summarise(runs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
