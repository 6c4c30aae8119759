"""Ray Train wrapper: the same ``loop.train`` on N workers with DistributedDataParallel.

Runs on a local Ray started here, or on an existing cluster when ``RAY_ADDRESS`` (or
``train.ray.address``) is set. Checkpoints go to ``train.ray.storage_path`` (a local
folder or a URI Ray understands, e.g. s3://...).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.data import load_train_data
from training.loop import TrainConfig, train

log = logging.getLogger(__name__)


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
            torch.save(state, Path(tmp) / "model.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def worker_loop(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: load the store, train, report."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(int(config["threads"]))
    data = load_train_data(Path(config["store"]), config["features"], Path(config["graphs"]))
    train(TrainConfig(**config["cfg"]), data, RayContext())


def ensure_ray(ray_params: dict[str, Any]) -> None:
    """Connect to ``RAY_ADDRESS``/``address`` if given, else start (or reuse) a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or ray_params.get("address")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("connected to Ray cluster at %s", address)
    else:
        ray.init(
            num_cpus=int(ray_params.get("num_cpus") or os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=True,
        )


def fit(
    cfg: TrainConfig,
    *,
    store: Path,
    features: list[str],
    graphs: Path,
    workers: int,
    ray_params: dict[str, Any],
) -> dict[str, Any]:
    """Train with a ``TorchTrainer``; returns the final state reported by rank 0."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(ray_params)
    threads = max(1, (os.cpu_count() or 2) // workers)
    storage = ray_params.get("storage_path") or ".ray_results"
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "cfg": cfg.__dict__,
            "store": str(store.resolve()),
            "features": features,
            "graphs": str(graphs.resolve()),
            "threads": threads,
        },
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=False,
            resources_per_worker={"CPU": float(ray_params.get("cpus_per_worker", 1))},
        ),
        run_config=RunConfig(
            name=f"{cfg.model}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=int(ray_params.get("max_failures", 0))),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"Ray Train run for {cfg.model} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        return torch.load(Path(d) / "model.pt", weights_only=False)
