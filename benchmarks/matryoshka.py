"""Matryoshka embeddings on real data: one model trained with ``matryoshka: [8, 16, 32, 64]``
against models trained separately at each size, and plain truncation of an ordinary model.

Per dataset, model and seed (the stages' own train + evaluate, ``train.backend: local``,
the ``benchmarks.real_data`` protocol and hyper-parameters: Adam lr 1e-3, batch 2048,
early stopping on valid Recall@20 with patience 20, at most 1000 epochs):

* the Matryoshka model (64-d, loss averaged over the prefixes 8/16/32/64): test
  Recall@20 / NDCG@20 of its first d dimensions, for every d (the evaluate stage's
  ``prefixes``);
* ordinary models trained separately at d = 8, 16, 32 and 64 (the target: the prefix at d
  reaches at least 0.95x the separate model at d);
* plain truncation: the first d dimensions of the ordinary 64-d model, evaluated as they
  are (what a consumer gets from a model not trained for it).

Training time: the ordinary and the Matryoshka 64-d model are timed side by side, A B A B
(``--timing-pairs`` pairs of ``--timing-epochs`` epochs each, no evaluation, CPU seconds
of this process so other jobs on a shared machine do not inflate either side); the median
ratio of seconds per epoch and its range are reported (target <= 1.5x), beside the whole
early-stopped runs' CPU-time ratio per seed (which also depends on how many epochs each
needed; each seed's Matryoshka run follows its ordinary 64-d run).

    nice -n 10 .venv/bin/python -m benchmarks.matryoshka --datasets DIR
    .venv/bin/python -m benchmarks.matryoshka --datasets DIR --names ml100k --models bpr --seeds 0
    .venv/bin/python -m benchmarks.matryoshka --table     # the docs table from the results

Each run is appended to the results JSON as soon as it ends (an interrupted benchmark
resumes where it stopped). ``--datasets DIR`` is the dataset root (default
``$MMREC_DATASETS``); prints a ``skip:`` line (exit 0) when it or a dataset is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from benchmarks import common, real_data
from benchmarks.common import RESULTS, ROOT

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.layout import Layout

DEFAULT_OUT = RESULTS / "matryoshka.json"
SIZES = [8, 16, 32, 64]
TRUNCATE = [8, 16, 32]  # plain truncation of the ordinary 64-d model (the issue asks d <= 16)
DATASETS = ["ml100k", "dbbook"]
MODELS = ["bpr", "lightgcn"]  # freedom: --models bpr,lightgcn,freedom
TARGETS = {"prefix_vs_separate_recall@20": ">= 0.95", "train_time_ratio": "<= 1.5"}
METRICS = ("recall@20", "ndcg@20")

log = logging.getLogger("benchmarks.matryoshka")


def variants(full: int = SIZES[-1]) -> dict[str, dict[str, Any]]:
    """Run name -> the hyper-parameters it changes: separate models per size, the Matryoshka
    one (params.yaml's ``matryoshka_rescale``, true), and the Matryoshka one without the
    per-prefix rescaling (``--variants`` picks; the last is off by default)."""
    out: dict[str, dict[str, Any]] = {f"d{d}": {"embedding_dim": d, "matryoshka": []} for d in SIZES}
    out["matryoshka"] = {"embedding_dim": full, "matryoshka": list(SIZES), "matryoshka_rescale": True}
    out["matryoshka_plain"] = {"embedding_dim": full, "matryoshka": list(SIZES), "matryoshka_rescale": False}
    return out


DEFAULT_VARIANTS = [f"d{d}" for d in SIZES] + ["matryoshka"]


def bench_config(
    profile: dict[str, Any], model: str, seed: int, hp: dict[str, Any], args: argparse.Namespace
):
    """``benchmarks.real_data``'s config (profile, one model, one seed, local backend, its
    hyper-parameters) with this run's embedding size and Matryoshka prefixes."""
    base = yaml.safe_load(args.params.read_text())
    text = {**base["extract"]["features"][real_data.TEXT_FEATURE], "fields": ["title", "description"]}
    return common.bench_config(
        params=args.params,
        data=profile,
        features={real_data.TEXT_FEATURE: text} if model == "freedom" else {},
        train=common.local_run_train(model, seed, args.epochs, args.patience, args.eval_every),
        hparams={model: {**real_data.HPARAMS[model], **hp}},
        ks=[20],
    )


def truncation(config: Config, run: dict[str, Any], store: Layout) -> dict[str, dict[str, float]]:
    """Test metrics of the first d dimensions of a trained ordinary model, d in ``TRUNCATE``."""
    from evaluation.metrics import evaluate_prefixes
    from pipelines.layout import Layout
    from pipelines.stages.common import load_data
    from training.checkpoint import load_model

    run_dir = Path(run["run_dir"])
    layout = Layout(store=store.store, models=run_dir / "models", reports=run_dir)
    data = load_data(config, store)
    model, _ = load_model(layout.checkpoint(run["model"]), data)
    ue, ie = model.inference_embeddings()
    out = evaluate_prefixes(ue, ie, TRUNCATE, data.test, data.train, data.n_users, [20])
    return {d: {k: round(m[k], 6) for k in METRICS} for d, m in out.items()}


