"""STAR layer (eq. 11-14), encoder/decoder stages and the full model: shapes, gradients, determinism, video path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from model.backbone import MC3_18Backbone
from model.star import ModelConfig, build_model
from model.tokens import joint_heatmaps, joints_to_cells
from model.transformer import STARLayer
from tests.fixtures.attention_reference import reference as attention_reference

TINY = dict(
    num_classes=5, dim=32, heads=2, depth=1, persons=1, num_joints=3, local_channels=8, global_channels=16, frames=4
)


def make_inputs(cfg: ModelConfig, *, batch=2, frames=4, grid=(2, 2), local_hw=(4, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = cfg.persons * cfg.num_joints
    local = torch.randn(batch, frames, cfg.local_channels, *local_hw, generator=generator)
    global_ = torch.randn(batch, frames, cfg.global_channels, *grid, generator=generator)
    coords = torch.rand(batch, frames, n, 2, generator=generator) * torch.tensor([local_hw[1], local_hw[0]])
    joints = torch.cat((coords, torch.ones(batch, frames, n, 1)), dim=-1)
    heatmaps = joint_heatmaps(joints, size=local_hw, sigma=cfg.heatmap_sigma)
    return local, global_, heatmaps, joints


def layer_norm_reference(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LN over the last axis, written out: (x - mean) / sqrt(var + eps) * gamma + beta (float64)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def mlp_reference(x: torch.Tensor, mlp) -> torch.Tensor:
    """Linear -> GELU (erf form) -> Linear, from the weights (float64)."""
    hidden = x @ mlp.fc1.weight.double().T + mlp.fc1.bias.double()
    hidden = 0.5 * hidden * (1.0 + torch.erf(hidden / math.sqrt(2.0)))
    return hidden @ mlp.fc2.weight.double().T + mlp.fc2.bias.double()


def layer_reference(layer: STARLayer, z: torch.Tensor, *, kind: str, norm: str) -> torch.Tensor:
    """Eq. (11)-(14) from the layer's weights only: attention from the loop reference of test_attention (the
    paper's token sets), layer norm and MLP written out; post-LN as printed, pre-LN as its residual variant."""
    z = z.double()
    fsta = lambda x: attention_reference(layer.full_attn, x, "F")[0]  # noqa: E731
    sta = lambda x: attention_reference(layer.sta, x, kind[1])[0]  # noqa: E731  (decoupling inside: eq. 12)
    ln1, ln2, ln3 = (lambda x, n=n: layer_norm_reference(x, n) for n in (layer.norm1, layer.norm2, layer.norm3))
    if norm == "post":
        z_bar = ln1(fsta(z) + z)  # (11)
        z_tilde = ln2(sta(z_bar) + z_bar)  # (12)-(13)
        return ln3(mlp_reference(z_tilde, layer.mlp) + z_tilde)  # (14)
    z_bar = z + fsta(ln1(z))
    z_tilde = z_bar + sta(ln2(z_bar))
    return z_tilde + mlp_reference(ln3(z_tilde), layer.mlp)


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("kind", ["FF", "FZ", "FB"])
def test_layer_matches_eq_11_to_14_written_from_the_paper(kind, norm):
    torch.manual_seed(0)
    layer = STARLayer(dim=32, heads=2, mlp_ratio=2.0, dropout=0.0, kind=kind, norm=norm).eval()
    z = torch.randn(2, 4, 7, 32)
    out = layer(z)
    assert out.shape == z.shape
    torch.testing.assert_close(out.double(), layer_reference(layer, z, kind=kind, norm=norm), atol=2e-5, rtol=1e-4)
    assert type(layer.sta).__name__ == {"FF": "FullAttention", "FZ": "ZigzagAttention", "FB": "BinaryAttention"}[kind]


def test_unknown_layer_kind_and_norm():
    with pytest.raises(ValueError, match="unknown STAR layer kind"):
        STARLayer(dim=32, heads=2, mlp_ratio=2.0, dropout=0.0, kind="ZF")
    with pytest.raises(ValueError, match="layer norm placement"):
        STARLayer(dim=32, heads=2, mlp_ratio=2.0, dropout=0.0, kind="FZ", norm="sandwich")


