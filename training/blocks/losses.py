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


def neg_sq_dists(x: torch.Tensor, t: float, y: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix -t ||x_i - y_j||^2 (``y`` defaults to ``x``) from a single matmul of
    augmented rows [x_i, |x_i|^2, 1] . [2t y_j, -t, -t |y_j|^2]: no square root (duplicate
    rows, e.g. a user twice in a batch, keep a finite gradient) and no n x n elementwise
    passes."""
    y = x if y is None else y
    sx, sy = x.pow(2).sum(1, keepdim=True), y.pow(2).sum(1, keepdim=True)
    a = torch.cat([x, sx, torch.ones_like(sx)], 1)
    b = torch.cat([2.0 * t * y, torch.full_like(sy, -t), -t * sy], 1)
    return a @ b.T


def _log_mean_exp_pairs(z: torch.Tensor) -> torch.Tensor:
    """log mean_{i<j} exp(z_ij) of a fresh symmetric (n, n) matrix (its diagonal is
    overwritten): the i != j terms hold every pair twice, so it is the logsumexp over
    i != j minus log n(n-1), without gathering the n^2 / 2 upper-triangle entries."""
    n = z.shape[0]
    z.diagonal().fill_(float("-inf"))
    return torch.logsumexp(z.flatten(), dim=0) - math.log(n * (n - 1))


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean_{i<j} exp(-t ||x_i - x_j||^2) (Wang & Isola; ``torch.pdist`` pairs)."""
    return _log_mean_exp_pairs(neg_sq_dists(x, t))


def calibrated_uniformity(x: torch.Tensor, sim: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """CM3's calibrated uniformity: log mean_{i<j} exp(-t (||x_i - x_j||^2 - 2 + 2 s_ij)).

    ``sim`` is the symmetric (n, n) matrix of s_ij (CM3: clamped cosines of the items'
    fused content vectors). Each pair's repulsion is weighted by exp(2t (1 - s_ij)):
    items with similar content repel less. With every s_ij = 0 this is
    ``uniformity(x, t) + 2t`` (a constant apart: the same gradients); with every
    s_ij = 1 it is exactly ``uniformity(x, t)``.
    """
    return _log_mean_exp_pairs(torch.add(neg_sq_dists(x, t), sim, alpha=-2.0 * t)) + 2.0 * t


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Biased (V-statistic) MMD^2 with kernel exp(-||a - b||^2 / (2 sigma^2)):
    mean K(x, x) + mean K(y, y) - 2 mean K(x, y). Zero when x and y are the same sample."""
    t = 1.0 / (2.0 * bandwidth**2)

    def kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(neg_sq_dists(a, t, b)).mean()

    return kernel_mean(x, x) + kernel_mean(y, y) - 2.0 * kernel_mean(x, y)


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
