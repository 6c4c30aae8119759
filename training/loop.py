"""The training loop: plain PyTorch, one process; Ray Train runs it per worker.

``WorkerContext`` is the only thing that differs between an in-process run and a
Ray Train worker: rank, world size, how metrics/checkpoints are reported and where
a restarted run finds its latest checkpoint. Every random draw of an epoch is seeded
by (seed, epoch[, rank]), so resuming from a checkpoint replays exactly the epochs an
undisturbed run would have run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from evaluation.metrics import evaluate
from pipelines.config import CommonParams, TrainParams
from training.data import TrainData
from training.models import build_model
from training.sampling import NegativeSampler, epoch_shard
from training.sequential import is_sequential, ranking_inputs
from training.warm_start import WarmStartError, apply, cold_report

log = logging.getLogger(__name__)

_C = CommonParams()  # the loop's defaults are the params' defaults (one place)


@dataclass
class TrainConfig:
    """One training run: the model, its hyper-parameters and the loop's knobs."""

    model: str
    hparams: dict[str, Any]
    epochs: int = _C.epochs
    batch_size: int = _C.batch_size
    lr: float = _C.lr
    weight_decay: float = _C.weight_decay
    patience: int = _C.patience
    eval_every: int = _C.eval_every
    valid_metric: str = _C.valid_metric
    ks: tuple[int, ...] = (10, 20)
    eval_chunk_size: int = _C.eval_chunk_size
    report_every: int = _C.report_every
    checkpoint_every: int = _C.checkpoint_every
    checkpoint_on_best: bool = _C.checkpoint_on_best
    device: str = _C.device
    seed: int = 42
    task: str = "general"  # sequential: next-item windows and protocol (``training.sequential``)
    mask_history: bool = False
    # Set by the train stage when the run warm-starts: plain values only (the previous
    # checkpoint's path, the id tables, the init), see ``training.warm_start.plan``.
    warm_start: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, model: str, train: TrainParams, ks: list[int] | tuple[int, ...]) -> TrainConfig:
        """The first configuration of ``train.<model>`` with ``train.common`` and ``train.seed``."""
        return cls(
            model=model,
            hparams=train.section(model),
            ks=tuple(ks),
            seed=train.seed,
            task=train.task,
            mask_history=train.sequential.mask_history,
            **train.common.model_dump(),
        )


class WorkerContext(Protocol):
    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Report metrics; ``state`` (rank 0 only) is a checkpoint to persist."""
        ...

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint a restarted or resumed run continues from, if any."""
        ...


@dataclass
class LocalContext:
    """Single process: keeps the last reported state in memory and, with
    ``checkpoint_path``, also on disk so a later run can resume from it."""

    rank: int = 0
    world_size: int = 1
    reports: list[dict[str, Any]] = field(default_factory=list)
    final_state: dict[str, Any] | None = None
    checkpoint_path: Path | None = None

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.reports.append(metrics)
        if state is None:
            return
        self.final_state = final_state(state)
        if self.checkpoint_path is not None:
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.checkpoint_path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self.checkpoint_path)  # never a half-written checkpoint

    def latest_checkpoint(self) -> dict[str, Any] | None:
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, weights_only=True)


RESUME_ONLY_KEYS = ("last_state", "optim_state", "torch_rng")


def final_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without what only resuming needs (current weights, optimiser, RNG):
    best weights as ``model_state``, history, best epoch/score, config."""
    return {k: v for k, v in checkpoint.items() if k not in RESUME_ONLY_KEYS}


def _broadcast_flags(flags: list[bool], world_size: int, device: torch.device) -> list[bool]:
    """Rank 0's decisions (stop, checkpoint now) on every rank."""
    if world_size == 1:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return [bool(v) for v in t.tolist()]


def _mean_across(value: float, world_size: int, device: torch.device) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size


