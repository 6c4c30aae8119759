"""Real-data results: ingest -> (extract -> graph) -> train -> evaluate on public datasets.

Runs the pipeline's own stage code (``pipelines.tables``, ``pipelines.beam.extract``,
``training.knn``, ``pipelines.stages.train``, ``pipelines.stages.evaluate``) on the
datasets under the dataset root (never copied into the project) through the named
profiles of ``benchmarks/profiles.yaml``, with ``train.backend: local`` (in-process: no Ray start-up
per run; the same training loop Ray Train wraps). Each (dataset, model, seed) run is
appended to the results JSON as soon as it ends, so an interrupted benchmark resumes
where it stopped; the per-model summary (test Recall@20 / NDCG@20 mean and std over
seeds, epochs, seconds per epoch) is recomputed after every run.

    .venv/bin/python -m benchmarks.real_data --datasets DIR       # everything (hours on 2 cores)
    .venv/bin/python -m benchmarks.real_data --datasets DIR --names ml100k --models bpr --seeds 0
    .venv/bin/python -m benchmarks.real_data --table              # print the README table

``--datasets DIR`` is the dataset root (default ``$MMREC_DATASETS``); ``--names`` picks
datasets. Skips with a one-line ``skip:`` message (exit 0) when the root is not given or
absent, and skips each dataset whose files are missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from benchmarks import common
from benchmarks.common import RESULTS, ROOT

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.layout import Layout

DEFAULT_OUT = RESULTS / "real_data.json"

# dataset -> (profile in benchmarks/profiles.yaml, models); FREEDOM needs text, which Baby lacks here.
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
# MMRec toolbox run on exactly this split (the datasets' README; CPU, seed 999).
REFERENCE = {
    "baby": {
        "bpr": {"published": [0.0575, 0.0249], "mmrec_on_this_split": [0.0558, 0.0231]},
        "lightgcn": {"published": [0.0754, 0.0328], "mmrec_on_this_split": [0.0720, 0.0311]},
    }
}

log = logging.getLogger("benchmarks.real_data")


def bench_config(profile: dict[str, Any], model: str, seed: int, args: argparse.Namespace) -> Config:
    """params.yaml with the dataset's profile, one model, one seed, the local backend."""
    base = yaml.safe_load(args.params.read_text())
    text = {**base["extract"]["features"][TEXT_FEATURE], "fields": ["title", "description"]}
    return common.bench_config(
        params=args.params,
        data=profile,
        features={TEXT_FEATURE: text} if model == "freedom" else {},  # ML-100K: title + genres; DBbook: title
        train=common.local_run_train(model, seed, args.epochs, args.patience, args.eval_every),
        hparams={model: HPARAMS[model]},
        ks=[20],
    )


def prepare(dataset: str, profile: dict[str, Any], args: argparse.Namespace) -> tuple[Layout, dict[str, Any]]:
    """Ingest once per dataset (the split does not depend on the training seed) and, for
    FREEDOM, extract the text feature and its kNN graph."""
    layout = common.work_layout(args.work / dataset)
    model = "freedom" if "freedom" in DATASETS[dataset][1] else "bpr"
    return layout, common.prepare_store(bench_config(profile, model, 0, args), layout, fresh=args.fresh)


def run_one(
    dataset: str, profile: dict[str, Any], model: str, seed: int, layout: Layout, args: argparse.Namespace
) -> dict[str, Any]:
    """Train and evaluate one (model, seed) through the train and evaluate stages."""
    import torch

    torch.set_num_threads(args.threads)  # the extract stage sets its own thread count in-process
    return common.stage_run(bench_config(profile, model, seed, args), layout, dataset, seed)


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
    common.add_datasets_option(ap, "--datasets-root")
    ap.add_argument("--names", default=",".join(DATASETS), help="datasets, comma-separated")
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
    common.quiet_logs()
    results: dict[str, Any] = common.read_json(args.out)
    if args.table:
        print(markdown(results))
        return 0
    names = args.names.split(",")
    for ds in names:
        if ds not in DATASETS:
            raise SystemExit(f"unknown dataset {ds!r}; expected one of {list(DATASETS)}")
    profiles = common.profiles_or_skip(args.datasets_root, [DATASETS[ds][0] for ds in names])
    if profiles is None:
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
    for ds in names:
        if DATASETS[ds][0] not in profiles:
            continue  # skipped above
        profile = profiles[DATASETS[ds][0]]
        layout, ingest_summary = prepare(ds, profile, args)
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
                runs.append(run_one(ds, profile, model, seed, layout, args))
                done.add((ds, model, seed))
                results["runs"] = runs
                results["summary"] = summarise(runs)
                common.write_json(args.out, results)
                log.info("real_data: %s", json.dumps(runs[-1]))
    results["reference"] = REFERENCE
    if runs:
        results["summary"] = summarise(runs)
        common.write_json(args.out, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
