"""Run one MMRec toolbox training (one model, one seed) with runtime shims; print JSON.

MMRec (github.com/enoche/MMRec, read and run from a checkout outside this project) needs
small shims on current libraries; they are applied here by monkeypatching, never by
editing its code:

- NumPy 2 removed ``np.float`` (its metrics use it) -> alias to ``float``;
- SciPy >= 1.12 removed ``dok_matrix._update`` (LightGCN / FREEDOM graph builders) ->
  a dict update of the matrix's entries;
- its dataset module imports ``lmdb`` (and ``torchvision``) without needing them here ->
  empty stand-in modules when they are missing;
- LATTICE calls ``.cuda()`` unconditionally -> a no-op on a CPU-only machine.

Its own training loop, evaluation and early stopping run unchanged; the training time per
epoch is the span MMRec itself logs (``epoch N training [time: ...]``: pre-epoch work,
sampling and batches, no evaluation), measured in CPU seconds of the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def apply_shims() -> None:
    import numpy as np
    import scipy.sparse as sp
    import torch

    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self: Any, data: dict) -> None:
            store = getattr(self, "_dict", None)
            if isinstance(store, dict):
                store.update(data)
            else:  # pragma: no cover - other SciPy layouts
                for key, value in data.items():
                    self[key] = value

        sp.dok_matrix._update = _update  # type: ignore[attr-defined]
    for name in ("lmdb", "torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__dict__.update({"pad": None, "resize": None})
            sys.modules[name] = mod
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]


def fit_reference(
    src: Path,
    data_path: Path,
    dataset: str,
    model: str,
    seed: int,
    overrides: dict[str, Any],
    *,
    extra_config: dict[str, Any] | None = None,
    patch_net: Callable[[Any], None] | None = None,
    time_eval: bool = False,
) -> dict[str, Any]:
    """One training of an MMRec-layout toolbox (MMRec or a fork) from its ``src`` folder.

    ``patch_net`` changes the built model before training (the forks' shims); the result
    holds the toolbox's own best valid, valid and test metrics (its names) and the
    training span per epoch in CPU seconds of this process.
    """
    os.chdir(src)  # the toolboxes read configs/ relative to the working directory
    sys.path.insert(0, str(src))
    apply_shims()
    import torch
    from utils.configurator import Config
    from utils.dataloader import EvalDataLoader, TrainDataLoader
    from utils.dataset import RecDataset
    from utils.utils import get_model, get_trainer, init_seed

    config_dict = {
        "gpu_id": 0,
        "use_gpu": False,
        "data_path": str(data_path).rstrip("/") + "/",
        "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID",
        "TIME_FIELD": "timestamp",
        "inter_file_name": f"{dataset}.inter",
        "vision_feature_file": "image_feat.npy",
        "text_feature_file": "text_feat.npy",
        "field_separator": "\t",
        "save_recommended_topk": False,
        "seed": seed,
        **(extra_config or {}),
        **overrides,
    }
    config = Config(model, dataset, config_dict)
    for key, value in config_dict.items():  # scalars win over the YAML grids
        config[key] = value
    ds = RecDataset(config)
    train_ds, valid_ds, test_ds = ds.split()
    for part in (ds, train_ds, valid_ds, test_ds):
        str(part)  # quick_start logs these; ``__str__`` sets ``inter_num``, which the loaders read
    train_data = TrainDataLoader(config, train_ds, batch_size=config["train_batch_size"], shuffle=True)
    valid_data = EvalDataLoader(
        config, valid_ds, additional_dataset=train_ds, batch_size=config["eval_batch_size"]
    )
    test_data = EvalDataLoader(
        config, test_ds, additional_dataset=train_ds, batch_size=config["eval_batch_size"]
    )
    init_seed(seed)
    train_data.pretrain_setup()
    net = get_model(model)(config, train_data).to(config["device"])
    if patch_net is not None:
        patch_net(net)
    import common.trainer

    # Its loop times epochs with ``time()``; count this process's CPU seconds instead, so
    # other jobs on a shared machine do not inflate the figure (wall time is kept too).
    common.trainer.time = time.process_time
    trainer = get_trainer()(config, net)
    train_times: list[float] = []
    original = trainer._generate_train_loss_output

    def record(epoch_idx: int, s_time: float, e_time: float, losses: Any) -> str:
        train_times.append(e_time - s_time)
        return original(epoch_idx, s_time, e_time, losses)

    trainer._generate_train_loss_output = record
    eval_times: list[float] = []
    if time_eval:
        evaluate = trainer.evaluate

        def timed_evaluate(*a: Any, **k: Any) -> dict:
            t0 = time.time()
            out = evaluate(*a, **k)
            eval_times.append(time.time() - t0)
            return out

        trainer.evaluate = timed_evaluate
    t0 = time.time()
    best_valid, valid_result, test_result = trainer.fit(
        train_data, valid_data=valid_data, test_data=test_data
    )
    epochs = len(train_times)
    return {
        "best_valid": float(best_valid),
        "best_epoch": epochs - 1 - trainer.cur_step,
        "epochs": epochs,
        "valid": {k: float(v) for k, v in valid_result.items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "train_seconds_per_epoch": sum(train_times) / max(1, epochs),
        "train_seconds_per_epoch_list": [round(t, 4) for t in train_times],
        "eval_seconds_per_epoch": sum(eval_times) / max(1, epochs),
        "wall_seconds": time.time() - t0,
        "threads": torch.get_num_threads(),
    }


def run(src: Path, data_path: Path, dataset: str, model: str, seed: int, overrides: dict[str, Any]) -> dict:
    r = fit_reference(src, data_path, dataset, model, seed, overrides, time_eval=True)
    return {"model": model, "seed": seed, **r}


def print_result(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text + "\n")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="MMRec checkout's src/ folder")
    ap.add_argument("--data-path", type=Path, required=True, help="folder holding <dataset>/ (export_mmrec)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True, help="MMRec model class name, e.g. FREEDOM")
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--config", default="{}", help="JSON of config overrides (scalars)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    result = run(a.src.resolve(), a.data_path.resolve(), a.dataset, a.model, a.seed, json.loads(a.config))
    print_result(result, a.out)


if __name__ == "__main__":
    main()
