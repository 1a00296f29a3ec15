"""MC3_18Backbone: shapes, normalisation, weight loading (path / torch hub cache / random), frozen mode."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.video import mc3_18, r3d_18

from model.backbone import MC3_18Backbone, kinetics_filename, kinetics_url
from pipeline.core.errors import StarError
from pipeline.extraction.weights import load_backbone

KINETICS_MEAN = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
KINETICS_STD = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)


def random_backbone(**kwargs) -> MC3_18Backbone:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return MC3_18Backbone(weights="random", **kwargs)


@pytest.fixture(scope="module")
def saved_mc3_18(tmp_path_factory) -> tuple[Path, nn.Module]:
    torch.manual_seed(3)
    net = mc3_18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "mc3_18_state.pth"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture
def clip() -> torch.Tensor:
    """Small on purpose: 64 x 64 is the smallest size the tests need (8 x 8 local, 4 x 4 global maps)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, 2, 3, 64, 64), dtype=torch.uint8, generator=generator)


def test_shapes_strides_and_random_id():
    backbone = random_backbone()
    local, global_ = backbone(torch.zeros(1, 4, 3, 112, 112, dtype=torch.uint8))
    assert local.shape == (1, 4, 256, 14, 14)  # layer3: H/8, time kept
    assert global_.shape == (1, 4, 512, 7, 7)  # layer4: H/16
    assert (backbone.local_channels, backbone.global_channels) == (256, 512)
    assert (backbone.local_stride, backbone.global_stride) == (8, 16)
    assert 112 // backbone.local_stride == local.shape[-1] and 112 // backbone.global_stride == global_.shape[-1]
    assert backbone.weights_id == "random"


def test_none_is_random_with_warning():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert MC3_18Backbone(weights=None).weights_id == "random"


def test_path_weights_match_torchvision_model_including_normalisation(saved_mc3_18, clip):
    """A state dict saved from torchvision's mc3_18 loads through the path option and computes its maps."""
    path, net = saved_mc3_18
    backbone = MC3_18Backbone(weights=path)
    reference = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    loaded = backbone.state_dict()
    assert loaded.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(loaded[name], tensor), name
    assert backbone.weights_id == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    # Independent computation: Kinetics normalisation by hand, then torchvision's own modules.
    x = (clip.float() / 255).transpose(1, 2)  # (B, 3, T, H, W)
    x = (x - KINETICS_MEAN) / KINETICS_STD
    with torch.no_grad():
        layer3 = net.layer3(net.layer2(net.layer1(net.stem(x))))
        layer4 = net.layer4(layer3)
    local, global_ = backbone(clip)
    torch.testing.assert_close(local, layer3.transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(global_, layer4.transpose(1, 2), atol=1e-5, rtol=1e-5)
    # uint8 and float in [0, 1] are the same clip.
    local_f, global_f = backbone(clip.float() / 255)
    torch.testing.assert_close(local_f, local, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(global_f, global_, atol=1e-5, rtol=1e-5)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir, and any download attempt turned into a test failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    hub_dir = Path(torch.hub.get_dir())
    assert tmp_path in hub_dir.parents, "torch.hub.set_dir() was called elsewhere; TORCH_HOME is ignored"

    def no_download(*args, **kwargs):
        raise AssertionError("MC3_18Backbone tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    return hub_dir / "checkpoints"


def test_missing_kinetics_file_is_a_clear_error_not_a_download(offline_hub):
    with pytest.raises(StarError) as info:  # the pipeline's loader turns the model's FileNotFoundError into one line
        load_backbone("kinetics400")
    message = str(info.value)
    assert kinetics_filename() == "mc3_18-a90a0ba3.pth"
    assert kinetics_filename() in message
    assert kinetics_url() == "https://download.pytorch.org/models/mc3_18-a90a0ba3.pth"
    assert kinetics_url() in message
    assert str(offline_hub) in message
    assert not offline_hub.exists() or not any(offline_hub.iterdir())


def test_kinetics_loads_from_hub_cache(offline_hub, saved_mc3_18):
    path, net = saved_mc3_18
    offline_hub.mkdir(parents=True)
    (offline_hub / kinetics_filename()).write_bytes(path.read_bytes())
    backbone = MC3_18Backbone(weights="kinetics400")
    assert backbone.weights_id == "kinetics400:mc3_18-a90a0ba3"
    assert torch.equal(backbone.layer4[1].conv2[0].weight, net.layer4[1].conv2[0].weight)


def test_bad_weight_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MC3_18Backbone(weights=tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        MC3_18Backbone(weights=garbage)
    with pytest.raises(StarError, match="could not read"):  # the same, through the pipeline's loader
        load_backbone(str(garbage))
    other = tmp_path / "r3d_18.pth"
    torch.save(r3d_18(weights=None).state_dict(), other)  # same keys, 3x3x3 convs where MC3 has 1x3x3
    with pytest.raises(ValueError, match="do not fit mc3_18"):
        MC3_18Backbone(weights=other)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in mc3_18(weights=None).state_dict().items() if not k.startswith("layer4")}, partial)
    with pytest.raises(ValueError, match="missing"):
        MC3_18Backbone(weights=partial)


def test_frozen_backbone_stays_in_eval_mode_without_grads(clip):
    backbone = random_backbone()
    parent = nn.ModuleDict({"backbone": backbone, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not backbone.training
    assert not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    bn = backbone.layer1[0].conv1[1]
    running_mean = bn.running_mean.clone()
    local, global_ = backbone(clip)
    assert torch.equal(bn.running_mean, running_mean)  # eval-mode BatchNorm: statistics untouched
    assert not local.requires_grad and not global_.requires_grad


def test_trainable_backbone_trains_and_passes_gradients():
    backbone = random_backbone(trainable=True)
    parent = nn.Sequential(backbone)
    parent.eval()
    assert not backbone.training
    parent.train()
    assert backbone.training
    video = torch.rand(2, 2, 3, 32, 32)
    local, global_ = backbone(video)
    (local.mean() + global_.mean()).backward()
    assert backbone.stem[0].weight.grad is not None and backbone.stem[0].weight.grad.abs().sum() > 0


def test_bad_input_shapes_raise():
    backbone = random_backbone()
    with pytest.raises(ValueError, match="divisible by 16"):
        backbone(torch.zeros(1, 2, 3, 100, 112))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        backbone(torch.zeros(2, 3, 112, 112))