def timing(config: Config, store: Layout, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per training epoch of the ordinary vs the Matryoshka 64-d model, A B A B."""
    from pipelines.stages.common import load_data
    from training.loop import TrainConfig

    data = load_data(config, store)
    n = args.timing_epochs
    base = TrainConfig.from_config(model, config.train, [20])
    base = dataclasses.replace(base, epochs=n, eval_every=n, patience=n, report_every=n, checkpoint_every=n)
    sides = {"ordinary": [], "matryoshka": []}
    folder = Path(tempfile.mkdtemp(prefix="mrl_timing_"))
    try:
        for _ in range(args.timing_pairs):
            for side, prefixes in (("ordinary", []), ("matryoshka", list(SIZES))):
                cfg = dataclasses.replace(base, hparams={**base.hparams, "matryoshka": prefixes})
                r = common.train_in_process(cfg, data, folder / f"{side}.pt")
                sides[side].append(round(r["train_seconds_per_epoch"], 4))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratios = [m / o for o, m in zip(sides["ordinary"], sides["matryoshka"], strict=True)]
    return {
        "epochs_per_side": n,
        "pairs": args.timing_pairs,
        "cpu_seconds_per_epoch": sides,
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset and model, per size: the Matryoshka prefix, the separate model, truncation."""
    from training.selection import mean_std

    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["model"]), {}).setdefault(r["variant"], []).append(r)
    out: dict[str, Any] = {}
    for (ds, model), by in sorted(groups.items()):
        mrl = sorted(by.get("matryoshka", []), key=lambda r: r["seed"])
        plain = sorted(by.get("matryoshka_plain", []), key=lambda r: r["seed"])
        full = sorted(by.get(f"d{SIZES[-1]}", []), key=lambda r: r["seed"])
        rows: dict[str, Any] = {}
        for d in SIZES:
            sep = sorted(by.get(f"d{d}", []), key=lambda r: r["seed"])
            row: dict[str, Any] = {}
            for metric in METRICS:
                prefix_v = [r["prefixes"][str(d)][metric] for r in mrl]
                sep_v = [r["test"][metric] for r in sep]
                row[f"matryoshka_{metric}"] = mean_std(prefix_v) if prefix_v else None
                row[f"separate_{metric}"] = mean_std(sep_v) if sep_v else None
                trunc_v = [r["truncation"][str(d)][metric] for r in full if str(d) in r.get("truncation", {})]
                if trunc_v:
                    row[f"truncated_{metric}"] = mean_std(trunc_v)
                if prefix_v and sep_v:
                    row[f"ratio_{metric}"] = round(statistics.fmean(prefix_v) / statistics.fmean(sep_v), 4)
                plain_v = [r["prefixes"][str(d)][metric] for r in plain]
                if plain_v:  # matryoshka_rescale: false
                    row[f"matryoshka_plain_{metric}"] = mean_std(plain_v)
                    if sep_v:
                        row[f"ratio_plain_{metric}"] = round(
                            statistics.fmean(plain_v) / statistics.fmean(sep_v), 4
                        )
            row["seeds"] = [r["seed"] for r in sep]
            if "ratio_recall@20" in row:
                row["meets_0.95"] = row["ratio_recall@20"] >= 0.95
            rows[str(d)] = row
        cpu = {r["seed"]: r.get("train_cpu_seconds") for r in full}
        run_ratio = [
            r["train_cpu_seconds"] / cpu[r["seed"]]
            for r in mrl
            if r.get("train_cpu_seconds") and cpu.get(r["seed"])
        ]
        out.setdefault(ds, {})[model] = {
            "sizes": rows,
            "epochs": {
                "matryoshka": [r["epochs"] for r in mrl],
                "ordinary_64": [r["epochs"] for r in full],
            },
            # whole early-stopped runs (epochs x cost per epoch, valid evaluation included), CPU
            # seconds, per seed: the Matryoshka run right after the ordinary 64-d one
            "whole_run_cpu_ratio": [round(v, 3) for v in run_ratio],
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    """The docs table: test Recall@20 (mean ± std over seeds) per size."""

    def ms(v: dict[str, float] | None) -> str:
        return f"{v['mean']:.4f} ± {v['std']:.4f}" if v else "—"

    def ratio(v: float | None) -> str:
        return f"{v:.3f}" if v is not None else "—"

    lines = [
        "| dataset | model | d | Matryoshka prefix R@20 | separate model R@20 | ratio "
        "| without rescale: prefix R@20 (ratio) | truncated 64-d R@20 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, models in results.get("summary", {}).items():
        for model, s in models.items():
            for d, row in s["sizes"].items():
                mrl, sep = ms(row["matryoshka_recall@20"]), ms(row["separate_recall@20"])
                plain = row.get("matryoshka_plain_recall@20")
                plain_s = f"{ms(plain)} ({ratio(row.get('ratio_plain_recall@20'))})" if plain else "—"
                trunc = ms(row.get("truncated_recall@20"))
                lines.append(
                    f"| {ds} | {model} | {d} | {mrl} | {sep} | {ratio(row.get('ratio_recall@20'))} "
                    f"| {plain_s} | {trunc} |"
                )
    lines += [
        "",
        "| dataset | model | CPU s/epoch ordinary → Matryoshka (median ratio, range) | whole runs |",
        "|---|---|---|---|",
    ]
    for ds, models in results.get("timing", {}).items():
        for model, t in models.items():
            o, m = t["cpu_seconds_per_epoch"]["ordinary"], t["cpu_seconds_per_epoch"]["matryoshka"]
            whole = results.get("summary", {}).get(ds, {}).get(model, {}).get("whole_run_cpu_ratio", [])
            lines.append(
                f"| {ds} | {model} | {statistics.median(o):.3f} → {statistics.median(m):.3f} "
                f"({t['ratio_median']:.2f}x, {t['ratio_min']:.2f}–{t['ratio_max']:.2f}) "
                f"| {', '.join(f'{v:.2f}x' for v in whole) or '—'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_datasets_option(ap)
    ap.add_argument("--names", default=",".join(DATASETS), help="datasets, comma-separated")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: bpr, lightgcn, freedom")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=1000, help="cap (the real_data protocol: 1000)")
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--timing-pairs", type=int, default=5, help="A B pairs of the timed comparison")
    ap.add_argument("--timing-epochs", type=int, default=10, help="epochs per timed side")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"runs per seed, comma-separated, of {list(variants())}",
    )
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmrec-matryoshka")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    ap.add_argument("--table", action="store_true", help="print the results table and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    common.quiet_logs()
    results: dict[str, Any] = common.read_json(args.out)
    if args.table:
        print(markdown(results))
        return 0
    names = args.names.split(",")
    profiles = common.profiles_or_skip(args.datasets_root, names)
    if profiles is None:
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A frozen copy: params.yaml may change during an hours-long run (the code stays the one imported).
    frozen = Path(tempfile.mkdtemp(prefix="mrl_params_")) / "params.yaml"
    shutil.copyfile(args.params, frozen)
    args.params = frozen
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    runs: list[dict[str, Any]] = results.get("runs", [])
    done = {(r["dataset"], r["model"], r["variant"], r["seed"]) for r in runs}
    results["setup"] = {
        "command": "python -m benchmarks.matryoshka " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "protocol": f"benchmarks.real_data: Adam lr 1e-3, batch 2048, early stopping on valid Recall@20 "
        f"(the full 64-d vectors) with patience {args.patience}, at most {args.epochs} epochs; "
        f"hyper-parameters {real_data.HPARAMS}",
        "sizes": SIZES,
        "loss": "mean over the prefix sizes of the model's BPR terms (equal weights), each prefix's score "
        "difference x 64 / d (matryoshka_rescale: true); variant matryoshka_plain: without the rescaling",
        "targets": TARGETS,
        "code_version": common.git_commit(ROOT, short=True),
    }
    timing_out = results.setdefault("timing", {})
    for ds in names:
        if ds not in profiles:
            continue
        profile = profiles[ds]
        store = common.work_layout(args.work / ds)
        common.prepare_store(
            bench_config(profile, "freedom" if "freedom" in models else "bpr", 0, {}, args), store
        )
        for model in models:
            for seed in seeds:
                for name, hp in variants().items():
                    if name not in args.variants.split(",") or (ds, model, name, seed) in done:
                        continue
                    config = bench_config(profile, model, seed, hp, args)
                    run_name = f"{model}-{name}-seed{seed}"
                    shutil.rmtree(store.store.parent / "runs" / run_name, ignore_errors=True)
                    log.info("matryoshka: %s %s %s seed %d", ds, model, name, seed)
                    r = common.stage_run(config, store, ds, seed, run_name=run_name, variant=name)
                    if name == f"d{SIZES[-1]}":
                        r["truncation"] = truncation(config, r, store)
                    runs.append(r)
                    done.add((ds, model, name, seed))
                    results["runs"] = runs
                    results["summary"] = summarise(runs)
                    common.write_json(args.out, results)
            if not args.no_timing and model not in timing_out.get(ds, {}):
                config = bench_config(profile, model, seeds[0], {}, args)
                timing_out.setdefault(ds, {})[model] = timing(config, store, model, args)
                common.write_json(args.out, results)
                log.info("matryoshka timing %s %s: %s", ds, model, timing_out[ds][model])
    results["summary"] = summarise(runs)
    common.write_json(args.out, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
