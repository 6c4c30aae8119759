"""The multi-channel graph backbone shared by CM3 and LIRDRec.

Items are represented from their features only (no item id embeddings): one d-dim
channel per feature table (an MLP feature -> 4d -> d, LeakyReLU) plus one shared channel
(CM3: spherical fusion; LIRDRec: an MLP over the features' DCT). Users have one learned
d-dim preference vector per channel. Every channel is L2-normalised per row, the
channels are concatenated, propagated over the normalised user-item graph with the
layers *summed* (0..n, as both references do), and items take extra hops over the
frozen item-item kNN graph (added to their representation, as FREEDOM does). How the
user combines its channels is the model's business (CM3: a per-user softmax; LIRDRec:
progressive weight copying).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.sparse import spmm


def feature_mlp(in_dim: int, d: int) -> nn.Sequential:
    """feature -> 4d -> d with LeakyReLU, the second layer without bias (as the references)."""
    return nn.Sequential(nn.Linear(in_dim, 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d, bias=False))


def xavier_normal_rows(n: int, *cols: int) -> torch.Tensor:
    """``nn.init.xavier_normal_`` of an ``(n, *cols)`` tensor: std sqrt(2 / (fan_in + fan_out))
    with torch's fan convention (fan_out = n x receptive field, fan_in = cols[0] x it)."""
    t = torch.empty(n, *cols)
    nn.init.xavier_normal_(t)
    return t


def user_channel_preferences(n_users: int, n_channels: int, d: int) -> nn.Parameter:
    """One d-dim vector per user and channel, ``(n_users, n_channels * d)``, each block
    initialised as the references' separate ``(n_users, d)`` xavier-normal parameters."""
    std = math.sqrt(2.0 / (n_users + d))
    return nn.Parameter(torch.randn(n_users, n_channels * d) * std)


def propagate_channels(
    adj: torch.Tensor, users: torch.Tensor, items: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalise each d-block of ``users`` / ``items`` (both ``(n, C, d)``), concatenate
    and propagate over ``adj`` (symmetric) summing layers 0..n_layers."""
    n_users = users.shape[0]
    ego = torch.cat([F.normalize(users, dim=-1), F.normalize(items, dim=-1)]).flatten(1)
    acc, out = ego, ego
    for _ in range(n_layers):
        out = spmm(adj, out)
        acc = acc + out
    return acc[:n_users], acc[n_users:]


def item_graph_hops(adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor, n_hops: int) -> torch.Tensor:
    """x + (item-item graph)^n_hops x."""
    h = x
    for _ in range(n_hops):
        h = spmm(adj, h, adj_t)
    return x + h
