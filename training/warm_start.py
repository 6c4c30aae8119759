"""Warm-started retraining: a new snapshot's model starts from the previous snapshot's weights.

The previous checkpoint records the raw user and item ids it was trained on (lists of
str, safe under ``torch.load(weights_only=True)``) and a digest of each feature table's
rows. Rows of user- and item-indexed tensors are mapped by raw id: a carried user or item
keeps its trained row, a removed one is dropped, a new one is initialised (items: from
the model's content features when it has them, the mean of its content-nearest carried
items; otherwise the mean of the carried rows). A trainable feature table keeps a carried
item's fine-tuned row only while that item's content is unchanged. Every other tensor is
copied. What cannot be mapped (a tensor of another shape, a missing key) is a
``WarmStartError`` and the run trains cold, saying why.

``plan`` (the stage, before training) does the cheap checks on the checkpoint; ``apply``
(the loop, in every worker) builds the mapped weights from the checkpoint's path, so no
tensor travels through the Ray config.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.errors import PlatformError
from features.store import read_table
from training.checkpoint import CheckpointError, load_checkpoint
from training.data import TrainData
from training.models.base import model_class

log = logging.getLogger(__name__)

ENTITIES = ("users", "items")
_ID_COLUMN = {"users": ("user_idx", "user_id"), "items": ("item_idx", "item_id")}


class WarmStartError(PlatformError, ValueError):
    """The previous checkpoint cannot seed this run (the run then trains cold)."""


# ------------------------------------------------------------------------------ recording


def read_ids(table: Path, entity: str) -> list[str]:
    """Raw ids of an ``items``/``users`` table in index order (``ids[idx]``)."""
    idx_col, id_col = _ID_COLUMN[entity]
    t = read_table(Path(table), columns=[idx_col, id_col])
    idx = t.column(idx_col).to_numpy()
    ids = t.column(id_col).to_pylist()
    if len(idx) and not np.array_equal(np.sort(idx), np.arange(len(idx))):
        raise WarmStartError(f"{table}: {idx_col} is not 0..{len(idx) - 1}; expected a dense index")
    out = [""] * len(ids)
    for i, rid in zip(idx.tolist(), ids, strict=True):
        out[i] = str(rid)
    return out


def row_digests(matrix: np.ndarray) -> torch.Tensor:
    """One int64 digest per row (blake2b of its float32 bytes): tells whether an item's
    content vector changed between snapshots without keeping the vectors."""
    rows = np.ascontiguousarray(matrix, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
    return torch.from_numpy(out)


def checkpoint_extras(users: Path, items: Path, data: TrainData, features: list[str]) -> dict[str, Any]:
    """What a checkpoint must hold so the next snapshot can warm-start from it: the raw ids
    (``ids.users``/``ids.items``), the feature tables read and their row digests."""
    return {
        "ids": {"users": read_ids(users, "users"), "items": read_ids(items, "items")},
        "features": sorted(features),
        "feature_digests": {n: row_digests(data.features[n]) for n in sorted(features)},
    }


# ------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Plan:
    """The stage's decision for one run: ``spec`` (plain values for ``TrainConfig.warm_start``)
    when it warm-starts, else ``reason`` says why it trains cold."""

    spec: dict[str, Any] | None
    reason: str = ""

    @property
    def warm(self) -> bool:
        return self.spec is not None


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    )


def plan(
    checkpoint: Path,
    *,
    model: str,
    hparams: dict[str, Any],
    features: list[str],
    users: Path,
    items: Path,
    init: str,
    content_k: int,
) -> Plan:
    """Whether run ``model``/``hparams`` can start from ``checkpoint`` (the previous snapshot's
    ``model.pt``): it must exist, load with ``weights_only``, be the same model with the same
    hyper-parameters on the same feature tables, and record the raw ids it was trained on."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return Plan(None, f"no previous checkpoint at {checkpoint}")
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:
        return Plan(None, f"the previous checkpoint is not usable: {e}")
    config = ckpt.get("config")
    if not isinstance(config, dict) or config.get("model") != model:
        got = config.get("model") if isinstance(config, dict) else None
        return Plan(None, f"the previous checkpoint {checkpoint} is of model {got!r}, not {model!r}")
    # Compared with the model's defaults filled in: a newly added knob at its default is no change.
    defaults = model_class(model).defaults
    old_hp, new_hp = {**defaults, **(config.get("hparams") or {})}, {**defaults, **hparams}
    if old_hp != new_hp:
        return Plan(
            None, f"hyper-parameters changed since the previous checkpoint ({_changes(old_hp, new_hp)})"
        )
    ids = ckpt.get("ids")
    if not isinstance(ids, dict) or not all(isinstance(ids.get(e), list) for e in ENTITIES):
        return Plan(
            None,
            f"the previous checkpoint {checkpoint} records no raw user/item ids (written before warm "
            "start existed), so its rows cannot be mapped to this snapshot",
        )
    if sorted(ckpt.get("features") or []) != sorted(features):
        return Plan(
            None,
            f"feature tables changed since the previous checkpoint ({sorted(ckpt.get('features') or [])} -> "
            f"{sorted(features)})",
        )
    spec = {
        "checkpoint": str(checkpoint.resolve()),
        "users": str(Path(users).resolve()),
        "items": str(Path(items).resolve()),
        "init": init,
        "content_k": int(content_k),
    }
    return Plan(spec)


