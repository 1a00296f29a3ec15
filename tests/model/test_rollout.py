"""Attention rollout (Abnar & Zuidema 2020) as per-frame importance."""

from __future__ import annotations

import pytest
import torch

from model.rollout import attention_rollout
from model.star import ModelConfig, build_model
from model.tokens import joint_heatmaps

CFG = dict(
    num_classes=5, dim=32, heads=2, depth=2, persons=1, num_joints=3, local_channels=8, global_channels=16, frames=4
)


def make_inputs(cfg: ModelConfig, *, batch=2, frames=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    local = torch.randn(batch, frames, cfg.local_channels, 4, 4, generator=generator)
    global_ = torch.randn(batch, frames, cfg.global_channels, 2, 2, generator=generator)
    coords = torch.rand(batch, frames, cfg.num_joints * cfg.persons, 2, generator=generator) * 4
    joints = torch.cat((coords, torch.ones(batch, frames, cfg.num_joints * cfg.persons, 1)), dim=-1)
    return local, global_, joint_heatmaps(joints, size=(4, 4), sigma=1.0), joints


def naive_rollout(model, inputs) -> torch.Tensor:
    """Full-matrix rollout R = A_n ... A_1, written independently by walking the layers by hand."""
    local, global_, heatmaps, joints = inputs
    z = model.aggregator(local, global_, heatmaps, joints)
    batch, frames, tokens, _ = z.shape
    eye = torch.eye(frames * tokens)
    rollout = eye.expand(batch, -1, -1)
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        for attention, norm in ((layer.full_attn, layer.norm1), (layer.sta, layer.norm2)):
            x = norm(z) if layer.pre_norm else z  # what the attention module reads
            a = attention.attention_matrix(x).mean(dim=1) + eye
            a = a / a.sum(dim=-1, keepdim=True)
            rollout = a @ rollout
            z = z + attention(x) if layer.pre_norm else norm(attention(z) + z)
        z = z + layer.mlp(layer.norm3(z)) if layer.pre_norm else layer.norm3(layer.mlp(z) + z)
    cls = [t * tokens + p for t in range(frames) for p in model.class_token_positions(grid_tokens=4)]
    row = rollout[:, cls].mean(dim=1).view(batch, frames, tokens)  # (B, T, S)
    content = [p for p in range(tokens) if p not in model.class_token_positions(grid_tokens=4)]
    per_frame = row[:, :, content].sum(dim=-1)
    return per_frame / per_frame.sum(dim=-1, keepdim=True)


def sharpen(model) -> None:
    """Larger attention weights than the init's, so the attention is far from uniform."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "qkv.weight" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize(
    "encoder, decoder, multi_class, norm",
    [("FZ", "FB", True, "pre"), ("FZ", "FB", True, "post"), ("FF", "FF", True, "pre"), ("FB", "FZ", False, "post")],
)
def test_rollout_equals_full_matrix_product(encoder, decoder, multi_class, norm):
    torch.manual_seed(0)
    cfg = ModelConfig(**CFG, encoder=encoder, decoder=decoder, multi_class=multi_class, norm=norm)
    model = build_model(cfg).eval()
    sharpen(model)
    inputs = make_inputs(cfg)
    scores = attention_rollout(model, *inputs)
    assert scores.shape == (2, 4)
    assert (scores > 0).all()
    torch.testing.assert_close(scores.sum(dim=-1), torch.ones(2))
    with torch.no_grad():
        expected = naive_rollout(model, inputs)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    assert scores.std() > 1e-3  # sharpened attention: not uniform, so the comparison means something


def test_uniform_attention_gives_uniform_frames():
    cfg = ModelConfig(**CFG)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "qkv" in name:
                parameter.zero_()  # every query scores every key equally
    scores = attention_rollout(model, *make_inputs(cfg))
    torch.testing.assert_close(scores, torch.full((2, 4), 0.25))


def test_rollout_leaves_the_model_as_it_was():
    cfg = ModelConfig(**CFG, dropout=0.2)
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    model.eval()
    before = model(*inputs)
    model.train()
    attention_rollout(model, *inputs)
    assert model.training
    assert all(not module._forward_hooks for module in model.modules())
    model.eval()
    torch.testing.assert_close(model(*inputs), before)
