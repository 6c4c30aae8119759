"""What the benchmarks share: the dataset root, the real-dataset profiles, a benchmark's
``Config``, training one model in-process or through the stages, result statistics and
child-process measurements.

Dataset root: ``--datasets DIR`` on a benchmark, else the ``MMREC_DATASETS`` environment
variable. ``benchmarks/profiles.yaml`` holds one ``data`` section per real dataset with
``${datasets}`` standing for that root. A benchmark whose root or dataset is absent
prints one ``skip: ...`` line and exits 0. Nothing here (nor in the product) knows where
the datasets live on any one machine.

Heavy imports (torch, the stages) happen inside the functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.layout import Layout
    from training.data import TrainData
    from training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PARAMS = ROOT / "params.yaml"
PROFILES = ROOT / "benchmarks" / "profiles.yaml"
DATASETS_ENV = "MMREC_DATASETS"
PLACEHOLDER = "${datasets}"
HOW = f"pass --datasets DIR or set {DATASETS_ENV} to the dataset root"
NOISY_LOGGERS = ("apache_beam", "sentence_transformers", "httpx", "urllib3")


# ------------------------------------------------------------------------- datasets, profiles


def add_datasets_option(ap: argparse.ArgumentParser, *aliases: str) -> None:
    """``--datasets DIR`` (``args.datasets_root``): the root the profiles' ``${datasets}`` names."""
    ap.add_argument(
        "--datasets",
        *aliases,
        dest="datasets_root",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"dataset root (the folders benchmarks/profiles.yaml names); default: ${DATASETS_ENV}",
    )


def dataset_root(option: Path | str | None) -> Path | None:
    """The option, else ``$MMREC_DATASETS``, else None."""
    if option:
        return Path(option)
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else None


def _substitute(node: Any, root: str) -> Any:
    if isinstance(node, str):
        return node.replace(PLACEHOLDER, root)
    if isinstance(node, dict):
        return {k: _substitute(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, root) for v in node]
    return node


def load_profiles(root: Path, path: Path = PROFILES) -> dict[str, dict[str, Any]]:
    """Every profile of ``benchmarks/profiles.yaml`` with ``${datasets}`` replaced by ``root``."""
    raw = yaml.safe_load(path.read_text()) or {}
    return {name: _substitute(p, str(root)) for name, p in raw.items()}


def skip(reason: str) -> None:
    print(f"skip: {reason}", file=sys.stderr, flush=True)


def profiles_or_skip(option: Path | str | None, names: Iterable[str]) -> dict[str, dict[str, Any]] | None:
    """The named profiles whose files exist under the dataset root.

    Prints a ``skip:`` line for the root when it is not given or absent (returns None) and
    for each dataset whose files are missing (left out; None when none is left).
    """
    names = list(names)
    root = dataset_root(option)
    if root is None:
        skip(f"no dataset root for {', '.join(names)} ({HOW})")
        return None
    profiles = load_profiles(root)
    if not root.is_dir():
        if all(part in profiles for part in str(root).split(",")):  # the old meaning of --datasets
            raise SystemExit(f"--datasets is the dataset root (a folder); pick datasets with --names {root}")
        skip(f"dataset root {root} not found ({HOW})")
        return None
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in profiles:
            raise SystemExit(f"unknown dataset {name!r}; {PROFILES.name} has {sorted(profiles)}")
        p = profiles[name]
        missing = [Path(p[k]) for k in ("items", "interactions") if p.get(k) and not Path(p[k]).exists()]
        if missing:
            skip(f"dataset {name}: {missing[0]} not found under the dataset root {root} ({HOW})")
            continue
        out[name] = p
    return out or None


def reference_or_skip(path: Path | None, option: str, marker: str, what: str) -> bool:
    """A reference checkout given by ``option`` exists (``path / marker``); else a ``skip:`` line."""
    if path is None:
        skip(f"no {what} checkout (pass {option} DIR)")
        return False
    if not (path / marker).exists():
        skip(f"{path}: not a {what} checkout (no {marker}; pass {option} DIR)")
        return False
    return True


# -------------------------------------------------------------------------------- configs


