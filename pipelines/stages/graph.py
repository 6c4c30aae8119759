"""Graph stage: an item-item kNN edge table per feature (``store/graphs/item_knn/<feature>``).

Exact faiss search up to ``graph.exact_max_items`` items, an approximate index beyond
(``graph.method``); an approximate graph's recall@k against exact search on a seeded sample
of items goes into the table's manifest (``knn``), so readers see what they got.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from features import schemas
from features.reader import load_features
from features.store import read_manifest, write_table
from pipelines.config import Config
from pipelines.layout import Layout
from training.knn import KnnIndex, knn_graph

log = logging.getLogger(__name__)


def run(config: Config, layout: Layout) -> dict[str, Any]:
    g = config.graph
    n_items = int(read_manifest(layout.items())["row_count"])
    spec = KnnIndex(
        **g.model_dump(exclude={"k", "chunk_size", "self_loops", "recall_sample"}),
        recall_sample=g.recall_sample,
        seed=config.seed,
    )
    summary = {}
    for name in config.feature_names():
        path = layout.feature(name)
        f = load_features(path, n_items=n_items)
        rows, cols, sims, info = knn_graph(
            f.matrix, g.k, spec=spec, chunk_size=g.chunk_size, self_loops=g.self_loops, progress=True
        )
        k_eff = len(cols) // max(1, n_items)
        table = pa.table(
            {
                "item_idx": rows,
                "neighbor_idx": cols,
                "rank": np.tile(np.arange(k_eff, dtype=np.int32), n_items),
                "similarity": sims,
            }
        )
        manifest = write_table(
            layout.graph(name, write=True),
            table,
            schemas.GRAPH_EDGES,
            feature=name,
            k=k_eff,
            self_loops=g.self_loops,
            similarity="cosine",
            items_without_feature=int((~f.present).sum()),
            source_manifest={"encoder_id": f.manifest.get("encoder_id")},
            knn={key: v for key, v in info.items() if not key.endswith("_seconds")},
        )
        summary[name] = {"edges": manifest["row_count"], "k": k_eff, **info}
        recall = info.get(f"recall_at_{k_eff}")
        log.info(
            "graph %s: %d items, k=%d, %d edges, %s search%s",
            name,
            n_items,
            k_eff,
            manifest["row_count"],
            info["method"],
            "" if recall is None else f", recall@{k_eff} {recall:.3f} on {info['recall_sample']} items",
        )
    return summary
