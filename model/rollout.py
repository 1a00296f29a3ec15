"""Attention rollout (Abnar & Zuidema 2020, the paper's ref. [1]) as relative frame importance (Fig. 6).

For every attention module, in execution order (per layer: FAttn, then ZAttn/BAttn), the head-averaged
attention matrix A over all T*S tokens (token index t*S + s) is taken; for ZAttn/BAttn it is the full
(T*S x T*S) matrix with exact zeros for the same-group pairs that do not attend. The residual is
accounted for as Abnar & Zuidema do: A_hat = A + I with rows renormalised to 1. The rollout is the
product R = A_hat_n ... A_hat_1 (module n last), whose row i says how much output token i draws on
each input token.

Per-frame scores: the prediction reads the mean of all class tokens over all frames, so we average R's
rows of those class tokens; since that average is linear, we propagate one averaged row vector
r <- r A_hat from the last module down to the first instead of forming R (O((TS)^2) per module
instead of O((TS)^3)). The entries of r for the input class tokens are dropped (they are the same
learned vectors in every frame and carry no frame content); the rest (grid and joint tokens), normalised
to sum to 1 per clip, is `token_rollout` (B, T, S): where the prediction draws its evidence, e.g. the grid
against the hand's joint tokens. Summed per frame it gives `attention_rollout`'s (B, T) frame scores.

The normal forward path is untouched: weights are computed only here, by forward hooks that call each
module's explicit `attention_matrix` on the input the module actually received. Memory: one
(B, T*S, T*S) matrix per attention module is kept (about 51 MB per clip and module at T*S = 3584).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.attention import BinaryAttention, FullAttention, ZigzagAttention
from model.star import STAR

_ATTENTION_TYPES = (FullAttention, ZigzagAttention, BinaryAttention)


def _residual_attention(module: nn.Module, x: Tensor) -> Tensor:
    """A_hat = rownorm(mean_heads(A) + I) for the module's input x (B, T, S, D) -> (B, TS, TS)."""
    weights = module.attention_matrix(x).mean(dim=1)  # (B, TS, TS)
    weights = weights + torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    return weights / weights.sum(dim=-1, keepdim=True)


@torch.no_grad()
def token_rollout(model: STAR, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
    """Relevance of every input content token (B, T, S), class tokens 0, summing to 1 per clip; same inputs as
    `STAR.forward`. Token s of a frame is laid out as `model.aggregator` orders it (grid, then joint tokens)."""
    rolled: list[Tensor] = []
    hooks = [
        module.register_forward_hook(lambda module, args, output: rolled.append(_residual_attention(module, args[0])))
        for module in model.modules()
        if isinstance(module, _ATTENTION_TYPES)
    ]
    was_training = model.training
    try:
        model.eval()  # the attention the prediction uses, without dropout
        model(local, global_, heatmaps, joints)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    batch, frames = global_.shape[:2]
    grid_tokens = model.aggregator.grid_tokens(global_.shape[-2:])
    tokens = model.aggregator.tokens_per_frame(grid_tokens=grid_tokens)
    is_class = torch.zeros(frames, tokens, dtype=torch.bool, device=global_.device)
    is_class[:, model.class_token_positions(grid_tokens=grid_tokens)] = True  # (T, S)
    # Start from the average of the class-token rows: uniform weight over every frame's class tokens.
    row = is_class.flatten().to(rolled[0].dtype).expand(batch, -1)  # (B, TS)
    row = row / row.sum(dim=-1, keepdim=True)
    for attention in reversed(rolled):  # r A_n ... A_1 = averaged class rows of A_n ... A_1
        row = torch.bmm(row.unsqueeze(1), attention).squeeze(1)  # (B, TS)
    content = row.view(batch, frames, tokens).masked_fill(is_class, 0.0)  # (B, T, S): grid + joint tokens only
    return content / content.sum(dim=(1, 2), keepdim=True)


def attention_rollout(model: STAR, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
    """Relative frame importance (B, T), each row summing to 1, for the same inputs as `STAR.forward`."""
    return token_rollout(model, local, global_, heatmaps, joints).sum(dim=-1)
