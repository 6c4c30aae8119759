"""Real-data runs of the second model zoo (CM3, LIRDRec, modality alignment, SIGE).

Same stage code and result format as ``benchmarks.real_data`` (ingest -> extract ->
graph -> ``pipelines.stages.train`` -> ``pipelines.stages.evaluate``, ``train.backend:
local``), on the datasets under the dataset root (``--datasets DIR`` or
``$MMREC_DATASETS``; ``--names`` picks datasets); a one-line ``skip:`` message and exit 0
when the root or a dataset is absent. These models need item features:

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

    nice -n 10 .venv/bin/python -m benchmarks.real_data_zoo2 --datasets DIR --seeds 0 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import common
from benchmarks.common import RESULTS, ROOT
from benchmarks.real_data import DEFAULT_OUT, summarise

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.layout import Layout

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

RUNS = RESULTS / "real_data_zoo2_runs.json"  # every finished run (rebuild input)

log = logging.getLogger("benchmarks.real_data_zoo2")


def bench_config(
    profile: dict[str, Any], dataset: str, model: str, seed: int, args: argparse.Namespace
) -> Config:
    """params.yaml with the dataset's profile and features, one model, one seed, local backend."""
    hparams = {}
    if "feature_weights" in model_defaults(model):
        hparams["feature_weights"] = GRAPH_WEIGHTS[dataset]
    return common.bench_config(
        params=args.params,
        data=profile,
        features=FEATURES[dataset],
        train=common.local_run_train(model, seed, args.epochs, args.patience),
        hparams={model: hparams},
        ks=[20],
    )


def model_defaults(model: str) -> dict[str, Any]:
    from training.models.base import model_class

    return model_class(model).defaults


def prepare(dataset: str, profile: dict[str, Any], args: argparse.Namespace) -> tuple[Layout, dict[str, Any]]:
    """Ingest, extract the dataset's feature tables and build their kNN graphs (once)."""
    layout = common.work_layout(args.work / dataset)
    return layout, common.prepare_store(bench_config(profile, dataset, MODELS[0], 0, args), layout)


def run_one(
    dataset: str, profile: dict[str, Any], model: str, seed: int, layout: Layout, args: argparse.Namespace
) -> dict[str, Any]:
    config = bench_config(profile, dataset, model, seed, args)
    return common.stage_run(config, layout, dataset, seed, features=sorted(FEATURES[dataset]))


def merge(out: Path, run: dict[str, Any], setup: dict[str, Any]) -> None:
    """Add one run to the shared results file (re-read now; others' rows are kept)."""
    results: dict[str, Any] = common.read_json(out)
    key = (run["dataset"], run["model"], run["seed"])
    runs = [r for r in results.get("runs", []) if (r["dataset"], r["model"], r["seed"]) != key]
    runs.append(run)
    results["runs"] = runs
    results["summary"] = summarise(runs)
    results["setup_zoo2"] = setup
    common.write_json(out, results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_datasets_option(ap, "--datasets-root")
    ap.add_argument("--names", default="ml100k,dbbook", help="datasets, comma-separated")
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
    common.quiet_logs()
    names = args.names.split(",")
    for ds in names:
        if ds not in FEATURES:
            raise SystemExit(f"unknown dataset {ds!r}; expected one of {list(FEATURES)}")
    profiles = common.profiles_or_skip(args.datasets_root, names)
    if profiles is None:
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
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
    for ds in names:
        if ds not in profiles:
            continue  # skipped above
        if args.seed_store is not None and ds == "ml100k" and not (args.work / ds / "store").exists():
            shutil.copytree(args.seed_store / "store", args.work / ds / "store")
            shutil.copytree(args.seed_store / "reports", args.work / ds / "reports")
        layout, _ = prepare(ds, profiles[ds], args)
        work = layout.store.parent
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
                    run = run_one(ds, profiles[ds], model, seed, layout, args)
                    record.write_text(json.dumps(run, indent=1) + "\n")
                saved = json.loads(RUNS.read_text()) if RUNS.exists() else {}
                saved[key] = run
                RUNS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
                merge(args.out, run, setup)
                log.info("real_data_zoo2: %s", json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
