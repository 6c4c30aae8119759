"""Export stage: what downstream teams consume without importing this project.

Per model: user and item embedding tables (Feast-style keys and timestamps; the
manifest's ``matryoshka_prefixes`` lists the sizes a Matryoshka model's vectors may be
truncated to) and the top-K recommendations per user, with already-seen items excluded. Scoring is the
evaluation's chunked, memory-capped top-K, so memory follows the chunk, never users x items.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from evaluation.metrics import Csr, top_k
from features import schemas
from features.store import embeddings_to_arrow, read_manifest, read_table, write_table
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.stages.common import load_data
from training.checkpoint import load_model
from training.data import Interactions

log = logging.getLogger(__name__)


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


def _timestamps(n: int, us: int) -> pa.Array:
    return pa.array(np.full(n, us), pa.timestamp("us", tz="UTC"))


def run(config: Config, layout: Layout) -> dict[str, Any]:
    ex = config.export
    names = list(config.train.models) if ex.models == "all" else list(ex.models)
    data = load_data(config, layout)
    parts = [data.split(s) for s in ex.exclude_seen]
    seen = Csr(
        Interactions(
            users=np.concatenate([p.users for p in parts]) if parts else np.zeros(0, np.int64),
            items=np.concatenate([p.items for p in parts]) if parts else np.zeros(0, np.int64),
        ),
        data.n_users,
    )
    user_ids = read_table(layout.users(), ["user_id"]).column("user_id").to_pylist()
    item_ids = read_table(layout.items(), ["item_id"]).column("item_id").to_pylist()
    # Event time of the exported rows: the data time of the interactions they were trained on.
    from datetime import datetime

    created = read_manifest(layout.interactions()).get("created", "1970-01-01T00:00:00+00:00")
    now_us = int(datetime.fromisoformat(created).timestamp() * 1e6)
    item_arr = np.asarray(item_ids, dtype=object)
    user_arr = np.asarray(user_ids, dtype=object)
    summary = {}
    for name in names:
        model, ckpt = load_model(layout.checkpoint(name), data)
        ue, ie = model.inference_embeddings()
        meta = {"model": name, "best_epoch": ckpt["best_epoch"], "best_valid": ckpt["best_valid"]}
        d = ue.shape[1]
        # Matryoshka models: one table at the full size; consumers truncate to a listed prefix.
        prefix_meta = {"matryoshka_prefixes": list(model.prefixes)}
        if model.prefixes:
            prefix_meta["matryoshka_usage"] = (
                "the first d values of user and item vectors, d in matryoshka_prefixes, score as a "
                "d-dimensional model (dot product); per-prefix test metrics: reports/metrics.json"
            )
        for entity, path, ids, emb in (
            ("user", layout.user_embeddings(name, write=True), user_ids, ue),
            ("item", layout.item_embeddings(name, write=True), item_ids, ie),
        ):
            n = len(ids)
            write_table(
                path,
                _embedding_table(np.arange(n), ids, entity, emb.numpy(), _timestamps(n, now_us)),
                schemas.entity_embedding_schema(entity, d),
                dim=d,
                score="dot product of user and item embeddings",
                **prefix_meta,
                **meta,
            )
        top, scores = top_k(
            ue, ie, np.arange(data.n_users), seen, ex.k, ex.chunk_size, config.evaluate.chunk_memory_mb
        )
        k = top.shape[1]
        users = np.repeat(np.arange(data.n_users), k)
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
            layout.recommendations(name, write=True),
            recs,
            schemas.RECOMMENDATIONS,
            k=k,
            excluded_seen=list(ex.exclude_seen),
            **meta,
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
