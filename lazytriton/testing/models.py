"""Small reference models used by the tests, the examples and the benchmarks.

They are kept plain (standard modules and functional ops only) so that every op they trace is
one a user's model would trace too, and so that eager PyTorch is a faithful reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TutorialNet", "MLP", "TransformerBlock", "lm_loss"]


class TutorialNet(nn.Module):
    """The Net of PyTorch's Lazy Tensor tutorial (torch/csrc/lazy/tutorial.md), unchanged.

    `dropout` overrides both dropout probabilities; pass 0.0 to compare lazy and eager results
    exactly (dropout draws different random numbers on different devices).
    """

    def __init__(self, dropout: float | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25 if dropout is None else dropout)
        self.dropout2 = nn.Dropout(0.5 if dropout is None else dropout)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class MLP(nn.Module):
    """Linear layers with ReLU between them: a matmul-bound model with no convolution."""

    def __init__(self, sizes: Sequence[int] = (784, 512, 512, 10)) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes!r}")
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)  # accepts images [N, 1, 28, 28] as well as [N, 784]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CausalSelfAttention(nn.Module):
    """Multi-head attention written out op by op (no fused SDPA), so that tracing sees the
    matmuls, the mask and the softmax that a fusing compiler is expected to handle."""

    def __init__(self, dim: int, heads: int, seq: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        # A buffer, so that .to("lazy") moves the mask with the model.
        mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, heads, T, C // heads]."""
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(c // self.heads)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class TransformerBlock(nn.Module):
    """A one-block causal language model: embeddings, pre-LayerNorm attention and MLP, head.

    Small enough for CPU tests, yet it exercises LayerNorm, GELU, softmax, masking, embedding
    gathers and batched matmuls, which the conv and MLP models do not.
    """

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.seq = seq
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, seq)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: int64 [B, T] with T <= seq; returns logits [B, T, vocab]."""
        t = tokens.shape[1]
        if t > self.seq:
            raise ValueError(f"sequence length {t} exceeds the model's seq={self.seq}")
        x = self.tok_emb(tokens) + self.pos_emb[:t]
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy over every position: logits [B, T, V], targets int64 [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
