"""The GenSen sentence encoder and its pair-classification heads (PyTorch).

Word embedding -> bidirectional GRU -> pooling over time (`max` or `last`) -> optional linear
projection. Parameter names follow the original GenSen release (`src_embedding.weight`,
`encoder.weight_ih_l0`, ..., `encoder.weight_ih_l0_reverse`), so an original checkpoint loads as
it is.

Unlike the original, a sentence's vector never depends on its padding or on its batch: the
reverse direction reads each sentence from its own last token (a per-row reversal index, not the
padded end), and max pooling ignores positions past the sentence's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PAD_ID = 1  # GenSen's vocabulary: <s>=0, <pad>=1, </s>=2, <unk>=3


@dataclass
class EncoderConfig:
    vocab_size: int
    embedding_dim: int = 300
    hidden_dim: int = 512  # per direction
    num_layers: int = 1
    pooling: str = "max"  # "max" over time, or "last" (final state of each direction)
    projection_dim: int | None = 384  # None: the pooled 2*hidden_dim vector is the embedding
    dropout: float = 0.0

    @property
    def output_dim(self) -> int:
        return self.projection_dim or 2 * self.hidden_dim


def reversal_index(lengths: torch.Tensor, seq_len: torch.Tensor | int) -> torch.Tensor:
    """Index [batch, seq] that reverses each row within its length and keeps padding in place."""
    positions = torch.arange(seq_len, device=lengths.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    return torch.where(positions <= last, last - positions, positions)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


class GensenEncoder(nn.Module):
    """Sentence encoder: `forward(input_ids, lengths)` -> float32 [batch, output_dim]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.src_embedding = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=PAD_ID
        )
        self.encoder = nn.GRU(
            config.embedding_dim,
            config.hidden_dim,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.projection = (
            nn.Linear(2 * config.hidden_dim, config.projection_dim)
            if config.projection_dim
            else None
        )

    def _direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        weights = [
            getattr(self.encoder, f"{kind}_l{layer}{suffix}")
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        h0 = x.new_zeros(1, x.size(0), self.config.hidden_dim)
        output, _ = torch._VF.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)
        return output

    def token_states(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """GRU outputs [batch, seq, 2*hidden]; positions past a row's length hold garbage."""
        lengths = lengths.clamp(min=1)
        reverse = reversal_index(lengths, input_ids.shape[1])
        x = self.dropout(self.src_embedding(input_ids))
        for layer in range(self.config.num_layers):
            forward = self._direction(x, layer, "")
            backward = _gather_time(
                self._direction(_gather_time(x, reverse), layer, "_reverse"), reverse
            )
            x = torch.cat([forward, backward], dim=-1)
        return x

    def pool(
        self, states: torch.Tensor, lengths: torch.Tensor, pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The sentence vector from token states, reading only each row's real tokens (and of
        those, with max pooling, only where the bool mask `pooled` [batch, seq] is set)."""
        lengths = lengths.clamp(min=1)
        if self.config.pooling == "last":
            hidden = self.config.hidden_dim
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)
            forward = torch.gather(states[..., :hidden], 1, last).squeeze(1)
            return torch.cat([forward, states[:, 0, hidden:]], dim=-1)
        positions = torch.arange(states.shape[1], device=states.device).unsqueeze(0)
        valid = positions < lengths.unsqueeze(1)
        if pooled is not None:
            valid = valid & pooled
        return states.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)

    def encode(
        self, input_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features [batch, 2*hidden], sentence vector [batch, output_dim])."""
        pooled = self.pool(self.token_states(input_ids, lengths), lengths)
        if self.projection is None:
            return pooled, pooled
        return pooled, self.projection(self.dropout(pooled))

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode(input_ids, lengths)[1]


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """GenSen's (and InferSent's) pair representation [u, v, |u - v|, u * v]."""
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


class PairClassifier(nn.Module):
    """A head over pair features: `forward(u, v)` -> logits [batch, classes]; one tanh layer of
    `hidden` units, or with `hidden=0` a linear (multinomial logistic) head."""

    def __init__(self, dim: int, classes: int, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden:
            self.layers = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(4 * dim, hidden),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(hidden, classes),
            )
        else:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * dim, classes))

    @property
    def hidden(self) -> int:
        """Hidden units (0: linear)."""
        return self.layers[1].out_features if len(self.layers) > 2 else 0

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Unit-normalised inside, so callers may pass raw or normalised embeddings.
        return self.layers(pair_features(F.normalize(u, dim=-1), F.normalize(v, dim=-1)))