# ------------------------------------------------------------------------------ mapping


def _source_index(old_ids: list[str], new_ids: list[str]) -> np.ndarray:
    """For each new index, the old index of the same raw id, or -1 (a new row)."""
    where = {rid: i for i, rid in enumerate(old_ids)}
    return np.fromiter((where.get(r, -1) for r in new_ids), dtype=np.int64, count=len(new_ids))


def _feature_keys(model: torch.nn.Module) -> dict[str, str]:
    """State-dict keys holding a feature table (trainable copies of the content vectors):
    a freshly built model's tensor equal to a feature's values is that feature's table."""
    features = getattr(model, "features", []) or []
    out: dict[str, str] = {}
    for key, t in model.state_dict().items():
        for f in features:
            if tuple(t.shape) == f.values.shape and torch.equal(t.detach().cpu().float(), f.tensor()):
                out[key] = f.name
                break
    return out


def _entity_of(key: str, new: torch.Tensor, old: torch.Tensor, n: dict[str, tuple[int, int]]) -> str | None:
    """``users``/``items`` when ``key``'s rows are users or items (first dimension the
    count in both snapshots; the name decides when both counts fit), else None."""
    if new.dim() == 0 or old.dim() == 0:
        return None
    fits = [e for e in ENTITIES if new.shape[0] == n[e][1] and old.shape[0] == n[e][0]]
    named = [e for e in fits if e[:-1] in key.lower()]  # "user" / "item" in the name
    if len(named) == 1:
        return named[0]
    if len(fits) == 1 and not any(e[:-1] in key.lower() for e in ENTITIES):
        return fits[0]
    if len(fits) > 1:
        raise WarmStartError(
            f"parameter {key}: {new.shape[0]} rows fits both users and items; cannot tell which it holds"
        )
    return None


def _content_matrix(model: torch.nn.Module) -> np.ndarray | None:
    """The model's feature tables, each row L2-normalised, side by side (cosine = mean over tables)."""
    features = getattr(model, "features", []) or []
    if not features:
        return None
    parts = []
    for f in features:
        x = np.asarray(f.values, dtype=np.float32)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) / np.sqrt(len(features)))
    return np.concatenate(parts, axis=1)


