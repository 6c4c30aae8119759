"""Parity of SASRec with RecBole 1.2.1 on MovieLens-100K: the same split, windows and
hyper-parameters, side by side.

1. This project's ingest (``ml100k`` profile, ``ingest.split.method: temporal``,
   leave-one-out: per user the last item by time is test, the one before valid) writes
   ``<work>/store``. The same interactions go to a RecBole atomic file whose timestamps are
   each user's rank in this project's order (time, ties by item index), so RecBole's own
   leave-one-out (``LS: valid_and_test``, ``order: TO``) holds out exactly the same items and
   builds the same training windows (checked: the sample counts must match).
2. Per seed: ours through the train and evaluate stages (``train.task: sequential``, local
   backend, one torch thread) and RecBole's ``SASRec`` + ``Trainer`` in its own virtual
   environment (``benchmarks/parity_sasrec_ref.py``, a subprocess, one thread), running at
   the same time. Both: RecBole's SASRec defaults (2 layers, 2 heads, hidden 64, inner 256,
   dropout 0.5, max length 50, CE over all items), Adam lr 1e-3, batch 2048, early stopping
   on valid NDCG@10 (RecBole's ``stopping_step`` 10 stops after 11 evaluations without a
   gain: ours runs with patience 11), at most ``--epochs`` epochs. Protocol: full ranking
   over all items, history not masked (RecBole's for sequential models).
3. ``benchmarks/results/sequential.json``: test NDCG/HR at 5/10/20, mean ± std over the
   seeds, relative gaps (target: NDCG@10 and HR@10 within 3 %), CPU seconds per epoch.

    nice -n 10 .venv/bin/python -m benchmarks.parity_sasrec --datasets DIR \\
        --recbole-python /tmp/recbole-venv/bin/python

RecBole installs into a separate venv (``python3 -m venv /tmp/recbole-venv`` then
``pip install <torch wheel> recbole==1.2.1``; never this project's ``.venv``). A missing
dataset root or RecBole interpreter: a ``skip:`` line and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import common
from benchmarks.common import RESULTS, ROOT
from training.models.sasrec import SASRec

if TYPE_CHECKING:
    from pipelines.config import Config
    from pipelines.layout import Layout

DATASET = "ml100k"
KS = (5, 10, 20)
# The model's own defaults (RecBole's SASRec defaults), minus our evaluation batch knob.
SASREC = {k: v for k, v in SASRec.defaults.items() if k != "eval_batch_size"}
RECBOLE_NAMES = {
    "hidden_size": "hidden_size",
    "n_layers": "n_layers",
    "n_heads": "n_heads",
    "inner_size": "inner_size",
    "hidden_dropout": "hidden_dropout_prob",
    "attn_dropout": "attn_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "max_seq_length": "MAX_ITEM_LIST_LENGTH",
}
METRICS = [f"{m}@{k}" for k in KS for m in ("ndcg", "hit")]


def recbole_config(epochs: int, patience: int) -> dict[str, Any]:
    """RecBole's config for the same run (its names; ``stopping_step`` = patience - 1)."""
    return {
        **{RECBOLE_NAMES[k]: v for k, v in SASREC.items()},
        "hidden_act": "gelu",
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "epochs": epochs,
        "stopping_step": patience - 1,
        "train_batch_size": 2048,
        "eval_batch_size": 4096,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "eval_step": 1,
        "metrics": ["Recall", "NDCG", "Hit"],
        "topk": list(KS),
        "valid_metric": "NDCG@10",
        "reproducibility": True,
    }


def bench_config(profile: dict[str, Any], epochs: int, patience: int, seed: int) -> Config:
    data = {
        **profile,
        "ingest": {**profile.get("ingest", {}), "split": {"method": "temporal", "leave_out": 1}},
    }
    return common.bench_config(
        data=data,
        features={},
        train={
            "task": "sequential",
            "sequential": {"mask_history": False},
            "backend": "local",
            "threads": 1,
            "models": ["sasrec"],
            "seed": seed,
            "seeds": [seed],
            "common": {"epochs": epochs, "patience": patience, "eval_every": 1, "valid_metric": "ndcg@10"},
        },
        hparams={"sasrec": SASREC},
        ks=KS,
    )


