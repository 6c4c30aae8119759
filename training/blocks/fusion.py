"""Spherical fusion of unit vectors: slerp for two, a de Casteljau recursion of slerps for more.

CM3 fuses its modalities on the unit sphere so the fused vector stays on the manifold
the calibrated uniformity loss works on. Its public code fuses two modalities with one
slerp; the paper's spherical Bezier curve generalises that to any number of control
points (image, sentence text, LLM text, ...) by de Casteljau's algorithm, each linear
interpolation replaced by a slerp. With two points the recursion is exactly one slerp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# |cos| is clamped below 1 by this much so acos/sin stay finite for (nearly) equal
# vectors; float32 cannot represent the reference's 1 - 1e-8 (it rounds to 1 -> 0/0).
_COS_EPS = 1e-6


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Per-row spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1).

    ``a``/``b`` are ``(n, d)`` (normalised here), ``t`` a scalar or ``(n,)``. Returns unit
    rows: sin((1-t)θ)/sin θ · a + sin(tθ)/sin θ · b with θ the angle between the rows.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    cos = (a * b).sum(-1).clamp(-1 + _COS_EPS, 1 - _COS_EPS)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    if not torch.is_tensor(t):
        t = torch.full_like(theta, float(t))
    wa = torch.sin((1 - t) * theta) / sin
    wb = torch.sin(t * theta) / sin
    return wa.unsqueeze(-1) * a + wb.unsqueeze(-1) * b


def spherical_bezier(points: Sequence[torch.Tensor], t: torch.Tensor | float) -> torch.Tensor:
    """De Casteljau on the sphere: the point at ``t`` of the spherical Bezier curve whose
    control points are ``points`` (each ``(n, d)``), one curve per row.

    One control point returns it (normalised); two return ``slerp(p0, p1, t)``; N points
    slerp neighbours pairwise with the same ``t`` until one point is left.
    """
    if not points:
        raise ValueError("spherical_bezier needs at least one control point")
    level = [F.normalize(p, dim=-1) for p in points]
    while len(level) > 1:
        level = [slerp(level[i], level[i + 1], t) for i in range(len(level) - 1)]
    return level[0]


def sample_mix(n: int, alpha: float, *, device: torch.device | None = None) -> torch.Tensor:
    """Per-item mixing parameter ``t ~ Beta(alpha, alpha)`` (CM3 draws a new one every
    forward pass during training; its mean 0.5 is the fixed value at evaluation)."""
    a = torch.tensor(float(alpha), device=device)
    return torch.distributions.Beta(a, a).sample((n,))