def move_to_device(model: torch.nn.Module, device: torch.device) -> None:
    """``model.to`` plus the plain tensor attributes (sparse graphs kept out of the buffers
    so DDP does not broadcast them), which ``.to`` does not move."""
    model.to(device)
    if device.type == "cpu":
        return
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.device != device:
                setattr(module, name, value.to(device))


@dataclass
class _Progress:
    """Everything besides the weights a resumed run needs to continue where it stopped."""

    next_epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    bad: int = 0
    stopped: bool = False  # early stopping fired; a resumed run with more epochs stays stopped
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)
    warm_start: dict[str, Any] | None = None  # how the weights were initialised (warm or cold, why)


def _checkpoint(
    cfg: TrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, p: _Progress, epoch: int
) -> dict[str, Any]:
    """Checkpoint contents: best weights as ``model_state`` (what evaluation loads), the
    current weights, optimiser and RNG state for resuming, and the early-stopping state."""
    current = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "model_state": p.best_state if p.best_state is not None else current,
        "last_state": current,
        "optim_state": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "best_epoch": p.best_epoch,
        "best_valid": p.best_score,
        "bad_epochs": p.bad,
        "stopped": p.stopped,
        "history": list(p.history),
        "resumed_from": list(p.resumed_from),
        "config": cfg.__dict__,
        **({"warm_start": p.warm_start} if p.warm_start is not None else {}),
    }


def _restore(ckpt: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer) -> _Progress:
    model.load_state_dict(ckpt["last_state"])
    opt.load_state_dict(ckpt["optim_state"])
    torch.set_rng_state(ckpt["torch_rng"])
    return _Progress(
        next_epoch=int(ckpt["epoch"]) + 1,
        best_score=float(ckpt["best_valid"]),
        best_epoch=int(ckpt["best_epoch"]),
        best_state=ckpt["model_state"] if int(ckpt["best_epoch"]) >= 0 else None,
        bad=int(ckpt["bad_epochs"]),
        stopped=bool(ckpt["stopped"]),
        history=list(ckpt["history"]),
        resumed_from=[*ckpt.get("resumed_from", []), int(ckpt["epoch"])],
        warm_start=ckpt.get("warm_start"),
    )