def write_atomic(layout: Layout, folder: Path, name: str) -> dict[str, int]:
    """The store's interactions as ``<folder>/<name>/<name>.inter`` with per-user ranks in
    this project's order as timestamps (RecBole sorts by time: no ties left to break)."""
    import polars as pl

    from features.store import read_table

    inter = pl.from_arrow(read_table(layout.interactions(), columns=["user_idx", "item_idx", "timestamp"]))
    inter = inter.sort(["user_idx", "timestamp", "item_idx"]).with_columns(
        pl.int_range(pl.len()).over("user_idx").alias("rank")
    )
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"u{u}\ti{i}\t{r}" for u, i, r in inter.select("user_idx", "item_idx", "rank").iter_rows()]
    (out / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return {"interactions": inter.height, "users": inter.get_column("user_idx").n_unique()}


def run_ours(config: Config, layout: Layout, seed: int) -> dict[str, Any]:
    """Train and evaluate stages for one seed; epochs timed in this process's CPU seconds."""
    import torch

    import training.loop as loop
    from pipelines.layout import Layout
    from pipelines.stages import evaluate, train
    from pipelines.stages.common import data_source
    from training.data import load_train_data
    from training.sequential import SequenceData

    run_dir = layout.store.parent / "runs" / f"sasrec-seed{seed}"
    run = Layout(store=layout.store, models=run_dir / "models", reports=run_dir)
    torch.set_num_threads(1)
    t0 = time.time()
    loop.time = types.SimpleNamespace(time=time.process_time)  # type: ignore[attr-defined]
    try:
        summary = train.run(config, run)["sasrec"]
    finally:
        loop.time = time  # type: ignore[attr-defined]
    wall = time.time() - t0
    metrics = evaluate.run(config, run)["sasrec"]
    history = json.loads((run.model_dir("sasrec") / "history.json").read_text())
    samples = len(
        SequenceData.from_train_data(load_train_data(data_source(run, [])), SASREC["max_seq_length"])
    )
    return {
        "seed": seed,
        "best_valid": summary["best_valid"],
        "best_epoch": summary["best_epoch"],
        "epochs": len(history),
        "test": {k: metrics["test"][k] for k in METRICS},
        "valid": {k: metrics["valid"][k] for k in METRICS},
        "train_seconds_per_epoch": sum(r["train_seconds"] for r in history) / max(1, len(history)),
        "wall_seconds": wall,
        "threads": torch.get_num_threads(),
        "train_samples": samples,
    }


def run_reference(python: Path, atomic: Path, seed: int, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """RecBole in its own interpreter (``parity_sasrec_ref.py``); JSON from its last line."""
    work.mkdir(parents=True, exist_ok=True)
    cfg_file = work / "config.json"
    cfg_file.write_text(json.dumps(cfg))
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "parity_sasrec_ref.py"),
        "--data-path", str(atomic), "--dataset", DATASET, "--seed", str(seed),
        "--config", str(cfg_file), "--threads", "1", "--work", str(work),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"RecBole seed {seed} failed:\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["test"] = {k: res["test"][k] for k in METRICS}
    res["valid"] = {k: res["valid"][k] for k in METRICS}
    return res


def side(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **{m: common.stat([r["test"][m] for r in rs]) for m in METRICS},
        "valid_ndcg@10": common.stat([r["valid"]["ndcg@10"] for r in rs]),
        "seconds_per_epoch": common.stat([r["train_seconds_per_epoch"] for r in rs]),
        "epochs": [r["epochs"] for r in rs],
        "best_epochs": [r["best_epoch"] for r in rs],
        "seeds": [r["seed"] for r in rs],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_datasets_option(ap)
    ap.add_argument("--recbole-python", type=Path, default=os.environ.get("MMREC_RECBOLE_PYTHON"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=300, help="epoch cap of both sides (RecBole's default 300)")
    ap.add_argument(
        "--patience", type=int, default=11, help="ours; RecBole gets stopping_step = patience - 1"
    )
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "sequential.json")
    ap.add_argument("--sides", choices=["both", "ours", "recbole"], default="both", help="which side to run")
    ap.add_argument(
        "--summarize",
        action="store_true",
        help="only write the results of the seeds already cached in --work",
    )
    args = ap.parse_args(argv)
    profiles = common.profiles_or_skip(args.datasets_root, [DATASET])
    if profiles is None:
        return
    if args.recbole_python is None or not Path(args.recbole_python).exists():
        common.skip("no RecBole interpreter (pass --recbole-python or set MMREC_RECBOLE_PYTHON)")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common.quiet_logs()
    work = args.work or Path(tempfile.mkdtemp(prefix="parity-sasrec-"))
    layout = common.work_layout(work)
    config = bench_config(profiles[DATASET], args.epochs, args.patience, args.seeds[0])
    ingest = common.prepare_store(config, layout)
    atomic = work / "recbole"
    written = write_atomic(layout, atomic, DATASET)
    ref_cfg = recbole_config(args.epochs, args.patience)
    refs: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    # Each finished seed is cached (``<work>/ours-<seed>.json``, ``<work>/ref-<seed>.json``)
    # under the run's settings: a rerun continues, ``--summarize`` reports what is done.
    tag = f"e{args.epochs}-p{args.patience}"

    def cached(kind: str, seed: int, fn: Any) -> dict[str, Any] | None:
        path = work / f"{kind}-{seed}-{tag}.json"
        if path.exists():
            return json.loads(path.read_text())
        if args.summarize:
            return None
        res = fn()
        common.write_json(path, res)
        logging.info("%s seed %d: %s", kind, seed, res["test"])
        return res

    def reference_seeds() -> None:
        try:
            for seed in args.seeds if args.sides != "ours" else []:
                refs.append(
                    cached(
                        "ref",
                        seed,
                        lambda seed=seed: run_reference(
                            Path(args.recbole_python), atomic, seed, ref_cfg, work / f"ref-{seed}"
                        ),
                    )
                )
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    thread = threading.Thread(target=reference_seeds)
    thread.start()  # RecBole and ours at the same time, one thread each
    ours: list[dict[str, Any] | None] = []
    for seed in args.seeds if args.sides != "recbole" else []:
        cfg_seed = bench_config(profiles[DATASET], args.epochs, args.patience, seed)
        ours.append(
            cached("ours", seed, lambda cfg_seed=cfg_seed, seed=seed: run_ours(cfg_seed, layout, seed))
        )
    thread.join()
    if errors:
        raise errors[0]
    ours = [x for x in ours if x is not None]
    refs = [x for x in refs if x is not None]
    if not ours or not refs:
        common.skip(f"no finished seed on both sides in {work} yet")
        return
    both = {x["seed"] for x in ours} & {x["seed"] for x in refs}  # compare the same seeds only
    ours = sorted((x for x in ours if x["seed"] in both), key=lambda r: r["seed"])
    refs = sorted((x for x in refs if x["seed"] in both), key=lambda r: r["seed"])
    o, r = side(ours), side(refs)
    rel = {
        m: round((o[m]["mean"] - r[m]["mean"]) / r[m]["mean"], 4) if r[m]["mean"] else None for m in METRICS
    }
    same_windows = {r_["train_samples"] for r_ in refs} == {x["train_samples"] for x in ours}
    result = {
        "sasrec_parity": {
            "dataset": DATASET,
            "split": "leave-one-out by time (ingest.split.method temporal, leave_out 1)",
            "protocol": "full ranking over all items, history not masked (RecBole's sequential protocol)",
            "hparams": SASREC,
            "loop": {
                "epochs_cap": args.epochs,
                "patience": args.patience,
                "batch_size": 2048,
                "lr": 1e-3,
                "valid_metric": "ndcg@10",
            },
            "data": {
                **written,
                "users_ingest": ingest.get("users"),
                "train_samples_ours": ours[0]["train_samples"],
                "train_samples_recbole": refs[0]["train_samples"],
                "same_training_windows": same_windows,
            },
            "ours": o,
            "recbole": r,
            "relative_gap": rel,
            "within_3pct": all(rel[m] is not None and abs(rel[m]) <= 0.03 for m in ("ndcg@10", "hit@10")),
            "seconds_per_epoch_ratio": round(
                o["seconds_per_epoch"]["mean"] / r["seconds_per_epoch"]["mean"], 4
            ),
            "per_seed": {"ours": ours, "recbole": refs},
            "timing": "CPU seconds of each process in its training batches (no evaluation), one torch "
            "thread each, both sides running at the same time",
            "recbole_version": refs[0].get("recbole"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "commit": common.git_commit(ROOT, short=True),
        }
    }
    previous = common.read_json(args.out)
    common.write_json(args.out, {**previous, **result})
    print(json.dumps({k: v for k, v in result["sasrec_parity"].items() if k != "per_seed"}, indent=1))


if __name__ == "__main__":
    main()