def test_temporal_embedding_makes_the_model_see_frame_order():
    """Without it every variant is blind to reversing the clip; with it, the reverse gets other logits."""
    for encoder, decoder in (("FF", "FF"), ("FZ", "FB")):
        blind = build_model(ModelConfig(**TINY, encoder=encoder, decoder=decoder, temporal_embedding=False)).eval()
        seeing = build_model(ModelConfig(**TINY, encoder=encoder, decoder=decoder)).eval()
        with torch.no_grad():
            seeing.aggregator.frame_embed.normal_()  # a trained embedding: frames differ
        inputs = make_inputs(ModelConfig(**TINY))
        reversed_inputs = [x.flip(1) for x in inputs]
        torch.testing.assert_close(blind(*inputs), blind(*reversed_inputs), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(seeing(*inputs), seeing(*reversed_inputs), atol=1e-3)


def test_temporal_embedding_checks_the_clip_length():
    model = build_model(ModelConfig(**{**TINY, "frames": 8}))
    with pytest.raises(ValueError, match="T=8 frames but got clips of T=4"):
        model(*make_inputs(ModelConfig(**TINY)))


def test_model_options_change_what_they_say():
    literal = build_model(
        ModelConfig(
            **TINY, norm="post", init="vit", token_norm=False, temporal_embedding=False, joint_position="linear"
        )
    )
    assert isinstance(literal.norm, torch.nn.Identity) and literal.aggregator.frame_embed is None
    assert isinstance(literal.aggregator.grid_norm, torch.nn.Identity)
    assert literal.aggregator.position_proj.in_features == 3  # raw (x, y, confidence)
    assert float(literal.encoder.layers[0].mlp.fc1.weight.detach().std()) < 0.03  # trunc-normal(0.02)
    default = build_model(ModelConfig(**TINY))
    assert isinstance(default.norm, torch.nn.LayerNorm) and default.aggregator.frame_embed.shape == (4, 32)
    assert default.aggregator.position_proj.in_features == 4 * 8 + 1  # sin/cos of x and y at dim/4 frequencies + conf
    fan_in = 1 / 32**0.5  # PyTorch's default Linear init: uniform in +-1/sqrt(fan_in)
    weights = default.encoder.layers[0].mlp.fc1.weight
    assert float(weights.detach().abs().max()) <= fan_in and float(weights.detach().std()) > 0.5 * fan_in / 3**0.5
    assert 0.7 < float(default.aggregator.joint_embed.detach().std()) < 1.3  # unit-scale joint slots


@pytest.mark.parametrize(
    "encoder, decoder, multi_class, persons",
    [
        ("FZ", "FB", True, 1),  # the paper's model
        ("FZ", "FB", True, 2),  # two persons
        ("FZ", "FB", False, 2),  # Table 3 single-class ablation
        ("FF", "FF", True, 1),  # Table 4 rows
        ("FZ", "FZ", True, 1),
        ("FB", "FB", True, 1),
        ("FB", "FZ", False, 1),
    ],
)
def test_star_shapes_for_every_variant(encoder, decoder, multi_class, persons):
    cfg = ModelConfig(**{**TINY, "persons": persons}, encoder=encoder, decoder=decoder, multi_class=multi_class)
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg)
    logits = model(*inputs)
    assert logits.shape == (2, 5)
    features = model.forward_features(*inputs)
    assert features.shape == (2, 32)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("encoder, decoder", [("FZ", "FB"), ("FF", "FB"), ("FZ", "FF")])
def test_odd_frame_count_errors_when_z_or_b_is_used(encoder, decoder):
    cfg = ModelConfig(**{**TINY, "frames": 3}, encoder=encoder, decoder=decoder)
    with pytest.raises(ValueError, match="even number of frames"):
        build_model(cfg)(*make_inputs(cfg, frames=3))


def test_full_attention_only_model_accepts_odd_frames():
    cfg = ModelConfig(**{**TINY, "frames": 3}, encoder="FF", decoder="FF")
    assert build_model(cfg)(*make_inputs(cfg, frames=3)).shape == (2, 5)


