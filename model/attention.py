"""Spatio-temporal attention modules of STAR (paper section 3.2, eq. 5-10).

All three take and return the multi-class token tensor Z as (B, T, S, D) and are multi-head attention
with one fused QKV projection and an output projection, as in ViT/timm:

- `FullAttention` (FAttn, eq. 5-6): every one of the T*S tokens attends to all T*S tokens.
- `ZigzagAttention` (ZAttn, eq. 7-9): the frames are split by parity. Queries of the paper's odd
  frames (1st, 3rd, ... = indices 0, 2, ...) attend to keys/values of the even frames (indices 1, 3, ...),
  giving a'; queries of the even frames attend to the odd frames, giving a''.
- `BinaryAttention` (BAttn, eq. 10): the frames are split into the front half and the rear half;
  front queries attend to the rear half (b'), rear queries to the front half (b'').

For ZAttn/BAttn the paper concatenates a' and a'' (eq. 9); we put every output token back at the
position of its query frame, so all three modules map (B, T, S, D) to (B, T, S, D) and the layer's
residual (eq. 13) is a plain addition.

Speed: each module makes exactly one `F.scaled_dot_product_attention` call. ZAttn/BAttn stack the two
query groups on the batch axis (2B sequences of T*S/2 tokens, keys/values taken from the other group),
so the attention product costs two (TS/2)^2 products instead of one (TS)^2: half of FAttn.
The explicit attention matrix is computed only by `attention_matrix`, for attention rollout; the
normal forward never materialises it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SpatioTemporalAttention(nn.Module):
    """Shared parts: fused QKV projection, output projection, dropout, head bookkeeping."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"model width dim={dim} is not divisible by heads={heads}; pick heads that divide dim.")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        # Dropout on the attention probabilities (inside SDPA) and on the projected output. On the CPU any
        # attention dropout sends SDPA to its math kernel, which stores every L x L matrix for backward.
        self.attn_dropout = attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _qkv(self, x: Tensor) -> Tensor:
        batch, frames, tokens, _ = x.shape
        return self.qkv(x).view(batch, frames, tokens, 3, self.heads, self.head_dim)  # (B, T, S, 3, H, hd)

    def _dropout_p(self) -> float:
        return self.attn_dropout if self.training else 0.0

    def _softmax_scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Explicit softmax(QK^T / sqrt(hd)) for (..., L, hd) inputs, used only by `attention_matrix`."""
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)


class FullAttention(_SpatioTemporalAttention):
    """FAttn (eq. 5-6): multi-head self-attention over all T*S tokens of the clip."""

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, tokens, dim = x.shape
        qkv = self._qkv(x).view(batch, frames * tokens, 3, self.heads, self.head_dim)  # (B, TS, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, TS, hd)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())  # (B, H, TS, hd)
        out = out.transpose(1, 2).reshape(batch, frames, tokens, dim)  # (B, T, S, D)
        return self.proj_drop(self.proj(out))

    @torch.no_grad()
    def attention_matrix(self, x: Tensor) -> Tensor:
        """Attention weights (B, H, T*S, T*S); token index t*S + s. No dropout."""
        batch, frames, tokens, _ = x.shape
        qkv = self._qkv(x).view(batch, frames * tokens, 3, self.heads, self.head_dim)  # (B, TS, 3, H, hd)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, TS, hd)
        return self._softmax_scores(q, k)


class _CrossGroupAttention(_SpatioTemporalAttention):
    """Two frame groups, each group's queries attending to the other group's keys and values.

    Subclasses define the grouping with `_split` (frame axis -> group axis beside the batch axis) and its
    inverse `_merge`; both are pure reshapes, so the frame order of the output is the input's. The groups sit
    batch-major, clip b's group g at index 2b + g of the doubled batch, so where a grouping is contiguous (BAttn)
    the queries need no copy at all.
    """

    name = "cross-group attention"

    @staticmethod
    def _split(x: Tensor) -> Tensor:
        """(B, T, ...) -> (B, 2, T/2, ...): group g, position i within the group."""
        raise NotImplementedError

    @staticmethod
    def _merge(x: Tensor) -> Tensor:
        """Inverse of `_split`: (B, 2, T/2, ...) -> (B, T, ...)."""
        raise NotImplementedError

    def _check_frames(self, frames: int) -> None:
        if frames % 2 != 0 or frames == 0:
            raise ValueError(
                f"{type(self).__name__} ({self.name}) splits the frames into two equal groups and needs an even "
                f"number of frames, got T={frames}; sample an even number of frames per clip (the paper uses 16)."
            )

    def _grouped_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries of groups (0, 1) and keys/values of groups (1, 0) of each clip, on a doubled batch axis."""
        batch, frames, tokens, dim = x.shape
        self._check_frames(frames)
        half = frames // 2 * tokens
        groups = self._split(x)  # (B, 2, T/2, S, D), a view
        # Regroup x (D wide) before the projection: it moves a third of the data that regrouping the 3D-wide
        # projected tensor would, and two separate inputs keep the backward free of zero-filled slice gradients.
        x_q = groups.reshape(2 * batch, half, dim)  # (2B, TS/2, D): groups (0, 1); a view for BAttn
        x_kv = torch.stack((groups[:, 1], groups[:, 0]), dim=1).view(2 * batch, half, dim)  # groups (1, 0)
        w_q, w_kv = self.qkv.weight.split((dim, 2 * dim))
        b_q, b_kv = self.qkv.bias.split((dim, 2 * dim))
        q = F.linear(x_q, w_q, b_q).view(2 * batch, half, self.heads, self.head_dim)  # (2B, TS/2, H, hd)
        kv = F.linear(x_kv, w_kv, b_kv).view(2 * batch, half, 2, self.heads, self.head_dim)  # (2B, TS/2, 2, H, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (2B, H, TS/2, hd)
        return q.transpose(1, 2), k, v  # q: (2B, H, TS/2, hd)

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, tokens, dim = x.shape
        q, k, v = self._grouped_qkv(x)
        # One SDPA call for both directions: a' (group 0 -> 1) and a'' (group 1 -> 0), eq. 7-8 / eq. 10.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())  # (2B, H, TS/2, hd)
        out = out.view(batch, 2, self.heads, frames // 2, tokens, self.head_dim)  # (B, 2, H, T/2, S, hd)
        # Heads back beside each other and every token back at its frame in one copy (eq. 9 / 10); the output
        # projection acts per token, so it runs after.
        out = self._merge(out.permute(0, 1, 3, 4, 2, 5)).reshape(batch, frames, tokens, dim)  # (B, T, S, D)
        return self.proj_drop(self.proj(out))

    @torch.no_grad()
    def attention_matrix(self, x: Tensor) -> Tensor:
        """Attention weights as a full (B, H, T*S, T*S) matrix, token index t*S + s. No dropout.

        Pairs of tokens that do not attend to each other (same group) hold exact zeros; each row still
        sums to 1 over the other group's tokens.
        """
        batch, frames, tokens, _ = x.shape
        q, k, _ = self._grouped_qkv(x)
        half = frames // 2
        weights = self._softmax_scores(q, k)  # (2B, H, TS/2, TS/2)
        weights = weights.view(batch, 2, self.heads, half, tokens, half, tokens)
        # Frame index of each (group, position) pair, from the same reshape the forward uses.
        frame_of = self._split(torch.arange(frames, device=x.device).view(1, frames))[0]  # (2, T/2)
        full = x.new_zeros(batch, self.heads, frames, tokens, frames, tokens)
        by_frame = full.permute(2, 4, 0, 1, 3, 5)  # (T_q, T_k, B, H, S_q, S_k), a view into `full`
        for group in (0, 1):  # the two directions a' and a''; explicit path only
            query_frames = frame_of[group].view(half, 1)
            key_frames = frame_of[1 - group].view(1, half)
            by_frame[query_frames, key_frames] = weights[:, group].permute(2, 4, 0, 1, 3, 5)
        return full.view(batch, self.heads, frames * tokens, frames * tokens)


class ZigzagAttention(_CrossGroupAttention):
    """ZAttn (eq. 7-9): frames 0, 2, 4, ... attend to frames 1, 3, 5, ... and vice versa."""

    name = "zigzag: odd frames <-> even frames"

    @staticmethod
    def _split(x: Tensor) -> Tensor:
        batch, frames = x.shape[:2]
        return x.reshape(batch, frames // 2, 2, *x.shape[2:]).movedim(2, 1)  # (B, 2, T/2, ...): t = 2i + g

    @staticmethod
    def _merge(x: Tensor) -> Tensor:
        batch, _, half = x.shape[:3]
        return x.movedim(1, 2).reshape(batch, 2 * half, *x.shape[3:])  # (B, T, ...)


class BinaryAttention(_CrossGroupAttention):
    """BAttn (eq. 10): frames [0, T/2) attend to frames [T/2, T) and vice versa."""

    name = "binary: front half <-> rear half"

    @staticmethod
    def _split(x: Tensor) -> Tensor:
        batch, frames = x.shape[:2]
        return x.reshape(batch, 2, frames // 2, *x.shape[2:])  # (B, 2, T/2, ...): t = g*T/2 + i

    @staticmethod
    def _merge(x: Tensor) -> Tensor:
        batch, _, half = x.shape[:3]
        return x.reshape(batch, 2 * half, *x.shape[3:])  # (B, T, ...)


ATTENTION_KINDS: dict[str, type[_SpatioTemporalAttention]] = {
    "F": FullAttention,
    "Z": ZigzagAttention,
    "B": BinaryAttention,
}


def attention_flops(kind: str, *, frames: int, tokens: int, dim: int) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of one attention module on one clip of `frames` x `tokens` tokens.

    `core` is the two attention products (QK^T and weights @ V), `projections` the QKV and output
    projections; softmax and bias additions are not counted.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; use one of {sorted(ATTENTION_KINDS)}.")
    n = frames * tokens
    pairs = n * n if kind == "F" else 2 * (n // 2) ** 2  # query-key pairs that are scored
    return {"core": 2 * 2 * pairs * dim, "projections": 2 * 4 * n * dim * dim}
