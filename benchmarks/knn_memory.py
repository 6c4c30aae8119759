"""Peak memory of building FREEDOM's item-item kNN graph for a large synthetic catalog.

A fresh child process makes ``items x dim`` random float32 features, builds the top-k
cosine graph in chunks (``training.knn.knn_chunked``) and FREEDOM's normalised sparse
adjacency from it (``training.sparse.knn_adjacency`` -> CSR), and reports its peak
resident memory (``ru_maxrss``). A dense items x items similarity matrix at 200k items
would take 160 GB; the chunked build needs the features, one ``chunk x items`` block and
the edges.

    nice -n 10 .venv/bin/python -m benchmarks.knn_memory --items 200000 --dim 384
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, peak_rss_mb, rss_mb, run_child


def child(items: int, dim: int, k: int, chunk: int, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from training.knn import knn_chunked
    from training.sparse import knn_adjacency

    torch.set_num_threads(threads)
    after_imports = rss_mb()
    feats = np.random.default_rng(0).standard_normal((items, dim), dtype=np.float32)
    with_features = rss_mb()
    t0 = time.time()
    rows, cols, _ = knn_chunked(feats, k, chunk_size=chunk, self_loops=True)
    knn_s = time.time() - t0
    adj = knn_adjacency(rows, cols, items).to_sparse_csr()
    total_s = time.time() - t0
    peak = peak_rss_mb()
    return {
        "items": items,
        "dim": dim,
        "k": k,
        "chunk_size": chunk,
        "edges": int(adj.values().numel()),
        "rss_after_imports_mb": round(after_imports, 1),
        "rss_with_features_mb": round(with_features, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_features_mb": round(peak - with_features, 1),
        "dense_similarity_would_need_mb": round(items * items * 4 / 2**20, 1),
        "knn_seconds": round(knn_s, 1),
        "total_seconds": round(total_s, 1),
        "threads": threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-gb", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "knn_memory.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.items, a.dim, a.k, a.chunk_size, a.threads)))
        return
    result = run_child(["benchmarks.knn_memory", "--child", *sys.argv[1:]])
    result["limit_mb"] = a.limit_gb * 1024
    result["within_limit"] = result["peak_rss_mb"] <= result["limit_mb"]
    print(json.dumps(result, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    if not result["within_limit"]:
        sys.exit(f"peak RSS {result['peak_rss_mb']} MB is over the {a.limit_gb} GB limit")


if __name__ == "__main__":
    main()
