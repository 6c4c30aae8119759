"""The computations behind the report's pictures: seeded samples, chunked cosine
neighbours, 2-D projections and thumbnails. Data in, data out; no store paths.

Neighbours are found one block of catalog rows at a time, so memory follows
``queries x chunk_rows``, never items x items.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from features.inputs import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS, Rejected, decode_image


def seeded_sample(candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` of ``candidates`` without replacement, in ascending order (stable pages)."""
    candidates = np.asarray(candidates)
    if n >= len(candidates):
        return np.sort(candidates)
    return np.sort(rng.choice(candidates, size=n, replace=False))


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def nearest_neighbours(
    matrix: np.ndarray,
    present: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    chunk_rows: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of each query row among the ``present`` rows, the query
    itself excluded: (indices, similarities), each ``(len(queries), k')`` sorted best first,
    ``k' = min(k, present - 1)``. Scans ``chunk_rows`` catalog rows at a time."""
    queries = np.asarray(queries, dtype=np.int64)
    n = matrix.shape[0]
    k_eff = max(0, min(k, int(present.sum()) - 1))
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    best_s = np.zeros((len(queries), 0), dtype=np.float32)
    if k_eff == 0 or len(queries) == 0:
        return best_i, best_s
    q = _unit(matrix[queries].astype(np.float32))
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = _unit(matrix[start:stop].astype(np.float32))
        sims = q @ block.T
        sims[:, ~present[start:stop]] = -np.inf
        own = (queries >= start) & (queries < stop)
        sims[np.nonzero(own)[0], queries[own] - start] = -np.inf
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, stop), sims.shape)], axis=1)
        cand_s = np.concatenate([best_s, sims], axis=1)
        keep = min(k_eff, cand_s.shape[1])
        part = np.argpartition(-cand_s, keep - 1, axis=1)[:, :keep]
        best_i = np.take_along_axis(cand_i, part, axis=1)
        best_s = np.take_along_axis(cand_s, part, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_s, order, axis=1)


def project_2d(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``x`` (L2-normalised first: the cosine geometry the
    neighbours use) and a caption naming the method. ``pca`` needs numpy only; ``tsne``
    uses scikit-learn (PCA to 50 dimensions first)."""
    x = _unit(np.asarray(x, dtype=np.float64))
    if len(x) < 3:
        return np.zeros((len(x), 2)), "too few items to project"
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    var = s**2 / max((s**2).sum(), 1e-12)
    if method == "pca":
        xy = u[:, :2] * s[:2]
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        shares = " and ".join(f"{v:.0%}" for v in var[:2])
        return xy, f"PCA (axes hold {shares} of the variance)"
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as e:
            raise ImportError(
                "report.map_method: tsne needs scikit-learn (pip install scikit-learn), or use pca"
            ) from e
        reduced = u[:, :50] * s[:50]
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(reduced)
        return np.asarray(xy), f"t-SNE (scikit-learn, perplexity {perplexity:.0f})"
    raise ValueError(f"report.map_method: {method!r}; expected 'pca' or 'tsne'")


def thumbnail(
    data: bytes,
    *,
    px: int,
    quality: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> str | Rejected:
    """A JPEG ``data:`` URI of the image fitted into ``px`` x ``px``, or why it cannot be
    decoded. Decoding goes through the extract stage's guarded decoder (format allowlist,
    pixel limit), so a hostile catalog file is refused here as it is there."""
    decoded = decode_image(data, max_pixels=max_pixels, formats=formats)
    if isinstance(decoded, Rejected):
        return decoded
    img = decoded.image
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
