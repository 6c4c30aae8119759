"""Multi-scale dilated convolution attention (MambaRec's "DREAM" block), 1-D.

Input ``(n, c)`` (one c-channel position per item, as the reference feeds it) or
``(n, c, L)``. Five branches: a 1x1 convolution, three kernel-3 convolutions dilated by
6r, 12r and 18r, and a global-average branch, each followed by BatchNorm and ReLU; the
concatenation (5c channels) is re-weighted by the element-wise max of a channel gate
(ReLU of a 1x1 projection of its average) and a spatial gate (sigmoid of a 1x1
projection), multiplied by it once more, and projected back to c channels (1x1 conv,
BatchNorm, ReLU).

On a single position (L = 1, how MambaRec applies it to item features) every dilated
kernel overlaps the input only at its centre tap: the block is then exactly five
per-item linear maps with BatchNorm over the items and the two gates. The reference
uses 3x3 ``Conv2d`` on a 1x1 map, which reduces to the same centre taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; on a single position only the kernel's centre tap meets the input (the
    other taps see zero padding), so that case is one matrix product."""
    if x.shape[-1] != 1:
        return conv(x)
    k = conv.kernel_size[0]
    return F.linear(x[..., 0], conv.weight[:, :, k // 2], conv.bias).unsqueeze(-1)


class _Branch(nn.Module):
    """Conv1d -> BatchNorm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(_conv(self.conv, x)))


class DilatedConvAttention(nn.Module):
    def __init__(self, c_in: int, c_out: int, rate: int = 1, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_Branch(c_in, c_out, 1, 1, bn_momentum)]
            + [_Branch(c_in, c_out, 3, s * rate, bn_momentum) for s in (6, 12, 18)]
        )
        self.global_branch = _Branch(c_in, c_out, 1, 1, bn_momentum)
        cat = 5 * c_out
        self.channel_gate = nn.Conv1d(cat, 1, 1, bias=False)
        self.spatial_gate = nn.Conv1d(cat, 1, 1, bias=False)
        self.project = _Branch(cat, c_out, 1, 1, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.dim() == 2
        if flat:
            x = x.unsqueeze(-1)
        length = x.shape[-1]
        parts = [b(x) for b in self.branches]
        pooled = self.global_branch(x.mean(dim=-1, keepdim=True))
        parts.append(pooled.expand(-1, -1, length))
        cat = torch.cat(parts, dim=1)
        channel = cat * F.relu(_conv(self.channel_gate, cat.mean(dim=-1, keepdim=True)))
        spatial = cat * torch.sigmoid(_conv(self.spatial_gate, cat))
        out = self.project(torch.maximum(channel, spatial) * cat)
        return out.squeeze(-1) if flat else out