def bench_config(
    *,
    params: Path = PARAMS,
    data: dict[str, Any] | None = None,
    features: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    hparams: dict[str, dict[str, Any]] | None = None,
    ks: Iterable[int] = (),
) -> Config:
    """``params.yaml`` with a dataset profile as ``data``, ``features`` as the extract
    features (replaced whole), ``train`` deep-merged over the train section, ``hparams``
    merged into each ``train.<model>`` section and ``ks`` added to ``evaluate.ks``."""
    from pipelines.config import Config, deep_merge

    raw = yaml.safe_load(Path(params).read_text()) or {}
    if data is not None:
        raw["data"] = copy.deepcopy(data)
    if features is not None:
        raw["extract"]["features"] = copy.deepcopy(features)
    raw["train"] = deep_merge(raw["train"], train)
    for model, section in (hparams or {}).items():
        raw["train"][model] = {**(raw["train"].get(model) or {}), **copy.deepcopy(section)}
    raw["evaluate"]["ks"] = sorted(set(raw["evaluate"]["ks"]) | set(ks))
    return Config.from_dict(raw, str(params))


def local_run_train(model: str, seed: int, epochs: int, patience: int, eval_every: int = 1) -> dict[str, Any]:
    """The ``train`` override of one in-process run: one model, one seed, the loop's caps."""
    return {
        "backend": "local",
        "models": [model],
        "seed": seed,
        "seeds": [seed],
        "common": {"epochs": epochs, "patience": patience, "eval_every": eval_every},
    }


def work_layout(work: Path) -> Layout:
    """A benchmark's own store, models and reports under ``work``."""
    from pipelines.layout import Layout

    return Layout(store=work / "store", models=work / "models", reports=work / "reports")


def quiet_logs(*names: str) -> None:
    import logging

    for name in names or NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# ------------------------------------------------------------------------------- training


def prepare_store(config: Config, layout: Layout, *, fresh: bool = False) -> dict[str, Any]:
    """Ingest (once: the split does not depend on the training seed) and, when the config
    has features, extract them and build their kNN graphs (once). Returns the ingest summary."""
    from pipelines.stages import extract, graph, ingest

    stats = layout.ingest_stats()
    summary = ingest.run(config, layout) if fresh or not stats.exists() else json.loads(stats.read_text())
    names = config.feature_names()
    if names and (fresh or not all(layout.graph(n).exists() for n in names)):
        t0 = time.time()
        extract.run(config, layout)
        graph.run(config, layout)
        summary["extract_seconds"] = round(time.time() - t0, 1)
    return summary


