"""Parity of the second model zoo with the authors' code: CM3, LIRDRec, modality alignment (MambaRec).

Same data, split and features as ``benchmarks.parity`` (MovieLens-100K through this
project's ingest / extract / graph, exported in MMRec layout; ``text_feat.npy`` =
``text_minilm``, ``image_feat.npy`` = ``genre_minilm``). Each (model, seed) trains side by
side, interleaved, one torch thread each, with the same hyper-parameters (the first point
of each reference's grid) and the same epoch cap and early stopping (patience P in the
reference's sense = P + 1 evaluations without a gain, so ours runs with P + 1):

- ``reference``: the authors' code as published (``benchmarks.parity_zoo2_ref``);
- ``reference_fresh_eval`` (CM3, LIRDRec): the same, scoring from a fresh full-graph
  forward pass instead of the vectors cached from the last training batch;
- ``ours``: ``training.loop.train`` with the registry model.

Every finished run is also kept in ``benchmarks/results/parity_zoo2_runs.json``; with
``--cached-only`` the rows are rebuilt from it (e.g. after another writer replaced the
file) without training anything.

Seconds per epoch are CPU seconds of the training span (pre-epoch work, sampling,
batches) on both sides, so other jobs on a shared machine inflate neither. Rows go
into ``benchmarks/results/parity.json`` under ``models.<name>`` (other keys are kept:
the file is re-read right before writing).

    nice -n 10 .venv/bin/python -m benchmarks.parity_zoo2 --datasets DIR --refs /tmp/refs \\
        --max-epochs 10 --extra-path /tmp/refdeps  # refs/<owner>+<repo>/src; refdeps: torch_dct

``--datasets``: the dataset root (default ``$MMREC_DATASETS``). The root, ml-100k or a
needed reference checkout missing: a ``skip:`` line and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import common
from benchmarks.common import RESULTS, ROOT

if TYPE_CHECKING:
    from pipelines.layout import Layout

RUNS = RESULTS / "parity_zoo2_runs.json"  # every finished run, so rows can be rebuilt without <work>
DATASET = "ml100k"
TEXT, IMAGE = "text_minilm", "genre_minilm"
GRAPH_WEIGHTS = {TEXT: 0.9, IMAGE: 0.1}  # the references' mm_image_weight 0.1

# ours name -> (reference repo folder, reference class, our hparams, reference overrides,
#               lr, patience in the reference's sense, reference sides)
SPECS: dict[str, dict[str, Any]] = {
    "cm3": {
        "repo": "enoche+CM3",
        "cls": "CM3",
        "ours": {"n_ui_layers": 3, "gamma": 0.5, "max_sim": 0.8, "alpha": 0.1,
                 "feature_weights": GRAPH_WEIGHTS},
        "ref": {"n_ui_layers": 3, "gamma": 0.5, "max_sim": 0.8, "alpha": 0.1, "weight_decay": 0,
                "mm_image_weight": 0.1},
        "lr": 1e-3,
        "patience": 10,  # CM3.yaml: stopping_step 10
        "sides": ["reference", "reference_fresh_eval", "ours"],
    },
    "lirdrec": {
        "repo": "enoche+LIRDRec",
        "cls": "LIRDRec",
        "ours": {"n_ui_layers": 2, "reg_weight": 0.01, "decay_weight": 0.9, "feature_weights": GRAPH_WEIGHTS},
        "ref": {"n_ui_layers": 2, "reg_weight": 0.01, "decay_weight": 0.9, "weight_decay": 0,
                "mm_image_weight": 0.1, "learning_rate": 1e-4},
        "lr": 1e-4,
        "patience": 20,
        "sides": ["reference", "reference_fresh_eval", "ours"],
    },
    "modality_alignment": {
        "repo": "rkl71+MambaRec",
        "cls": "MambaRec",
        "ours": {"mmd_weight": 0.1, "mmd_kernel_bandwidth": 1.0, "reduce_features": [IMAGE]},
        # Constant lr on both sides: this project's loop has no lr schedule (MambaRec: 0.96^(epoch/50)).
        "ref": {"mmd_weight": 0.1, "mmd_kernel_bandwidth": 1.0, "learning_rate_scheduler": [1.0, 50]},
        "lr": 1e-3,
        "patience": 10,  # MambaRec overall.yaml: stopping_step 10
        "sides": ["reference", "ours"],
    },
}  # fmt: skip

log = logging.getLogger("parity_zoo2")


def prepare(work: Path, profile: dict[str, Any]) -> Layout:
    """The part-1 parity data (ingest -> extract -> graph -> MMRec export), reused; an
    existing export is kept (several runs may share the folder)."""
    from benchmarks.parity import prepare as prepare_ml100k

    if (work / "mmrec_data" / DATASET / "export.json").exists() and (work / "store").exists():
        return common.work_layout(work)
    return prepare_ml100k(work, profile)


def ours(layout: Layout, model: str, seed: int, max_epochs: int) -> dict[str, Any]:
    from benchmarks.parity import run_ours

    spec = SPECS[model]
    r = run_ours(layout, model, seed, max_epochs, spec["ours"], spec["lr"], spec["patience"])
    return {k: v for k, v in r.items() if k not in ("train_seconds_per_epoch_list", "eval_seconds_per_epoch")}


def run_reference(args: argparse.Namespace, model: str, seed: int, fresh: bool) -> dict[str, Any]:
    spec = SPECS[model]
    overrides = {
        **spec["ref"],
        "learning_rate": spec["lr"],
        "train_batch_size": 2048,
        "stopping_step": spec["patience"],
        "epochs": args.max_epochs,
        "topk": [10, 20],
        "valid_metric": "Recall@20",
    }
    out = args.work / "runs" / f"ref_{model}_{seed}_{int(fresh)}_{args.max_epochs}.raw.json"
    if out.exists():
        return json.loads(out.read_text())
    cmd = [
        sys.executable, "-m", "benchmarks.parity_zoo2_ref",
        "--src", str(args.refs / spec["repo"] / "src"),
        "--data-path", str(args.work / "mmrec_data"),
        "--dataset", DATASET, "--model", spec["cls"], "--seed", str(seed),
        "--config", json.dumps(overrides), "--threads", "1", "--fast-mmd", "--out", str(out),
    ]  # fmt: skip
    if fresh:
        cmd.append("--fresh-eval")
    for p in args.extra_path:
        cmd += ["--extra-path", str(p)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {side: common.side_summary(rs) for side, rs in runs.items() if rs}
    if "ours" in out:
        for ref in ("reference", "reference_fresh_eval"):
            if ref not in out:
                continue
            rel, within, ratio = common.compare_sides(out["ours"], out[ref])
            out[f"relative_difference_vs_{ref}"] = rel
            out[f"within_3_percent_of_{ref}"] = within
            out[f"seconds_per_epoch_ratio_vs_{ref}"] = ratio
    return out


def ref_commit(refs: Path | None, repo: str) -> str:
    return common.git_commit(refs / repo, short=True) if refs else "unknown"


def write_rows(out: Path, rows: dict[str, Any]) -> None:
    """Merge ``rows`` into ``models`` of the results file (re-read now: others write it too)."""
    results = common.read_json(out)
    results.setdefault("models", {}).update(rows)
    common.write_json(out, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_datasets_option(ap)
    ap.add_argument("--refs", type=Path, default=None, help="folder with <owner>+<repo>/src checkouts")
    ap.add_argument("--extra-path", type=Path, action="append", default=[], help="holds torch_dct (LIRDRec)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zoo2-parity"))
    ap.add_argument("--models", nargs="+", default=list(SPECS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--sides", nargs="+", default=None, help="subset of each model's sides")
    ap.add_argument("--out", type=Path, default=RESULTS / "parity.json")
    ap.add_argument("--cached-only", action="store_true", help="summarise finished runs, start none")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    common.quiet_logs("training", "pipelines", "features", "apache_beam")
    profiles = common.profiles_or_skip(a.datasets_root, [DATASET])
    if profiles is None:
        return
    wants_refs = not a.cached_only and (a.sides is None or any(s.startswith("reference") for s in a.sides))
    for repo in {SPECS[m]["repo"] for m in a.models} if wants_refs else ():
        if not common.reference_or_skip(a.refs and a.refs / repo, "--refs", "src", repo.replace("+", "/")):
            return
    import torch

    torch.set_num_threads(1)
    layout = prepare(a.work, profiles[DATASET])
    (a.work / "runs").mkdir(parents=True, exist_ok=True)
    saved: dict[str, Any] = json.loads(RUNS.read_text()) if RUNS.exists() else {}
    for name, record in saved.items():  # restore finished runs into the cache
        if not (a.work / "runs" / name).exists():
            (a.work / "runs" / name).write_text(json.dumps(record, indent=1) + "\n")
    runs = {m: {s: [] for s in SPECS[m]["sides"] if a.sides is None or s in a.sides} for m in a.models}
    for seed in a.seeds:  # seed-major: an interrupted benchmark still has every model's first seeds
        for model in a.models:
            for side in runs[model]:
                cached = a.work / "runs" / f"{side}_{model}_{seed}_{a.max_epochs}.json"
                if cached.exists():
                    r = json.loads(cached.read_text())
                elif a.cached_only:
                    continue
                elif side == "ours":
                    r = ours(layout, model, seed, a.max_epochs)
                else:
                    r = run_reference(a, model, seed, fresh=side == "reference_fresh_eval")
                cached.write_text(json.dumps(r, indent=1) + "\n")
                saved = json.loads(RUNS.read_text()) if RUNS.exists() else {}
                saved[cached.name] = r
                RUNS.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
                runs[model][side].append(r)
                log.info(
                    "%s %s seed %d: test R@20 %.4f N@20 %.4f, %d epochs (best %d), %.2f CPU s/epoch",
                    side, model, seed, r["test"]["recall@20"], r["test"]["ndcg@20"], r["epochs"],
                    r["best_epoch"], r["train_seconds_per_epoch"],
                )  # fmt: skip
            spec = SPECS[model]
            write_rows(
                a.out,
                {
                    model: {
                        "hyper_parameters": {
                            "ours": spec["ours"],
                            "reference": spec["ref"],
                            "lr": spec["lr"],
                        },
                        **summarise(runs[model]),
                        "setup": {
                            "dataset": "MovieLens-100K, this project's ingest (per-user seeded 8:1:1); "
                            f"text_feat = {TEXT}, image_feat = {IMAGE} (MiniLM over the genres)",
                            "reference": f"{spec['repo'].replace('+', '/')} @ "
                            f"{ref_commit(a.refs, spec['repo'])} with runtime shims "
                            "(benchmarks/parity_zoo2_ref.py)",
                            "max_epochs": a.max_epochs,
                            "patience": f"{spec['patience']} (reference's stopping_step)",
                            "threads": 1,
                            "seconds": "CPU seconds (time.process_time) of the training span per epoch",
                            "machine": f"{platform.machine()}, 2 shared cores, torch {torch.__version__}",
                            "date": time.strftime("%Y-%m-%d"),
                        },
                    }
                },
            )
    print(json.dumps({m: summarise(r) for m, r in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
