"""Export stage: what downstream teams consume without importing this project.

Per model: user and item embedding tables (Feast-style keys and timestamps) and the
top-K recommendations per user, with already-seen items excluded. Scoring runs in
chunks of users, so memory follows the chunk, never users x items.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from features import schemas
from features.store import embeddings_to_arrow, read_table, utc_now, write_table
from training.data import Interactions, load_train_data
from training.evaluate_stage import load_model
from training.metrics import Csr

log = logging.getLogger(__name__)


def recommend(
    user_emb: torch.Tensor, item_emb: torch.Tensor, seen: Csr, k: int, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (items, scores) for every user with ``seen`` items masked; (n_users, k) each."""
    n_users = user_emb.shape[0]
    k = min(k, item_emb.shape[0])
    items = np.empty((n_users, k), dtype=np.int64)
    scores = np.empty((n_users, k), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, n_users, chunk_size), desc="recommend", unit="chunk", leave=False):
            users = np.arange(start, min(start + chunk_size, n_users))
            s = user_emb[start : start + len(users)] @ item_emb.T
            row, item = seen.rows(users)
            s[torch.from_numpy(row), torch.from_numpy(item)] = -torch.inf
            top = torch.topk(s, k, dim=1)
            items[users] = top.indices.numpy()
            scores[users] = top.values.numpy()
    return items, scores


def _embedding_table(idx: np.ndarray, ids: list[str], key: str, emb: np.ndarray, ts: pa.Array) -> pa.Table:
    return pa.table(
        {
            f"{key}_idx": idx,
            f"{key}_id": ids,
            "embedding": embeddings_to_arrow(emb),
            "event_timestamp": ts,
            "created": ts,
        }
    )


def run(params: dict[str, Any], store: Path, graphs: Path, models_dir: Path, out: Path) -> dict[str, Any]:
    ex = params["export"]
    names = list(params["train"]["models"]) if ex.get("models", "all") == "all" else list(ex["models"])
    data = load_train_data(store, list(params["extract"]["features"]), graphs)
    excluded = [s for s in ex["exclude_seen"] if s in ("train", "valid", "test")]
    parts = [data.split(s) for s in excluded]
    seen = Csr(
        Interactions(
            users=np.concatenate([p.users for p in parts]) if parts else np.zeros(0, np.int64),
            items=np.concatenate([p.items for p in parts]) if parts else np.zeros(0, np.int64),
        ),
        data.n_users,
    )
    user_ids = read_table(store / "users", ["user_id"]).column("user_id").to_pylist()
    item_ids = read_table(store / "items", ["item_id"]).column("item_id").to_pylist()
    now_us = int(utc_now().timestamp() * 1e6)
    summary = {}
    for name in names:
        model, ckpt = load_model(models_dir, name, data)
        with torch.no_grad():
            ue, ie = (t.detach().float() for t in model.embeddings())
        ts_u = pa.array(np.full(data.n_users, now_us), pa.timestamp("us", tz="UTC"))
        ts_i = pa.array(np.full(data.n_items, now_us), pa.timestamp("us", tz="UTC"))
        meta = {"model": name, "best_epoch": ckpt["best_epoch"], "best_valid": ckpt["best_valid"]}
        d = ue.shape[1]
        write_table(
            out / "embeddings" / name / "users",
            _embedding_table(np.arange(data.n_users), user_ids, "user", ue.numpy(), ts_u),
            schemas.entity_embedding_schema("user", d),
            dim=d,
            score="dot product of user and item embeddings",
            **meta,
        )
        write_table(
            out / "embeddings" / name / "items",
            _embedding_table(np.arange(data.n_items), item_ids, "item", ie.numpy(), ts_i),
            schemas.entity_embedding_schema("item", d),
            dim=d,
            **meta,
        )
        k = int(ex["k"])
        top, scores = recommend(ue, ie, seen, k, int(ex["chunk_size"]))
        k = top.shape[1]
        users = np.repeat(np.arange(data.n_users), k)
        item_arr = np.asarray(item_ids, dtype=object)
        user_arr = np.asarray(user_ids, dtype=object)
        # A user who has seen almost the whole catalog gets fewer than k rows.
        keep = np.isfinite(scores.reshape(-1))
        users, flat_top = users[keep], top.reshape(-1)[keep]
        recs = pa.table(
            {
                "user_idx": users,
                "user_id": user_arr[users].tolist(),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), data.n_users)[keep],
                "item_idx": flat_top,
                "item_id": item_arr[flat_top].tolist(),
                "score": scores.reshape(-1)[keep],
            }
        )
        write_table(
            out / "recommendations" / name, recs, schemas.RECOMMENDATIONS, k=k, excluded_seen=excluded, **meta
        )
        summary[name] = {"users": data.n_users, "items": data.n_items, "k": k}
        log.info(
            "export %s: %d user + %d item embeddings, top-%d for %d users",
            name,
            data.n_users,
            data.n_items,
            k,
            data.n_users,
        )
    return summary
