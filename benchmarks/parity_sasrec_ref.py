"""Run RecBole 1.2.1's SASRec once (one seed) on atomic files ``benchmarks.parity_sasrec``
wrote; JSON on the last line of stdout. Runs in RecBole's own virtual environment (never
this project's): standard library + RecBole only, no project imports.

Shims, applied by monkeypatching and never by editing RecBole: NumPy 2 removed the
``np.float``/``np.int``/... aliases RecBole still uses; torch >= 2.6 defaults
``torch.load(weights_only=True)``, which refuses RecBole's own checkpoints (they pickle its
config). ``recbole.quick_start`` is not imported (it imports Ray): the pieces are wired here
as its ``run_recbole`` does. Epoch timing: CPU seconds of this process
(``time.process_time``) spent in ``_train_epoch`` (batches only, no evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any


def apply_shims() -> None:
    import numpy as np
    import torch

    # RecBole's Config.compatibility_settings assigns np.float = np.float_ (and the like):
    # NumPy 2 removed the underscored aliases too; give both spellings their NumPy 1 meaning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in (
            ("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
            ("float", float), ("int", int), ("bool", bool), ("long", int),
            ("complex", complex), ("object", object), ("str", str), ("unicode", str),
        ):  # fmt: skip
            if name not in np.__dict__:
                setattr(np, name, value)
    original = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-path", type=Path, required=True, help="folder holding <dataset>/<dataset>.inter")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--config", type=Path, required=True, help="JSON of RecBole config overrides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args(argv)
    apply_shims()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    torch.set_num_threads(args.threads)
    overrides = json.loads(args.config.read_text())
    config = Config(
        model=SASRec,
        dataset=args.dataset,
        config_dict={
            **overrides,
            "data_path": str(args.data_path),
            "seed": args.seed,
            "checkpoint_dir": str(args.work / "saved"),
            "log_wandb": False,
            "show_progress": False,
            "use_gpu": False,
            "device": "cpu",
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    epoch_seconds: list[float] = []
    train_epoch = trainer._train_epoch

    def timed(*a: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        out = train_epoch(*a, **kw)
        epoch_seconds.append(time.process_time() - t0)
        return out

    trainer._train_epoch = timed  # type: ignore[method-assign]
    wall = time.time()
    best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    result = {
        "seed": args.seed,
        "best_valid": float(best_valid),
        "best_epoch": len(epoch_seconds) - 1 - int(trainer.cur_step),  # epochs since the best
        "epochs": len(epoch_seconds),
        "valid": {k: float(v) for k, v in best_valid_result.items()},
        "test": {k: float(v) for k, v in test.items()},
        "train_seconds_per_epoch": sum(epoch_seconds) / max(1, len(epoch_seconds)),
        "wall_seconds": time.time() - wall,
        "threads": torch.get_num_threads(),
        "n_users": int(dataset.user_num - 1),
        "n_items": int(dataset.item_num - 1),
        "train_samples": len(train_data.dataset),
        "recbole": __import__("recbole").__version__,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
