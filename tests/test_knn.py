"""The graph stage's faiss kNN: exact search equals the torch block search up to ties, the
approximate indexes find most true neighbours and say how many."""

from __future__ import annotations

import numpy as np
import pytest

from training.knn import KnnIndex, knn_chunked, knn_graph, recall_at_k


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Vectors with low intrinsic dimension (as text embeddings have), not isotropic noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 8)).astype(np.float32)
    return latent @ rng.standard_normal((8, d)).astype(np.float32) + 0.05 * rng.standard_normal(
        (n, d)
    ).astype(np.float32)


def _assert_same_up_to_ties(a_cols, a_sims, b_cols, b_sims, n: int, k: int) -> None:
    a_cols, b_cols = a_cols.reshape(n, k), b_cols.reshape(n, k)
    np.testing.assert_allclose(a_sims.reshape(n, k), b_sims.reshape(n, k), atol=1e-5)
    for r in range(n):
        if set(a_cols[r]) != set(b_cols[r]):  # only where the k-th similarity is shared
            kth = b_sims.reshape(n, k)[r, -1]
            differ = set(a_cols[r]) ^ set(b_cols[r])
            x_sims = {c: s for c, s in zip(a_cols[r], a_sims.reshape(n, k)[r], strict=True)}
            x_sims |= {c: s for c, s in zip(b_cols[r], b_sims.reshape(n, k)[r], strict=True)}
            assert all(abs(x_sims[c] - kth) < 1e-5 for c in differ), r


@pytest.mark.parametrize("self_loops", [True, False])
def test_exact_faiss_graph_matches_the_torch_block_search_up_to_ties(self_loops: bool) -> None:
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    x[7] = x[3]  # a duplicate: a tie, and (without self loops) an item outranked by its copy
    x[11] = 0.0  # an item without the feature
    want = knn_chunked(x, 6, chunk_size=64, self_loops=self_loops)
    rows, cols, sims, info = knn_graph(
        x, 6, spec=KnnIndex(method="exact"), chunk_size=37, self_loops=self_loops
    )
    assert info["method"] == "exact" and "recall_at_6" not in info
    np.testing.assert_array_equal(rows, want[0])
    _assert_same_up_to_ties(cols, sims, want[1], want[2], 300, 6)
    c = cols.reshape(300, 6)
    assert (c[3] == 3).any() == self_loops and (c[7] == 7).any() == self_loops
    assert np.all(np.diff(sims.reshape(300, 6), axis=1) <= 1e-6)  # sorted by rank


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_index_records_its_recall_against_exact_search(method: str) -> None:
    x = _clustered(3000, 32)
    spec = KnnIndex(method=method, nlist=32, nprobe=8, recall_sample=400, seed=3)
    rows, cols, sims, info = knn_graph(x, 10, spec=spec, self_loops=False)
    assert info["method"] == method and info["recall_sample"] == 400
    assert np.bincount(rows, minlength=3000).tolist() == [10] * 3000 and not (rows == cols).any()
    # the recorded recall is the recall of these edges on the seeded sample
    exact = knn_chunked(x, 10, self_loops=False)[1].reshape(3000, 10)
    sample = np.sort(np.random.default_rng(3).choice(3000, size=400, replace=False))
    assert info["recall_at_10"] == pytest.approx(
        recall_at_k(cols.reshape(3000, 10)[sample], exact[sample]), abs=2e-3
    )
    assert info["recall_at_10"] >= 0.9
    if method == "ivf":  # seeded k-means, deterministic search: the same graph each run
        np.testing.assert_array_equal(knn_graph(x, 10, spec=spec, self_loops=False)[1], cols)


def test_auto_picks_exact_up_to_the_size_limit_and_bad_methods_are_named() -> None:
    x = _clustered(500, 8)
    assert knn_graph(x, 5, spec=KnnIndex(exact_max_items=500))[3]["method"] == "exact"
    assert knn_graph(x, 5, spec=KnnIndex(exact_max_items=499))[3]["method"] == "hnsw"
    with pytest.raises(ValueError, match=r"graph.method: expected one of .*'flat'"):
        knn_graph(x, 5, spec=KnnIndex(method="flat"))


def test_graph_stage_records_the_index_and_recall_in_the_manifest(tiny_store, tmp_path) -> None:
    import shutil

    from features.store import read_manifest, read_table
    from pipelines.layout import Layout
    from pipelines.stages import graph

    root, config, layout = tiny_store
    shutil.copytree(layout.store, tmp_path / "store")
    mine = Layout(store=tmp_path / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    name = config.feature_names()[0]
    exact = read_table(layout.graph(name)).sort_by([("item_idx", "ascending"), ("rank", "ascending")])
    assert read_manifest(layout.graph(name))["knn"] == {"method": "exact", "requested": "auto"}
    approx_config = config.model_copy(
        update={"graph": config.graph.model_copy(update={"method": "ivf", "nlist": 4, "nprobe": 4})}
    )
    summary = graph.run(approx_config, mine)[name]
    knn = read_manifest(mine.graph(name))["knn"]
    k = summary["k"]
    assert (
        knn["method"] == "ivf"
        and knn["nlist"] == 4
        and knn["recall_sample"] == min(1000, exact.num_rows // k)
    )
    approx = read_table(mine.graph(name)).sort_by([("item_idx", "ascending"), ("rank", "ascending")])
    want = exact.column("neighbor_idx").to_numpy().reshape(-1, k)
    got = approx.column("neighbor_idx").to_numpy().reshape(-1, k)
    # every cell searched: the IVF graph is the exact one, and its recorded recall says so
    assert (
        knn[f"recall_at_{k}"] == pytest.approx(recall_at_k(got, want), abs=1e-3)
        and knn[f"recall_at_{k}"] > 0.99
    )
