"""FAttn / ZAttn / BAttn (eq. 5-10) against an explicit, loop-based reference over the paper's token sets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.attention import (
    BinaryAttention,
    FullAttention,
    ZigzagAttention,
    attention_flops,
)

B, T, S, D, HEADS = 2, 6, 5, 32, 4


def key_frames(kind: str, t: int, frames: int) -> list[int]:
    """The frames whose tokens a query of frame t (0-based) attends to, read from the paper's wording."""
    if kind == "F":  # eq. 6: all T*S tokens
        return list(range(frames))
    if kind == "Z":  # eq. 7-8: odd-numbered frames (1st, 3rd, ...) <-> even-numbered frames (2nd, 4th, ...)
        paper_index = t + 1
        return [u for u in range(frames) if (u + 1) % 2 != paper_index % 2]
    if kind == "B":  # eq. 10: front half <-> rear half
        front = t < frames // 2
        return [u for u in range(frames) if (u < frames // 2) != front]
    raise ValueError(kind)


def reference(module, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d)) V per head and query frame, in float64; also the full weight matrix."""
    x = x.double()
    w, b = module.qkv.weight.double(), module.qkv.bias.double()
    dim, heads = module.dim, module.heads
    hd = dim // heads
    q, k, v = (x @ w[i * dim : (i + 1) * dim].T + b[i * dim : (i + 1) * dim] for i in range(3))  # (B, T, S, D)
    batch, frames, tokens, _ = x.shape
    out = torch.zeros(batch, frames, tokens, dim, dtype=torch.float64)
    weights = torch.zeros(batch, heads, frames * tokens, frames * tokens, dtype=torch.float64)
    for bi in range(batch):
        for h in range(heads):
            cols = slice(h * hd, (h + 1) * hd)
            for t in range(frames):
                partners = key_frames(kind, t, frames)
                keys = torch.cat([k[bi, u, :, cols] for u in partners])  # (|partners| * S, hd)
                values = torch.cat([v[bi, u, :, cols] for u in partners])
                attn = torch.softmax(q[bi, t, :, cols] @ keys.T / math.sqrt(hd), dim=-1)  # (S, |partners| * S)
                out[bi, t, :, cols] = attn @ values
                for j, u in enumerate(partners):
                    weights[bi, h, t * tokens : (t + 1) * tokens, u * tokens : (u + 1) * tokens] = attn[
                        :, j * tokens : (j + 1) * tokens
                    ]
    out = out @ module.proj.weight.double().T + module.proj.bias.double()
    return out, weights


MODULES = {"F": FullAttention, "Z": ZigzagAttention, "B": BinaryAttention}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(B, T, S, D, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["F", "Z", "B"])
def test_matches_explicit_reference(kind, x):
    torch.manual_seed(1)
    module = MODULES[kind](D, HEADS).eval()
    expected, expected_weights = reference(module, x, kind)
    out = module(x)
    assert out.shape == (B, T, S, D)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    weights = module.attention_matrix(x)
    assert weights.shape == (B, HEADS, T * S, T * S)
    torch.testing.assert_close(weights.double(), expected_weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, HEADS, T * S))


@pytest.mark.parametrize("kind", ["F", "Z", "B"])
def test_attention_matrix_is_the_one_the_forward_uses(kind, x):
    """proj(A @ V) with the explicit matrix reproduces the fast SDPA forward."""
    module = MODULES[kind](D, HEADS).eval()
    weights = module.attention_matrix(x)  # (B, H, TS, TS)
    values = module.qkv(x)[..., 2 * D :].reshape(B, T * S, HEADS, D // HEADS).transpose(1, 2)  # (B, H, TS, hd)
    out = (weights @ values).transpose(1, 2).reshape(B, T, S, D)
    torch.testing.assert_close(module.proj(out), module(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["Z", "B"])
@pytest.mark.parametrize("frames", [1, 3, 5])
def test_odd_frame_count_is_rejected(kind, frames):
    module = MODULES[kind](D, HEADS)
    with pytest.raises(ValueError, match="even number of frames"):
        module(torch.zeros(1, frames, S, D))


def test_full_attention_accepts_odd_frames():
    assert FullAttention(D, HEADS)(torch.zeros(1, 3, S, D)).shape == (1, 3, S, D)


@pytest.mark.parametrize("kind", ["F", "Z", "B"])
def test_one_sdpa_call_and_no_explicit_weights_on_the_normal_path(kind, x, monkeypatch):
    module = MODULES[kind](D, HEADS)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("explicit attention weights computed on the normal path")

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(torch, "softmax", forbidden)
    monkeypatch.setattr(type(module), "attention_matrix", forbidden)
    module(x).sum().backward()
    half = T * S if kind == "F" else T * S // 2
    assert calls == [torch.Size([B if kind == "F" else 2 * B, HEADS, half, D // HEADS])]


@pytest.mark.parametrize("kind", ["F", "Z", "B"])
def test_dropout_only_while_training(kind, x):
    torch.manual_seed(0)
    module = MODULES[kind](D, HEADS, dropout=0.5)
    plain = MODULES[kind](D, HEADS, dropout=0.0)
    plain.load_state_dict(module.state_dict())
    module.eval()
    torch.testing.assert_close(module(x), plain(x))
    module.train()
    assert not torch.allclose(module(x), plain(x))


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        FullAttention(30, 4)


def test_flops_of_cross_group_attention_are_half_of_full():
    full = attention_flops("F", frames=16, tokens=224, dim=256)
    for kind in "ZB":
        cross = attention_flops(kind, frames=16, tokens=224, dim=256)
        assert cross["core"] * 2 == full["core"] == 4 * (16 * 224) ** 2 * 256
        assert cross["projections"] == full["projections"] == 8 * 16 * 224 * 256**2
    with pytest.raises(ValueError):
        attention_flops("X", frames=2, tokens=2, dim=2)
