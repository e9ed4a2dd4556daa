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

__all__ = ["pointwise_chain", "TutorialNet", "MLP", "TransformerBlock", "TiedLM", "lm_loss",
           "BatchNormCNN", "TinyUNet", "RecurrentTagger", "AttentionClassifier"]


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


class TiedLM(TransformerBlock):
    """TransformerBlock whose output projection is the token embedding, as in GPT-2: one
    Parameter in two modules, whose gradient sums both uses."""

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, seq: int = 16) -> None:
        super().__init__(vocab, dim, heads, seq)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.tok_emb.weight


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy over every position: logits [B, T, V], targets int64 [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class BatchNormCNN(nn.Module):
    """Conv-BatchNorm-ReLU blocks, max and global average pooling, BatchNorm1d before the head.

    In train mode a step normalizes with batch statistics and writes the running ones (buffers
    updated in place); in eval mode it reads them: both must match eager.
    """

    def __init__(self, in_channels: int = 3, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU())
        self.norm = nn.BatchNorm1d(2 * width)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.head(self.norm(x))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class TinyUNet(nn.Module):
    """A two-level U-Net for per-pixel classification: down by strided convolutions, up by a
    transposed convolution (inner level) and by interpolation (`mode`: "nearest" or
    "bilinear", outer level), each joined to its skip connection by torch.cat.

    Upsampling targets the skip's size, so odd image sizes work (as in real U-Nets with
    padding), which makes every level's shape depend on the input's.
    """

    def __init__(self, in_channels: int = 1, classes: int = 3, width: int = 4,
                 mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        self.enc = _conv_block(in_channels, width)
        self.down1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)
        # the inverse of down2's shape map: output_size picks its output padding
        self.up1 = nn.ConvTranspose2d(4 * width, 2 * width, 3, stride=2, padding=1)
        self.dec1 = _conv_block(4 * width, 2 * width)
        self.dec2 = _conv_block(3 * width, width)
        self.out = nn.Conv2d(width, classes, 1)

    def _upsample(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_channels, H, W] -> logits [N, classes, H, W]."""
        skip0 = self.enc(x)
        skip1 = F.relu(self.down1(skip0))
        bottom = F.relu(self.down2(skip1))
        x = self.up1(bottom, output_size=skip1.shape[-2:])
        x = self.dec1(torch.cat([x, skip1], dim=1))
        x = self._upsample(x, skip0.shape[-2:])
        x = self.dec2(torch.cat([x, skip0], dim=1))
        return self.out(x)


class RecurrentTagger(nn.Module):
    """nn.GRU or nn.LSTM (batch_first) over a feature sequence, a label per step read from the
    outputs plus the final hidden state: [N, T, features] -> logits [N, T, classes]."""

    def __init__(self, cell: str = "lstm", features: int = 6, hidden: int = 8, layers: int = 2,
                 classes: int = 4, bidirectional: bool = False) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(features, hidden, num_layers=layers, batch_first=True,
                       bidirectional=bidirectional)
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(directions * hidden, classes)
        self.from_state = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); GRU: h
        return self.head(out) + self.from_state(h[-1]).unsqueeze(1)


class AttentionClassifier(nn.Module):
    """A sequence classifier around torch.nn.MultiheadAttention (batch_first), with a causal
    attention mask and a key padding mask; `need_weights` picks the attention path eager takes
    (False: scaled_dot_product_attention; True: explicit softmax, averaged weights returned)."""

    def __init__(self, features: int = 6, dim: int = 16, heads: int = 4, classes: int = 3,
                 need_weights: bool = False) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.embed = nn.Linear(features, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x: [N, T, features]; padding: bool [N, T], True at padded steps (never step 0)."""
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        h = self.embed(x)
        a, _ = self.attn(h, h, h, attn_mask=causal, key_padding_mask=padding,
                         need_weights=self.need_weights)
        h = self.norm(h + a)
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(1) / keep.sum(1))  # mean over the real steps


def pointwise_chain(x: torch.Tensor) -> torch.Tensor:
    """Ten pointwise ops of several kinds: what a fusing backend must turn into one kernel."""
    y = x
    for k in range(10):
        y = [torch.sin, torch.exp, torch.tanh, torch.relu, torch.sigmoid][k % 5](y) * 1.5 + 0.25
    return y
