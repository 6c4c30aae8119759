"""Real-data runs of the second model zoo (CM3, LIRDRec, modality alignment, SIGE).

Same stage code and result format as ``benchmarks.real_data`` (ingest -> extract ->
graph -> ``pipelines.stages.train`` -> ``pipelines.stages.evaluate``, ``train.backend:
local``), on the datasets in ``../shared/datasets``; skips with a message when the folder
is absent. These models need item features:

- MovieLens-100K: ``text_minilm`` (MiniLM over title + genres) and ``genre_minilm``
  (MiniLM over the genre list alone, the second "modality"; the same two tables as the
  parity benchmarks), item-graph weights text 0.9 / genres 0.1;
- DBbook: ``text_minilm`` over the titles, the only content it has (one modality: CM3's
  fusion is then the projected title vector, the modality-alignment model has no MMD
  term, SIGE's anchor loss has one view).

Each finished run is kept in ``benchmarks/results/real_data_zoo2_runs.json`` and in
``<work>/<dataset>/runs/<model>-seed<seed>/record-<epochs>.json`` and is not trained
again: a rerun only merges it into ``benchmarks/results/real_data.json`` (its ``runs``
list, keyed by dataset, model and seed; the file is re-read right before each write so
other writers' rows are kept, and a writer that replaced it loses nothing for good) and
recomputes the per-model summary over all runs.

    nice -n 10 .venv/bin/python -m benchmarks.real_data_zoo2 --seeds 0 --epochs 10
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.real_data import DEFAULT_DATASETS, DEFAULT_OUT, ROOT, rebase, summarise

MODELS = ["cm3", "lirdrec", "modality_alignment", "sige"]
MINILM = {"input": "text", "encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2", "normalize": True}
FEATURES: dict[str, dict[str, dict[str, Any]]] = {
    "ml100k": {
        "text_minilm": {**MINILM, "fields": ["title", "description"]},
        "genre_minilm": {**MINILM, "fields": ["category"]},
    },
    "dbbook": {"text_minilm": {**MINILM, "fields": ["title", "description"]}},
}
GRAPH_WEIGHTS = {"ml100k": {"text_minilm": 0.9, "genre_minilm": 0.1}, "dbbook": None}

RUNS = ROOT / "benchmarks" / "results" / "real_data_zoo2_runs.json"  # every finished run (rebuild input)

log = logging.getLogger("benchmarks.real_data_zoo2")


def bench_params(base: dict[str, Any], dataset: str, model: str, seed: int, args: argparse.Namespace):
    p = copy.deepcopy(base)
    p["data"] = rebase(p["profiles"][dataset], args.datasets)
    p["extract"]["features"] = copy.deepcopy(FEATURES[dataset])
    tp = p["train"]
    tp.update(backend="local", models=[model], seed=seed, seeds=[seed])
    tp["common"].update(epochs=args.epochs, patience=args.patience, eval_every=1)
    section = dict(tp.get(model) or {})
    if "feature_weights" in model_defaults(model):
        section["feature_weights"] = GRAPH_WEIGHTS[dataset]
    tp[model] = section
    p["evaluate"]["ks"] = sorted(set(p["evaluate"]["ks"]) | {20})
    return p


def model_defaults(model: str) -> dict[str, Any]:
    from training.models.base import model_class

    return model_class(model).defaults


def prepare(dataset: str, args: argparse.Namespace, base: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Ingest, extract the dataset's feature tables and build their kNN graphs (once)."""
    from pipelines import extract, ingest
    from training import graph

    work = args.work / dataset
    p = bench_params(base, dataset, MODELS[0], 0, args)
    stats = work / "reports" / "ingest.json"
    summary = json.loads(stats.read_text()) if stats.exists() else ingest.run(p, work / "store", stats)
    graphs = work / "store" / "graphs" / "item_knn"
    if not all((graphs / f).exists() for f in FEATURES[dataset]):
        extract.run(p, work / "store")
        graph.run(p, work / "store", graphs)
    return work, summary


def run_one(dataset: str, model: str, seed: int, work: Path, args: argparse.Namespace, base: dict[str, Any]):
    from training import evaluate_stage, train_stage

    p = bench_params(base, dataset, model, seed, args)
    run_dir = work / "runs" / f"{model}-seed{seed}"
    store, graphs = work / "store", work / "store" / "graphs" / "item_knn"
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
        "features": sorted(FEATURES[dataset]),
        "test": {k: metrics[model]["test"][k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")},
        "valid_recall@20": metrics[model]["valid"]["recall@20"],
        "best_epoch": summary["best_epoch"],
        "epochs": epochs,
        "hit_epoch_cap": epochs >= args.epochs,
        "train_seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(1, epochs), 3),
        "seconds_per_epoch": round(sum(r["seconds"] for r in history) / max(1, epochs), 3),
        "wall_seconds": round(train_s, 1),
    }


def merge(out: Path, run: dict[str, Any], setup: dict[str, Any]) -> None:
    """Add one run to the shared results file (re-read now; others' rows are kept)."""
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    key = (run["dataset"], run["model"], run["seed"])
    runs = [r for r in results.get("runs", []) if (r["dataset"], r["model"], r["seed"]) != key]
    runs.append(run)
    results["runs"] = runs
    results["summary"] = summarise(runs)
    results["setup_zoo2"] = setup
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", dest="names", default="ml100k,dbbook")
    ap.add_argument("--datasets-root", dest="datasets", type=Path, default=DEFAULT_DATASETS)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmrec-real-data-zoo2")
    ap.add_argument(
        "--seed-store", type=Path, default=None, help="an ml100k store to copy instead of ingesting"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 per process on a shared box)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("apache_beam", "sentence_transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.datasets.is_dir():
        print(f"skip: datasets folder {args.datasets} not found (set --datasets-root)", file=sys.stderr)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    base = yaml.safe_load(args.params.read_text())
    setup = {
        "command": "python -m benchmarks.real_data_zoo2 "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "backend": "local (in-process, the loop Ray Train wraps)",
        "features": {ds: sorted(f) for ds, f in FEATURES.items()},
        "protocol": f"Adam, batch 2048, params.yaml hyper-parameters, early stopping on valid Recall@20 "
        f"with patience {args.patience}, at most {args.epochs} epochs",
        "machine": f"{os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
    }
    for ds in args.names.split(","):
        if ds not in FEATURES:
            raise SystemExit(f"unknown dataset {ds!r}; expected one of {list(FEATURES)}")
        if args.seed_store is not None and ds == "ml100k" and not (args.work / ds / "store").exists():
            shutil.copytree(args.seed_store / "store", args.work / ds / "store")
            shutil.copytree(args.seed_store / "reports", args.work / ds / "reports")
        work, _ = prepare(ds, args, base)
        for model in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                record = work / "runs" / f"{model}-seed{seed}" / f"record-{args.epochs}.json"
                key = f"{ds}/{model}/seed{seed}/epochs{args.epochs}"
                saved = json.loads(RUNS.read_text()) if RUNS.exists() else {}
                if key in saved:
                    run = saved[key]
                elif record.exists():  # finished before: merge again (another writer may have dropped it)
                    run = json.loads(record.read_text())
                else:
                    log.info("real_data_zoo2: %s %s seed %d", ds, model, seed)
                    run = run_one(ds, model, seed, work, args, base)
                    record.write_text(json.dumps(run, indent=1) + "\n")
                saved = json.loads(RUNS.read_text()) if RUNS.exists() else {}
                saved[key] = run
                RUNS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
                merge(args.out, run, setup)
                log.info("real_data_zoo2: %s", json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