def train(cfg: TrainConfig, data: TrainData, ctx: WorkerContext) -> dict[str, Any]:
    """Train ``cfg.model`` with early stopping on the valid metric (rank 0 decides).

    Continues from ``ctx.latest_checkpoint()`` when there is one; else, with
    ``cfg.warm_start``, starts from the previous snapshot's weights mapped by raw id (cold,
    saying why, when they do not fit). Returns (on every rank) a summary; rank 0 reports
    the final checkpoint (best weights, history).
    """
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)  # same initial weights on every worker
    model = build_model(cfg.model, data, cfg.hparams)
    ckpt = ctx.latest_checkpoint()
    warm: dict[str, Any] | None = None
    if ckpt is None and cfg.warm_start is not None:
        try:
            warm = apply(model, data, cfg.warm_start)
        except WarmStartError as e:
            warm = cold_report(f"the previous checkpoint cannot seed this run: {e}")
            if ctx.rank == 0:
                log.warning("%s: training cold: %s", cfg.model, warm["reason"])
    move_to_device(model, device)
    # Fused Adam: one pass per step instead of ~10 kernels per parameter; it dominates on
    # CPU for models with trainable feature tables (FREEDOM's epoch: -30%). Same update rule.
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    p = _restore(ckpt, model, opt) if ckpt is not None else _Progress(warm_start=warm)
    if ckpt is not None and ctx.rank == 0:
        log.info(
            "%s: resuming after epoch %d (best %.4f at %d)",
            cfg.model,
            ckpt["epoch"],
            p.best_score,
            p.best_epoch,
        )
    net: torch.nn.Module = model
    if ctx.world_size > 1:
        # Built after restoring: DDP broadcasts rank 0's weights to the others.
        net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    sampler = NegativeSampler(data.train, data.n_items)
    per_worker_batch = max(1, cfg.batch_size // ctx.world_size)
    epoch = p.next_epoch - 1
    if p.stopped or p.next_epoch >= cfg.epochs:  # a finished run: report its final state again
        final = _checkpoint(cfg, model, opt, p, epoch) if ctx.rank == 0 else None
        ctx.report(
            {"epoch": epoch, "best_valid": p.best_score, "best_epoch": p.best_epoch, "done": True}, final
        )
        return {"best_epoch": p.best_epoch, "best_valid": p.best_score, "epochs_run": len(p.history)}
    for epoch in range(p.next_epoch, cfg.epochs):
        t0 = time.time()
        model.train()
        model.pre_epoch(np.random.default_rng([cfg.seed, epoch, 7]))
        move_to_device(model, device)  # pre_epoch may build new graph tensors on the CPU
        if is_sequential(model):  # next-item windows (training.sequential), not triples
            tensors = model.seqs.epoch(
                seed=cfg.seed, epoch=epoch, rank=ctx.rank, world_size=ctx.world_size, device=device
            )
        else:
            users, pos, neg = epoch_shard(
                data.train, sampler, seed=cfg.seed, epoch=epoch, rank=ctx.rank, world_size=ctx.world_size
            )
            tensors = tuple(torch.from_numpy(a).to(device) for a in (users, pos, neg))
        total, batches = 0.0, 0
        for start in range(0, len(tensors[0]), per_worker_batch):
            sl = slice(start, start + per_worker_batch)
            loss = net(*(t[sl] for t in tensors))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        train_s = time.time() - t0
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": _mean_across(total / max(1, batches), ctx.world_size, device),
            "train_seconds": round(train_s, 4),
        }
        stop = new_best = False
        if (epoch + 1) % cfg.eval_every == 0:
            if ctx.rank == 0:
                model.eval()
                seq_task = cfg.task == "sequential"
                ue, ie, mask = ranking_inputs(
                    model, data, "valid", sequential_task=seq_task, mask_history=cfg.mask_history
                )
                valid = evaluate(ue, ie, data.valid, mask, data.n_users, cfg.ks, cfg.eval_chunk_size)
                row.update({f"valid_{k}": v for k, v in valid.items() if k != "users"})
                score = valid[cfg.valid_metric]
                if score > p.best_score:
                    p.best_score, p.best_epoch, p.bad, new_best = score, epoch, 0, True
                    p.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    p.bad += cfg.eval_every
                stop = p.bad >= cfg.patience
            stop, new_best = _broadcast_flags([stop, new_best], ctx.world_size, device)
        row["seconds"] = round(time.time() - t0, 4)
        p.history.append(row)
        if ctx.rank == 0:
            log.info(
                "%s epoch %d loss %.4f %s=%s (%.2fs)",
                cfg.model,
                epoch,
                row["loss"],
                cfg.valid_metric,
                row.get(f"valid_{cfg.valid_metric}", "-"),
                row["seconds"],
            )
        p.stopped = stop
        done = stop or epoch == cfg.epochs - 1
        # Each report is a round trip to the Ray controller (and a checkpoint an upload):
        # report every ``report_every`` epochs, checkpoint every ``checkpoint_every``
        # (optionally at each new best), and always at the end.
        save = done or (epoch + 1) % cfg.checkpoint_every == 0 or (cfg.checkpoint_on_best and new_best)
        if save or (epoch + 1) % cfg.report_every == 0:
            state = _checkpoint(cfg, model, opt, p, epoch) if save and ctx.rank == 0 else None
            ctx.report({**row, "best_valid": p.best_score, "best_epoch": p.best_epoch, "done": done}, state)
        if stop:
            break
    return {"best_epoch": p.best_epoch, "best_valid": p.best_score, "epochs_run": len(p.history)}