def stage_run(
    config: Config, store: Layout, dataset: str, seed: int, run_name: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The one model of ``config`` through the train and evaluate stages, its models and
    reports in ``<work>/runs/<run_name or model-seed<seed>>``; returns the run's record
    (``extra`` after its hyper-parameters; ``run_dir``; Matryoshka models' per-prefix test
    metrics as ``prefixes``)."""
    from pipelines.layout import Layout
    from pipelines.stages import evaluate, train

    (model,) = config.train.models
    run_dir = store.store.parent / "runs" / (run_name or f"{model}-seed{seed}")
    layout = Layout(store=store.store, models=run_dir / "models", reports=run_dir)
    t0, c0 = time.time(), time.process_time()
    summary = train.run(config, layout)[model]
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    metrics = evaluate.run(config, layout)[model]
    history = json.loads((layout.model_dir(model) / "history.json").read_text())
    epochs = len(history)
    return {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "hparams": config.train.section(model),
        **extra,
        "test": {k: metrics["test"][k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")},
        "valid_recall@20": metrics["valid"]["recall@20"],
        "best_epoch": summary["best_epoch"],
        "epochs": epochs,
        "hit_epoch_cap": epochs >= config.train.common.epochs,
        "train_seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(1, epochs), 3),
        "seconds_per_epoch": round(sum(r["seconds"] for r in history) / max(1, epochs), 3),
        "wall_seconds": round(train_s, 1),
        # CPU seconds of this process in the train stage (the local backend trains in-process):
        # unlike wall time, not inflated by other jobs on a shared machine
        "train_cpu_seconds": round(train_cpu, 1),
        **({"prefixes": metrics["prefixes"]} if "prefixes" in metrics else {}),
        "run_dir": str(run_dir),
    }


def train_in_process(cfg: TrainConfig, data: TrainData, checkpoint: Path) -> dict[str, Any]:
    """``training.loop.train`` in this process, the best weights saved to ``checkpoint`` and
    read back (``training.checkpoint.load_model``) for the test metrics (full ranking,
    train items masked). Epochs are timed in CPU seconds of this process
    (``time.process_time``), so other jobs on a shared machine do not inflate the figure."""
    import numpy as np
    import torch

    import training.loop as loop
    from evaluation.metrics import evaluate
    from training.checkpoint import load_model, save_checkpoint

    ctx = loop.LocalContext()
    t0 = time.time()
    loop.time = types.SimpleNamespace(time=time.process_time)  # type: ignore[attr-defined]
    try:
        loop.train(cfg, data, ctx)
    finally:
        loop.time = time  # type: ignore[attr-defined]
    state = ctx.final_state
    if state is None:
        raise RuntimeError(f"{cfg.model}: the loop reported no final state")
    save_checkpoint(
        checkpoint, **{k: state[k] for k in ("model_state", "config", "best_epoch", "best_valid")}
    )
    model, _ = load_model(checkpoint, data)
    ue, ie = model.inference_embeddings()
    test = evaluate(ue, ie, data.test, data.train, data.n_users, cfg.ks)
    history = state["history"]
    return {
        "model": cfg.model,
        "seed": cfg.seed,
        "best_valid": float(state["best_valid"]),
        "best_epoch": int(state["best_epoch"]),
        "epochs": len(history),
        "test": {k: float(v) for k, v in test.items() if k != "users"},
        "train_seconds_per_epoch": float(np.mean([r["train_seconds"] for r in history])),
        "train_seconds_per_epoch_list": [r["train_seconds"] for r in history],
        "eval_seconds_per_epoch": float(np.mean([r["seconds"] - r["train_seconds"] for r in history])),
        "wall_seconds": time.time() - t0,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- statistics


def stat(values: list[float]) -> dict[str, float]:
    """Mean and sample std (0 for one value), rounded to 5 decimals."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"mean": round(float(mean), 5), "std": round(float(std), 5)}


def interleave(
    a: Callable[[], dict[str, Any]],
    b: Callable[[], dict[str, Any]],
    *,
    key: str,
    rounds: int = 3,
    names: tuple[str, str] = ("a", "b"),
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run two sides alternately (A B A B ...) for ``rounds`` rounds and compare ``key`` of
    their results: the ratio a/b per round, its median and spread (min, max). On a shared
    machine the load moves between runs; alternating lets both sides see the same load, and
    the spread says how much the figure can be trusted."""
    if rounds < 1:
        raise ValueError(f"rounds: expected at least 1, got {rounds}")
    runs: dict[str, list[dict[str, Any]]] = {names[0]: [], names[1]: []}
    ratios = []
    for r in range(rounds):
        for name, side in zip(names, (a, b), strict=True):
            runs[name].append(side())
            if log:
                log(f"[round {r + 1}/{rounds}] {name}: {key} = {runs[name][-1][key]:.4g}")
        ratios.append(runs[names[0]][-1][key] / runs[names[1]][-1][key])
    med = statistics.median(ratios)
    return {
        "rounds": rounds,
        "order": "alternating " + " ".join(names * min(rounds, 2)) + (" ..." if rounds > 2 else ""),
        "key": key,
        f"ratio_{names[0]}_over_{names[1]}": {
            "median": round(med, 4),
            "min": round(min(ratios), 4),
            "max": round(max(ratios), 4),
            "spread": round(max(ratios) - min(ratios), 4),
            "per_round": [round(x, 4) for x in ratios],
        },
        "median": {n: round(statistics.median(x[key] for x in v), 4) for n, v in runs.items()},
        "runs": runs,
    }


def side_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side of a parity comparison over its seeds."""
    return {
        "recall@20": stat([r["test"]["recall@20"] for r in rs]),
        "ndcg@20": stat([r["test"]["ndcg@20"] for r in rs]),
        "valid_recall@20": stat([r["best_valid"] for r in rs]),
        "seconds_per_epoch": stat([r["train_seconds_per_epoch"] for r in rs]),
        "epochs": [r["epochs"] for r in rs],
        "best_epochs": [r["best_epoch"] for r in rs],
        "seeds": [r["seed"] for r in rs],
    }


def compare_sides(ours: dict[str, Any], ref: dict[str, Any]) -> tuple[dict[str, float], bool, float]:
    """(relative difference of test R@20 / N@20, both within 3 %, seconds-per-epoch ratio)."""
    rel = {m: round((ours[m]["mean"] - ref[m]["mean"]) / ref[m]["mean"], 4) for m in ("recall@20", "ndcg@20")}
    ratio = round(ours["seconds_per_epoch"]["mean"] / ref["seconds_per_epoch"]["mean"], 4)
    return rel, all(abs(v) <= 0.03 for v in rel.values()), ratio


def git_commit(path: Path, *, short: bool = False) -> str:
    cmd = ["git", "-C", str(path), "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, value: Any, **kw: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, **kw) + "\n")


# ------------------------------------------------------------------------ child processes


def rss_mb() -> float:
    """This process's resident memory now (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: list[str]) -> dict[str, Any]:
    """``python -m <args>`` from the project root in a fresh process (its peak RSS is its
    own); returns the JSON object on the last line of its output."""
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])
