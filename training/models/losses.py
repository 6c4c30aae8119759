"""Representation losses of the second model zoo: alignment / (calibrated) uniformity
(CM3), Gaussian-kernel MMD (modality alignment), InfoNCE and its anchor-based variant (SIGE).

Pairwise terms work on one batch at a time: a batch x batch matrix is fine, never an
items x items one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """mean ||x_i - y_i||^alpha over rows (Wang & Isola's alignment; CM3 uses alpha 2)."""
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()


def _upper(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    iu = torch.triu_indices(n, n, offset=1, device=device)
    return iu[0], iu[1]


def pair_sq_dists(x: torch.Tensor) -> torch.Tensor:
    """Squared distances of all pairs i < j, in ``torch.pdist`` order, from one matmul.

    No square root is taken, so duplicate rows (a user twice in a batch) have a finite
    zero-distance gradient where ``pdist(x).pow(2)`` would not.
    """
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    i, j = _upper(x.shape[0], x.device)
    return d[i, j]


def pair_values(m: torch.Tensor) -> torch.Tensor:
    """The entries i < j of a square matrix, in ``torch.pdist`` order."""
    i, j = _upper(m.shape[0], m.device)
    return m[i, j]


def _log_mean_exp(z: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(z, dim=0) - math.log(z.numel())


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean_{i<j} exp(-t ||x_i - x_j||^2) (Wang & Isola)."""
    return _log_mean_exp(-t * pair_sq_dists(x))


def calibrated_uniformity(x: torch.Tensor, sim: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """CM3's calibrated uniformity: log mean_{i<j} exp(-t (||x_i - x_j||^2 - 2 + 2 s_ij)).

    ``sim`` holds s_ij for the pairs i < j (``pair_values`` of a clamped similarity
    matrix). Each pair's repulsion is weighted by exp(2t (1 - s_ij)): items with similar
    content repel less. With every s_ij = 0 this is ``uniformity(x, t) + 2t`` (the same
    gradients); with every s_ij = 1 it is exactly ``uniformity(x, t)``.
    """
    return _log_mean_exp(-t * (pair_sq_dists(x) - 2.0 + 2.0 * sim))


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Biased (V-statistic) MMD^2 with kernel exp(-||a - b||^2 / (2 sigma^2)):
    mean K(x, x) + mean K(y, y) - 2 mean K(x, y). Zero when x and y are the same sample."""

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)
        return torch.exp(-d / (2.0 * bandwidth**2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2.0 * kernel(x, y).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Standard InfoNCE between row-aligned views: row i of ``b`` is the positive of row i
    of ``a``, the other rows of ``b`` its negatives (cosine similarity / tau)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def anchor_info_nce(anchor: torch.Tensor, views: Sequence[torch.Tensor], tau: float) -> torch.Tensor:
    """Anchor-based InfoNCE (SIGE): each row of ``anchor`` (a behaviour representation)
    has one positive per semantic view (the same row of every view) and, as negatives,
    the other rows of *all* views, so the views are aligned to the anchor and, through
    it, to each other:

        -1/M sum_m log [ exp(a_i . v_m,i / tau) / sum_m' sum_j exp(a_i . v_m',j / tau) ]

    With a single view it is ``info_nce(anchor, view, tau)``.
    """
    a = F.normalize(anchor, dim=1)
    logits = torch.cat([a @ F.normalize(v, dim=1).T for v in views], dim=1) / tau  # (n, M n)
    log_denominator = torch.logsumexp(logits, dim=1)
    n = a.shape[0]
    rows = torch.arange(n, device=a.device)
    positives = torch.stack([logits[rows, m * n + rows] for m in range(len(views))], dim=1)
    return (log_denominator[:, None] - positives).mean()