def content_neighbours(
    content: np.ndarray, new_rows: np.ndarray, carried_rows: np.ndarray, k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For each new item, its ``k`` most content-similar carried items (new indices) and
    their weights (positive cosines, summing to 1; uniform when none is positive).
    Chunked over the new items: memory is chunk x carried, never items x items."""
    k = max(1, min(k, len(carried_rows)))
    cand = content[carried_rows]
    nbrs = np.empty((len(new_rows), k), dtype=np.int64)
    weights = np.empty((len(new_rows), k), dtype=np.float32)
    for s in range(0, len(new_rows), chunk):
        sims = content[new_rows[s : s + chunk]] @ cand.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.clip(np.take_along_axis(sims, top, axis=1), 0, None)
        none = w.sum(axis=1) <= 0
        w[none] = 1.0
        nbrs[s : s + chunk] = carried_rows[top]
        weights[s : s + chunk] = w / w.sum(axis=1, keepdims=True)
    return nbrs, weights


@dataclass
class _Entity:
    src: np.ndarray  # new index -> old index or -1
    n_old: int

    @property
    def carried(self) -> np.ndarray:
        return np.flatnonzero(self.src >= 0)

    @property
    def new(self) -> np.ndarray:
        return np.flatnonzero(self.src < 0)

    def counts(self) -> dict[str, int]:
        c = int((self.src >= 0).sum())
        return {"carried": c, "new": len(self.src) - c, "removed": self.n_old - c, "total": len(self.src)}


def map_state(
    model: torch.nn.Module,
    ckpt: dict[str, Any],
    new_ids: dict[str, list[str]],
    data: TrainData,
    *,
    init: str = "content",
    content_k: int = 10,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict that starts ``model`` (freshly built on this snapshot's ``data``) from
    checkpoint ``ckpt`` (``model_state``, ``ids``, ``feature_digests``), and a report of
    what was carried, added and dropped."""
    old_state: dict[str, torch.Tensor] = ckpt["model_state"]
    fresh = model.state_dict()
    missing = sorted(set(fresh) - set(old_state))
    extra = sorted(set(old_state) - set(fresh))
    if missing or extra:
        raise WarmStartError(
            "the checkpoint's weights do not match this model "
            f"(missing {missing[:5]}, unexpected {extra[:5]})"
        )
    old_ids = ckpt["ids"]
    ent = {e: _Entity(_source_index(old_ids[e], new_ids[e]), len(old_ids[e])) for e in ENTITIES}
    for e in ENTITIES:
        if len(new_ids[e]) != (data.n_users if e == "users" else data.n_items):
            raise WarmStartError(
                f"{len(new_ids[e])} {e} ids for a model of {data.n_users} users / {data.n_items} items"
            )
    n = {e: (ent[e].n_old, len(ent[e].src)) for e in ENTITIES}
    feature_keys = _feature_keys(model)
    content = _content_matrix(model)
    items = ent["items"]
    item_init = init
    nbrs = weights = None
    if init == "content":
        if content is None or not len(items.carried):
            item_init = "mean"
        elif len(items.new):
            nbrs, weights = content_neighbours(content, items.new, items.carried, content_k)
    digests_old = ckpt.get("feature_digests") or {}
    changed: dict[str, int] = {}
    tables: dict[str, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, new_t in fresh.items():
        old_t = old_state[key]
        entity = "items" if key in feature_keys else _entity_of(key, new_t, old_t, n)
        if entity is None:
            if tuple(old_t.shape) != tuple(new_t.shape):
                raise WarmStartError(
                    f"parameter {key}: shape {tuple(new_t.shape)} here, "
                    f"{tuple(old_t.shape)} in the checkpoint"
                )
            out[key] = old_t.to(new_t.dtype).clone()
            continue
        tables[key] = entity
        if tuple(old_t.shape[1:]) != tuple(new_t.shape[1:]):
            raise WarmStartError(
                f"parameter {key}: rows of shape {tuple(new_t.shape[1:])} here, "
                f"{tuple(old_t.shape[1:])} in the checkpoint"
            )
        m = ent[entity]
        row = new_t.detach().clone()
        carried = torch.from_numpy(m.carried)
        row[carried] = old_t[torch.from_numpy(m.src[m.carried])].to(row.dtype)
        if key in feature_keys:
            # A feature table: new items start from their content vector (the fresh table);
            # a carried item keeps its fine-tuned row only while its content is unchanged.
            name = feature_keys[key]
            old_d = digests_old.get(name)
            if old_d is not None:
                new_d = row_digests(data.features[name])
                same = np.zeros(len(m.src), dtype=bool)
                same[m.carried] = old_d.numpy()[m.src[m.carried]] == new_d.numpy()[m.carried]
                stale = torch.from_numpy(m.carried[~same[m.carried]])
                row[stale] = new_t[stale]
                changed[name] = len(stale)
            out[key] = row
            continue
        new_rows = torch.from_numpy(m.new)
        if len(new_rows) and row.is_floating_point() and len(m.carried):
            how = item_init if entity == "items" else ("random" if init == "random" else "mean")
            if how == "content" and nbrs is not None and weights is not None:
                src_rows = old_t[torch.from_numpy(m.src[nbrs.reshape(-1)])].to(row.dtype)
                src_rows = src_rows.reshape(len(m.new), nbrs.shape[1], *row.shape[1:])
                w = (
                    torch.from_numpy(weights)
                    .to(row.dtype)
                    .reshape(len(m.new), nbrs.shape[1], *([1] * (row.dim() - 1)))
                )
                row[new_rows] = (w * src_rows).sum(1)
            elif how == "mean":
                # The carried rows' mean plus this model's own initial draw's deviation, so
                # new rows are not all identical (constant-initialised tables get the mean).
                draw = new_t[new_rows] - new_t.mean(0, keepdim=True)
                row[new_rows] = row[carried].mean(0, keepdim=True) + draw
        out[key] = row
    report = {
        "mode": "warm",
        "from": str(ckpt.get("_path", "")),
        "users": ent["users"].counts(),
        "items": ent["items"].counts(),
        "init": {"items": item_init, "users": "random" if init == "random" else "mean"},
        "content_changed": changed,
        "tables": tables,
    }
    return out, report


def apply(model: torch.nn.Module, data: TrainData, spec: dict[str, Any]) -> dict[str, Any]:
    """Load the mapped weights of ``spec['checkpoint']`` into ``model`` (built on ``data``);
    returns the report. Raises ``WarmStartError`` when the checkpoint cannot seed it."""
    path = Path(spec["checkpoint"])
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise WarmStartError(str(e)) from e
    if not isinstance(ckpt.get("ids"), dict):
        raise WarmStartError(f"checkpoint {path}: records no raw user/item ids")
    new_ids = {
        "users": read_ids(Path(spec["users"]), "users"),
        "items": read_ids(Path(spec["items"]), "items"),
    }
    ckpt["_path"] = str(path)
    state, report = map_state(
        model,
        ckpt,
        new_ids,
        data,
        init=str(spec.get("init", "content")),
        content_k=int(spec.get("content_k", 10)),
    )
    model.load_state_dict(state)
    return report


def cold_report(reason: str) -> dict[str, Any]:
    return {"mode": "cold", "reason": reason}


def describe(report: dict[str, Any]) -> str:
    """One log line: ``warm start from <path>: 1,950 of 2,000 items and 1,900 of 2,000 users
    carried over, 50 new items initialised from content, ...`` or why it trained cold."""
    if report.get("mode") != "warm":
        return f"training cold: {report.get('reason', 'warm start not requested')}"
    i, u = report["items"], report["users"]
    how = {
        "content": "from content",
        "mean": "at the carried items' mean",
        "random": "by the model's own init",
    }
    parts = [
        f"warm start from {report['from']}: {i['carried']:,} of {i['total']:,} items and "
        f"{u['carried']:,} of {u['total']:,} users carried over"
    ]
    if i["new"]:
        parts.append(f"{i['new']:,} new items initialised {how[report['init']['items']]}")
    if u["new"]:
        user_how = (
            "at the carried users' mean" if report["init"]["users"] == "mean" else "by the model's own init"
        )
        parts.append(f"{u['new']:,} new users initialised {user_how}")
    if i["removed"] or u["removed"]:
        parts.append(f"{i['removed']:,} items and {u['removed']:,} users dropped")
    for name, k in sorted((report.get("content_changed") or {}).items()):
        if k:
            parts.append(f"{k:,} changed items take their new {name} vectors")
    return ", ".join(parts)
