"""The training loop: plain PyTorch, one process; Ray Train runs it per worker.

``WorkerContext`` is the only thing that differs between an in-process run and a
Ray Train worker: rank, world size and how metrics/checkpoints are reported.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from training.data import TrainData
from training.metrics import evaluate
from training.models import build_model
from training.sampling import NegativeSampler, epoch_shard

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model: str
    hparams: dict[str, Any]
    epochs: int = 200
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20
    eval_every: int = 1
    valid_metric: str = "recall@20"
    ks: tuple[int, ...] = (10, 20)
    eval_chunk_size: int = 2048
    report_every: int = 10
    seed: int = 42

    @classmethod
    def from_params(cls, model: str, train_params: dict[str, Any], ks: list[int]) -> TrainConfig:
        common = train_params.get("common", {})
        return cls(
            model=model,
            hparams=dict(train_params.get(model) or {}),
            ks=tuple(ks),
            seed=int(train_params.get("seed", 42)),
            **{
                k: common[k]
                for k in (
                    "epochs",
                    "batch_size",
                    "lr",
                    "weight_decay",
                    "patience",
                    "eval_every",
                    "valid_metric",
                    "eval_chunk_size",
                    "report_every",
                )
                if k in common
            },
        )


class WorkerContext(Protocol):
    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None: ...


@dataclass
class LocalContext:
    """Single process: keeps the last reported state in memory."""

    rank: int = 0
    world_size: int = 1
    reports: list[dict[str, Any]] = field(default_factory=list)
    final_state: dict[str, Any] | None = None

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.reports.append(metrics)
        if state is not None:
            self.final_state = state


def _broadcast_flag(flag: bool, world_size: int) -> bool:
    if world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _mean_across(value: float, world_size: int) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size


def train(cfg: TrainConfig, data: TrainData, ctx: WorkerContext) -> dict[str, Any]:
    """Train ``cfg.model`` with early stopping on the valid metric (rank 0 decides).

    Returns (on every rank) a summary; rank 0 reports the best state and the history.
    """
    torch.manual_seed(cfg.seed)  # same initial weights on every worker
    model = build_model(cfg.model, data, cfg.hparams)
    net: torch.nn.Module = model
    if ctx.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = NegativeSampler(data.train, data.n_items)
    per_worker_batch = max(1, cfg.batch_size // ctx.world_size)
    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_state, bad = -1.0, -1, None, 0
    for epoch in range(cfg.epochs):
        t0 = time.time()
        model.train()
        model.pre_epoch(np.random.default_rng([cfg.seed, epoch, 7]))
        users, pos, neg = epoch_shard(
            data.train, sampler, seed=cfg.seed, epoch=epoch, rank=ctx.rank, world_size=ctx.world_size
        )
        u_t, p_t, n_t = (torch.from_numpy(a) for a in (users, pos, neg))
        total, batches = 0.0, 0
        for start in range(0, len(u_t), per_worker_batch):
            sl = slice(start, start + per_worker_batch)
            loss = net(u_t[sl], p_t[sl], n_t[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        train_s = time.time() - t0
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": _mean_across(total / max(1, batches), ctx.world_size),
            "train_seconds": round(train_s, 4),
        }
        stop = False
        state = None
        if (epoch + 1) % cfg.eval_every == 0:
            if ctx.rank == 0:
                model.eval()
                with torch.no_grad():
                    ue, ie = model.embeddings()
                valid = evaluate(ue, ie, data.valid, data.train, data.n_users, cfg.ks, cfg.eval_chunk_size)
                row.update({f"valid_{k}": v for k, v in valid.items() if k != "users"})
                score = valid[cfg.valid_metric]
                if score > best_score:
                    best_score, best_epoch, bad = score, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += cfg.eval_every
                stop = bad >= cfg.patience
            stop = _broadcast_flag(stop, ctx.world_size)
        row["seconds"] = round(time.time() - t0, 4)
        history.append(row)
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
        last = stop or epoch == cfg.epochs - 1
        if last and ctx.rank == 0:
            state = {
                "model_state": best_state if best_state is not None else model.state_dict(),
                "best_epoch": best_epoch,
                "best_valid": best_score,
                "history": history,
                "config": cfg.__dict__,
            }
        # Reporting to Ray costs a round trip: do it every ``report_every`` epochs and at the end.
        if last or (epoch + 1) % cfg.report_every == 0:
            ctx.report({**row, "best_valid": best_score, "best_epoch": best_epoch, "done": last}, state)
        if stop:
            break
    return {"best_epoch": best_epoch, "best_valid": best_score, "epochs_run": len(history)}
