"""Graph stage: an item-item kNN edge table per feature (``store/graphs/item_knn/<feature>``)."""

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
from training.knn import knn_chunked

log = logging.getLogger(__name__)


def run(config: Config, layout: Layout) -> dict[str, Any]:
    g = config.graph
    n_items = int(read_manifest(layout.items())["row_count"])
    summary = {}
    for name in config.feature_names():
        path = layout.feature(name)
        f = load_features(path, n_items=n_items)
        rows, cols, sims = knn_chunked(
            f.matrix, g.k, chunk_size=g.chunk_size, self_loops=g.self_loops, progress=True
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
        )
        summary[name] = {"edges": manifest["row_count"], "k": k_eff}
        log.info("graph %s: %d items, k=%d, %d edges", name, n_items, k_eff, manifest["row_count"])
    return summary
