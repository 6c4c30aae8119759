"""Time and peak memory of the graph stage's kNN search (faiss) on large synthetic catalogs.

Two sides, each in a fresh child process so its peak resident memory (``ru_maxrss``) is
its own:

- **exact**: ``--exact-items`` x ``--dim`` through ``training.knn.knn_graph`` with the flat
  inner-product index (query chunks of ``--chunk-size``), then FREEDOM's normalised sparse
  adjacency from the edges (``training.sparse.knn_adjacency`` -> CSR).
- **approximate**: ``--approx-items`` x ``--dim`` through the IVF (or ``--method hnsw``)
  index, with recall@k against exact search on ``--recall-sample`` seeded items.

The vectors have low intrinsic dimension (``--latent-dim`` Gaussian factors mapped to
``--dim`` plus noise, unit norm), as text and image embeddings do; isotropic noise in 384-d
would have no meaningful neighbours and any approximate index would look bad on it.
``--exact-items 0`` or ``--approx-items 0`` skips a side.

    nice -n 10 .venv/bin/python -m benchmarks.knn_memory --exact-items 200000 --approx-items 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, peak_rss_mb, rss_mb, run_child


def synthetic(items: int, dim: int, latent_dim: int, noise: float, seed: int = 0) -> Any:
    """Unit-norm ``items x dim`` float32 vectors from ``latent_dim`` factors, made in blocks
    (no second full-size copy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((latent_dim, dim), dtype=np.float32) / np.sqrt(latent_dim)
    x = np.empty((items, dim), dtype=np.float32)
    for s in range(0, items, 65536):
        n = min(65536, items - s)
        block = rng.standard_normal((n, latent_dim), dtype=np.float32) @ proj
        block += noise * rng.standard_normal((n, dim), dtype=np.float32)
        x[s : s + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def child(side: str, a: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from training.knn import KnnIndex, knn_graph
    from training.sparse import knn_adjacency

    items = a.exact_items if side == "exact" else a.approx_items
    faiss.omp_set_num_threads(a.threads)
    after_imports = rss_mb()
    t0 = time.time()
    feats = synthetic(items, a.dim, a.latent_dim, a.noise)
    gen_s = time.time() - t0
    with_features = rss_mb()
    spec = KnnIndex(
        method="exact" if side == "exact" else a.method,
        nlist=a.nlist,
        nprobe=a.nprobe,
        hnsw_m=a.hnsw_m,
        ef_search=a.ef_search,
        recall_sample=a.recall_sample,
        threads=a.threads,
    )
    t0 = time.time()
    rows, cols, _, info = knn_graph(feats, a.k, spec=spec, chunk_size=a.chunk_size, self_loops=True)
    knn_s = time.time() - t0
    out: dict[str, Any] = {}
    if side == "exact":
        adj = knn_adjacency(rows, cols, items).to_sparse_csr()
        out["adjacency_seconds"] = round(time.time() - t0 - knn_s, 1)
        out["edges"] = int(adj.values().numel())
    else:
        out["edges"] = int(len(cols))
    peak = peak_rss_mb()
    return {
        "side": side,
        "items": items,
        "dim": a.dim,
        "latent_dim": a.latent_dim,
        "k": a.k,
        "chunk_size": a.chunk_size,
        "threads": a.threads,
        "index": info,
        **out,
        "generate_seconds": round(gen_s, 1),
        "knn_seconds": round(knn_s, 1),
        "rss_after_imports_mb": round(after_imports, 1),
        "rss_with_features_mb": round(with_features, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_features_mb": round(peak - with_features, 1),
        "dense_similarity_would_need_mb": round(items * items * 4 / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exact-items", type=int, default=200_000)
    ap.add_argument("--approx-items", type=int, default=1_000_000)
    ap.add_argument("--method", choices=["ivf", "hnsw"], default="ivf")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--nlist", type=int, default=0, help="ivf cells (0: 4 sqrt(n))")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--recall-sample", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-gb", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "knn_memory.json")
    ap.add_argument("--child", choices=["exact", "approximate"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a)))
        return
    result: dict[str, Any] = {"command": "python -m benchmarks.knn_memory " + " ".join(sys.argv[1:])}
    for side, items in (("exact", a.exact_items), ("approximate", a.approx_items)):
        if items:
            r = run_child(["benchmarks.knn_memory", "--child", side, *sys.argv[1:]])
            r["within_limit"] = r["peak_rss_mb"] <= a.limit_gb * 1024
            result[side] = r
            print(json.dumps(r, indent=1), flush=True)
    result["limit_mb"] = a.limit_gb * 1024
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    over = [s for s in ("exact", "approximate") if s in result and not result[s]["within_limit"]]
    if over:
        sys.exit(f"peak RSS of {over} over the {a.limit_gb} GB limit")


if __name__ == "__main__":
    main()
