"""SASRec: a causal self-attention encoder over a user's ordered history predicts the next
item (Kang & McAuley 2018), in RecBole 1.2.1's form so the two can be compared run for run.

RecBole's choices kept because they change the numbers: post-LayerNorm blocks, erf GELU,
LayerNorm eps 1e-12, additive mask of -10000 on padded and future keys, item table with a
padding row 0 (its logit stays in the training softmax, it is never ranked), normal(0, 0.02)
init of every Linear and Embedding, shared input/output item embeddings, cross-entropy over
all items, right-padded windows of the last ``max_seq_length`` items with positions
counted from the window's oldest item.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.data import TrainData
from training.models.base import Recommender, register
from training.sequential import SequenceData


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """The erf form of GELU (RecBole's ``gelu``)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class _Block(nn.Module):
    """One post-LN transformer layer: multi-head self-attention, then the feed-forward net."""

    def __init__(
        self, d: int, heads: int, inner: int, dropout: float, attn_dropout: float, eps: float
    ) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"sasrec: hidden_size {d} is not a multiple of n_heads {heads}")
        self.heads, self.head_dim = heads, d // heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.out_dropout = nn.Dropout(dropout)
        self.ff1, self.ff2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)
        self.ff_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask
        ctx = self.attn_dropout(torch.softmax(scores, dim=-1)) @ v
        ctx = ctx.transpose(1, 2).reshape(x.shape)
        h = self.attn_norm(self.out_dropout(self.dense(ctx)) + x)
        ff = self.ff_dropout(self.ff2(_gelu(self.ff1(h))))
        return self.ff_norm(ff + h)


@register("sasrec")
class SASRec(Recommender):
    """Next-item model of the sequential task (``train.task: sequential``). ``forward`` takes
    (windows, lengths, targets) from ``training.sequential``; ``embeddings`` encodes every
    user's whole history (what export recommends from), ``query_embeddings(split)`` the
    history before a split's held-out item (what evaluation ranks with)."""

    sequential = True
    defaults = {
        "hidden_size": 64,
        "n_layers": 2,
        "n_heads": 2,
        "inner_size": 256,
        "hidden_dropout": 0.5,
        "attn_dropout": 0.5,
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "max_seq_length": 50,
        "eval_batch_size": 1024,
    }

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        d, L = int(self.hp["hidden_size"]), int(self.hp["max_seq_length"])
        # Plain attribute (not a buffer): numpy windows the loop batches, never in the state dict.
        self.seqs = SequenceData.from_train_data(data, L)
        self.item_embedding = nn.Embedding(self.n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(L, d)
        eps = float(self.hp["layer_norm_eps"])
        self.blocks = nn.ModuleList(
            _Block(
                d,
                int(self.hp["n_heads"]),
                int(self.hp["inner_size"]),
                float(self.hp["hidden_dropout"]),
                float(self.hp["attn_dropout"]),
                eps,
            )
            for _ in range(int(self.hp["n_layers"]))
        )
        self.norm = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(float(self.hp["hidden_dropout"]))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = float(self.hp["initializer_range"])
        if isinstance(module, nn.Linear | nn.Embedding):
            module.weight.data.normal_(0.0, std)  # the padding row too, as RecBole does
        if isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The hidden state at each window's last item, ``(batch, hidden)``; ``seq`` holds item
        index + 1, right-padded with 0."""
        n = seq.shape[1]
        pos = torch.arange(n, device=seq.device)
        items = F.embedding(seq, self.item_table(), padding_idx=0)  # no gradient into the padding row
        x = self.dropout(self.norm(items + self.position_embedding(pos)[None]))
        x = self.hidden_states(x, seq)
        return x[torch.arange(len(seq), device=seq.device), lengths - 1]

    def hidden_states(self, x: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Every position's output; position t attends to the non-padded items at <= t only."""
        n = seq.shape[1]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=seq.device))
        keep = causal[None, None] & (seq != 0)[:, None, None, :]
        mask = torch.zeros(keep.shape, dtype=x.dtype, device=seq.device).masked_fill(~keep, -10000.0)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next item (index, no offset) over all items and the padding row."""
        logits = self.encode(seq, lengths) @ self.item_table().T
        return F.cross_entropy(logits, target + 1)

    def item_table(self) -> torch.Tensor:
        """``(n_items + 1, hidden)``: the padding row, then every item's vector (input and output)."""
        return self.item_embedding.weight

    def item_vectors(self) -> torch.Tensor:
        return self.item_table()[1:]

    def query_embeddings(self, split: str) -> torch.Tensor:
        """``(n_users, hidden)``: each user's history before ``split`` ('valid': train items;
        'test': train + valid; 'all': everything) encoded in batches; zero rows for users
        with no history."""
        seq, lengths = self.seqs.queries(split)
        device = self.item_embedding.weight.device
        out = torch.zeros(self.n_users, self.item_embedding.embedding_dim, device=device)
        users = torch.nonzero(torch.from_numpy(lengths) > 0).flatten()
        step = int(self.hp["eval_batch_size"])
        for start in range(0, len(users), step):
            u = users[start : start + step]
            s = torch.from_numpy(seq[u.numpy()]).to(device)
            out[u.to(device)] = self.encode(s, torch.from_numpy(lengths[u.numpy()]).to(device))
        return out

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_embeddings("all"), self.item_vectors()


@register("sasrec_content")
class ContentSASRec(SASRec):
    """SASRec whose items are a linear projection of the store's feature tables
    (concatenated), plus the id embedding when ``id_embeddings``: new or rare items get a
    vector from their content. Input and output share the table, as in SASRec."""

    needs_features = True
    defaults = {**SASRec.defaults, "id_embeddings": True}

    def __init__(self, data: TrainData, hp: dict[str, Any]) -> None:
        super().__init__(data, hp)
        # Constant inputs, plain attributes (not buffers): DDP must not broadcast them.
        self.feats = self.feature_constants()
        self.proj = nn.Linear(sum(f.dim for f in self.features), int(self.hp["hidden_size"]))
        self._init_weights(self.proj)

    def item_table(self) -> torch.Tensor:
        side = self.proj(torch.cat(list(self.feats), dim=1))
        if self.hp["id_embeddings"]:
            side = side + self.item_embedding.weight[1:]
        return torch.cat([self.item_embedding.weight[:1], side])
