"""Item-item kNN graphs for the multimodal models, as edge lists (never items x items).

FREEDOM uses binary top-k edges; LATTICE weights them by cosine similarity and learns a
second top-k graph from projected features each epoch. Both keep the item itself among
its k neighbours, as the reference code does (top-k of the full similarity row).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.data import TrainData
from training.knn import knn_chunked, topk_neighbours


def knn_edges(data: TrainData, name: str, k: int, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the top-k cosine graph of feature ``name``, self included.

    Reuses the graph stage's table when it has exactly ``k`` neighbours per item and was
    built with self loops; otherwise builds it here in chunks.
    """
    stored = data.knn.get(name)
    if stored is not None:
        rows, cols = stored
        counts = np.bincount(rows, minlength=data.n_items)
        if len(rows) == data.n_items * k and (counts == k).all() and (rows == cols).any():
            return np.array(rows, np.int64), np.array(cols, np.int64)  # writable copies
    rows, cols, _ = knn_chunked(data.features[name], k, chunk_size=chunk_size, self_loops=True)
    return rows, cols


def cosine_edge_values(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """cos(features[row], features[col]) per edge; differentiable in ``features``."""
    x = F.normalize(features, dim=1)
    return (x[rows] * x[cols]).sum(1)


def learned_knn_edges(
    features: torch.Tensor, k: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LATTICE's learned graph: top-k of the cosine similarity of ``features`` (indices
    found without gradient, chunk by chunk), values = those similarities with gradient.

    Equals ``topk`` + ``scatter`` of the dense similarity matrix in value and gradient,
    since top-k passes gradient only to the selected entries.
    """
    with torch.no_grad():
        x = F.normalize(features.detach(), dim=1)
        cols, _ = topk_neighbours(x, k, chunk_size=chunk_size, self_loops=True)
    rows = torch.arange(features.shape[0], device=features.device).repeat_interleave(cols.shape[1])
    cols = cols.reshape(-1)
    return rows, cols, cosine_edge_values(features, rows, cols)
