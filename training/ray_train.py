"""Ray Train wrapper: the same ``loop.train`` on N workers with DistributedDataParallel.

Runs on a local Ray started here, or on an existing cluster when ``RAY_ADDRESS`` (or
``train.ray.address``) is set. Checkpoints go to ``train.ray.storage_path`` (a local
folder or a URI Ray understands, e.g. s3://bucket/prefix) under one run folder per
model configuration and training data, so ``train.ray.resume`` (``--resume``) finds the
checkpoint of exactly this configuration on exactly this data; a run that is not resumed
starts that folder afresh. The run name ends in a digest of the data fingerprint (the
stage's ``data_fingerprint``: split hash, row counts, feature cache keys), so after a
re-ingest of other data ``--resume`` starts fresh, saying so, instead of continuing
another dataset's checkpoint.

A warm-started run (``cfg.warm_start``) hands its workers only the previous checkpoint's
path and the id tables' paths (plain strings in the train-loop config); each worker loads
the checkpoint with ``weights_only=True`` and maps it itself (``training.warm_start``).
A restarted worker group continues from Ray's latest checkpoint instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pipelines.config import RayParams
from training.data import DataSource, load_train_data
from training.loop import TrainConfig, final_state, train

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
# Knobs that do not change the trajectory: a run may resume with other values of them.
_RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "report_every",
    "checkpoint_every",
    "checkpoint_on_best",
    "device",
)


class RayContext:
    """Reports through ``ray.train.report``; only rank 0 attaches a checkpoint."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        import ray.train

        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """After a worker failure (or with ``resume``) Ray hands back the latest checkpoint."""
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")


def worker_loop(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: load the store once, train, report."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(int(config["threads"]))
    cfg = TrainConfig(**config["cfg"])
    if cfg.device.startswith("cuda"):
        import ray.train.torch

        cfg.device = str(ray.train.torch.get_device())  # the GPU Ray assigned to this worker
    data = load_train_data(config["source"])
    train(cfg, data, RayContext())


def ensure_ray(ray_params: RayParams) -> None:
    """Connect to ``RAY_ADDRESS``/``address`` if given, else start (or reuse) a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or ray_params.address
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("connected to Ray cluster at %s", address)
    else:
        ray.init(
            num_cpus=ray_params.num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=True,
        )


def config_name(cfg: TrainConfig) -> str:
    """``<model>-<hash of the settings that shape the trajectory>``."""
    keyed = {k: v for k, v in cfg.__dict__.items() if k not in _RESUMABLE_CHANGES}
    if keyed.get("warm_start") is None:
        keyed.pop("warm_start", None)  # cold runs keep the names they had before warm starts existed
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
    return f"{cfg.model}-{digest[:10]}"


def run_name(cfg: TrainConfig, data_fingerprint: str = "") -> str:
    """``<config_name>-data<hash of the data fingerprint>``: one folder per config and dataset."""
    data = hashlib.sha256(data_fingerprint.encode()).hexdigest()[:10]
    return f"{config_name(cfg)}-data{data}"


def resume_message(storage: str, cfg: TrainConfig, name: str) -> str:
    """What ``--resume`` will do with run ``name`` under ``storage`` (a local folder or URI)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage)
    root = root.rstrip("/")
    if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound:
        return f"resume: continuing {name} from its latest checkpoint under {storage}"
    prefix = f"{config_name(cfg)}-data"
    others: list[str] = []
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
        others = sorted(
            e.base_name
            for e in entries
            if e.type == pafs.FileType.Directory and e.base_name.startswith(prefix) and e.base_name != name
        )
    if others:
        return (
            f"resume: the training data changed since the checkpoint of this configuration "
            f"({others[-1]} under {storage} was trained on other data: its data fingerprint differs); "
            f"starting {name} fresh instead of continuing another dataset's checkpoint"
        )
    return f"resume: no checkpoint of {name} under {storage}; starting fresh"


def storage_uri(ray_params: RayParams) -> str:
    """``storage_path`` as Ray wants it: an absolute local path or an untouched URI."""
    storage = ray_params.storage_path
    return storage if "://" in storage else str(Path(storage).resolve())


def _clear_run(storage: str, name: str) -> None:
    """Remove an earlier run's folder: Ray would otherwise restore its checkpoints."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage)
    path = f"{root.rstrip('/')}/{name}"
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        log.info("starting %s afresh: removing the previous run at %s", name, path)
        fs.delete_dir(path)


def fit(
    cfg: TrainConfig,
    *,
    source: DataSource,
    workers: int,
    ray_params: RayParams,
    data_fingerprint: str = "",
) -> dict[str, Any]:
    """Train with a ``TorchTrainer``; returns the final state reported by rank 0
    (``model_state`` = best weights, ``history``, ``best_epoch``, ``best_valid``, ``config``).

    ``ray_params.resume`` continues from the latest checkpoint of this configuration on
    the data ``data_fingerprint`` identifies (other data: a fresh start, logged). Each
    worker loads the data from ``source`` (absolute paths, so a cluster's workers find it
    on shared storage).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(ray_params)
    cpus = float(ray_params.cpus_per_worker)
    storage, name = storage_uri(ray_params), run_name(cfg, data_fingerprint)
    if not ray_params.resume:
        _clear_run(storage, name)
    else:
        log.info("%s", resume_message(storage, cfg, name))
    use_gpu = cfg.device.startswith("cuda")
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "cfg": cfg.__dict__,
            "source": source,
            "threads": max(1, int(cpus)),
        },
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus, **({"GPU": 1.0} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=ray_params.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=ray_params.checkpoints_to_keep),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"Ray Train run for {cfg.model} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        return final_state(torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True))
