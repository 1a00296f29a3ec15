"""FAttn / ZAttn / BAttn (eq. 5-10) against an explicit, loop-based reference over the paper's token sets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.attention import (
    BinaryAttention,
    FullAttention,
    ZigzagAttention,
    attention_flops,
)
from tests.fixtures.attention_reference import reference

B, T, S, D, HEADS = 2, 6, 5, 32, 4


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
