"""Orthonormal DCT-II and its inverse over the last dimension, in O(d log d) via one FFT.

LIRDRec's shared channel reads the DCT of every feature vector (the reference uses the
``torch_dct`` package with ``norm='ortho'``); an orthonormal transform is exactly
invertible, so the channel loses no information, it only re-orders it by frequency.
Makhoul's algorithm: permute even/odd samples, FFT, rotate by exp(-i pi k / 2N).
"""

from __future__ import annotations

import math

import torch


def dct_ortho(x: torch.Tensor) -> torch.Tensor:
    """DCT-II with orthonormal scaling along the last dimension (equals
    ``scipy.fft.dct(x, type=2, norm='ortho', axis=-1)``)."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    angle = -math.pi * k / (2 * n)
    out = spec.real * torch.cos(angle) - spec.imag * torch.sin(angle)
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=x.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return out * scale


def idct_ortho(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``dct_ortho`` (orthonormal DCT-III)."""
    n = y.shape[-1]
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=y.dtype, device=y.device)
    scale[0] = math.sqrt(1.0 / n)
    c = y / scale
    k = torch.arange(n, dtype=y.dtype, device=y.device)
    angle = math.pi * k / (2 * n)
    # Rebuild the half-spectrum V[k] = exp(i pi k / 2N) (c[k] - i c[N-k]), c[N] = 0.
    c_rev = torch.cat([torch.zeros_like(c[..., :1]), c[..., 1:].flip(-1)], dim=-1)
    re = c * torch.cos(angle) + c_rev * torch.sin(angle)
    im = c * torch.sin(angle) - c_rev * torch.cos(angle)
    v = torch.fft.ifft(torch.complex(re, im), dim=-1).real
    out = torch.empty_like(v)
    half = (n + 1) // 2
    out[..., ::2] = v[..., :half]
    out[..., 1::2] = v[..., half:].flip(-1)
    return out