@pytest.mark.parametrize("multi_class", [True, False])
def test_gradients_reach_every_parameter(multi_class):
    cfg = ModelConfig(**{**TINY, "persons": 2, "depth": 2}, multi_class=multi_class)
    model = build_model(cfg).train()
    logits = model(*make_inputs(cfg))
    F.cross_entropy(logits, torch.tensor([1, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_train_uses_dropout():
    cfg = ModelConfig(**TINY, dropout=0.3)
    model = build_model(cfg)
    inputs = make_inputs(cfg)
    model.eval()
    assert torch.equal(model(*inputs), model(*inputs))
    model.train()
    assert not torch.equal(model(*inputs), model(*inputs))


def test_pooling_averages_all_class_tokens_over_all_frames():
    cfg = ModelConfig(**TINY)
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg)
    z = model.norm(model.decoder(model.encoder(model.aggregator(*inputs))))  # (B, T, S, D), final LayerNorm (pre-LN)
    cls = z[:, :, [0, 4 + 1, 4 + 3 + 2]]  # P = 4 grid tokens, N = 3 joints
    torch.testing.assert_close(model.forward_features(*inputs), cls.mean(dim=(1, 2)))


def test_sdpa_calls_per_forward(monkeypatch):
    cfg = ModelConfig(**{**TINY, "depth": 3})
    model = build_model(cfg).eval()
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    model(*make_inputs(cfg))
    assert len(calls) == 2 * 2 * cfg.depth  # (F + Z/B) per layer, encoder + decoder


@pytest.mark.parametrize(("attention_dropout", "expected"), [(0.0, 0.0), (0.1, 0.1)])
def test_dropout_reaches_the_attention_probabilities_only_when_asked(monkeypatch, attention_dropout, expected):
    """`dropout` acts on the residual branches; SDPA sees `attention_dropout` (default 0: its fused CPU kernel)."""
    cfg = ModelConfig(**{**TINY, "dropout": 0.1, "attention_dropout": attention_dropout})
    model = build_model(cfg).train()
    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: seen.append(k.get("dropout_p")) or sdpa(*a, **k)
    )
    model(*make_inputs(cfg))
    assert seen and set(seen) == {expected}
    assert ModelConfig(num_classes=3).attention_dropout == 0.0 and ModelConfig(num_classes=3).dropout == 0.1
    with pytest.raises(ValueError, match="attention_dropout"):
        ModelConfig(num_classes=3, attention_dropout=1.0)


def test_mismatched_inputs_raise_star_error():
    cfg = ModelConfig(**TINY)
    model = build_model(cfg)
    local, global_, heatmaps, joints = make_inputs(cfg)
    with pytest.raises(ValueError, match="joints"):
        model(local, global_, heatmaps, joints[:, :, :2])
    with pytest.raises(ValueError, match="local"):
        model(local[:, :, :4], global_, heatmaps, joints)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(num_classes=3, dim=30, heads=4)
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(num_classes=3, encoder="FX")
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig(num_classes=3).dim = 8  # type: ignore[misc]
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(num_classes=3, norm="mid")
    with pytest.raises(ValueError, match="init"):
        ModelConfig(num_classes=3, init="xavier")
    with pytest.raises(ValueError, match="joint_position"):
        ModelConfig(num_classes=3, joint_position="polar")
    defaults = ModelConfig(num_classes=60)
    assert (defaults.norm, defaults.init, defaults.token_norm, defaults.temporal_embedding) == (
        "pre",
        "fan_in",
        True,
        True,
    )
    assert (defaults.persons, defaults.num_joints, defaults.depth) == (2, 25, 3)
    assert (defaults.encoder, defaults.decoder) == ("FZ", "FB")
    assert defaults.multi_class and (defaults.local_channels, defaults.global_channels) == (256, 512)


def test_forward_on_backbone_maps_equals_forward_video():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM"):
        backbone = MC3_18Backbone(weights="random")
    cfg = ModelConfig(num_classes=4, dim=32, heads=2, depth=1, persons=2, num_joints=3, frames=2)
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (1, 2, 3, 64, 96), dtype=torch.uint8, generator=generator)  # H=64, W=96
    joints_px = torch.cat(
        (
            torch.rand(1, 2, 6, 2, generator=generator) * torch.tensor([96.0, 64.0]),
            torch.rand(1, 2, 6, 1, generator=generator),
        ),
        dim=-1,
    )
    joints_px[0, 1, 5, 2] = 0.0  # one missing joint

    # The cached-feature path, built step by step as the extraction stage does.
    local, global_ = backbone(video)
    assert local.shape[-2:] == (8, 12) and global_.shape[-2:] == (4, 6)
    joints = joints_to_cells(joints_px, input_hw=(64, 96), map_hw=(8, 12))
    heatmaps = joint_heatmaps(joints, size=(8, 12), sigma=cfg.heatmap_sigma)
    on_maps = model(local, global_, heatmaps, joints)

    on_video = model.forward_video(video, joints_px, backbone=backbone)
    assert on_video.shape == (1, 4)
    torch.testing.assert_close(on_video, on_maps, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(on_video, model(local, global_, heatmaps.roll(1, dims=2), joints))
