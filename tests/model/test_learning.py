"""Learnability: a tiny STAR must memorise a handful of clips (a collapse detector, no timing asserted).

A model whose initialisation or normalisation collapses (every clip mapped to the same output) does not even fit
16 training clips; this is the failure the `init="vit"` + post-LN combination shows at width 64, and the check
below keeps every supported `norm` at narrow and paper widths away from it.

Measured over model seeds 0-4 (full-batch AdamW, accuracy every 10 steps up to 80): at lr 3e-4 pre-LN and post-LN at
width 64 hold 1.0 from step 40 on and pre-LN at width 256 from step 50 on, in 5 of 5 seeds each, so the memorise
check runs there for 60 steps (the literal configuration reaches 1.0 in 4 of 5 at that rate). At lr 1e-3 the literal
configuration stays at the class prior (loss ln 4) in 3 to 4 of 5 seeds (median 0.25 at steps 60 and 80); post-LN at
width 64 and pre-LN at 256 reach 1.0 in 5 of 5, pre-LN at width 64 in 3 of 5 (one seed stays at the prior). Which
seed fails is chaotic (a change of float summation order, from a different thread count or a reordered but equal
computation, moved the literal configuration's seed 0 from 0.25 to 1.0), so the detector asserts the median over
five seeds."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from model.star import ModelConfig, build_model
from model.tokens import joint_heatmaps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
]  # 2 threads per xdist worker made these steps 3-7x slower

CLASSES, PER_CLASS, FRAMES, JOINTS = 4, 4, 8, 5
STEPS = 60
LR = 3e-4  # where every supported configuration memorises, whatever the seed (module docstring)


def fixed_clips(seed: int = 0) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """16 clips of 4 classes: each class moves the joints along its own path; maps are noise of one distribution."""
    generator = torch.Generator().manual_seed(seed)
    clips = CLASSES * PER_CLASS
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)  # (16,)
    t = torch.linspace(0, 1, FRAMES)  # (T,)
    base = 1.0 + 2.0 * torch.rand(clips, 1, JOINTS, 2, generator=generator)  # (B, 1, N, 2) cells of a 4x4 map
    phase = 2 * math.pi * labels.float() / CLASSES  # (B,)
    path = 0.8 * torch.stack(
        (torch.cos(2 * math.pi * t[None] + phase[:, None]), torch.sin(2 * math.pi * t[None] + phase[:, None])), dim=-1
    )
    xy = base + path[:, :, None] + 0.05 * torch.randn(clips, FRAMES, JOINTS, 2, generator=generator)  # (B, T, N, 2)
    joints = torch.cat((xy, torch.ones(clips, FRAMES, JOINTS, 1)), dim=-1)  # (B, T, N, 3)
    local = torch.randn(clips, FRAMES, 256, 4, 4, generator=generator).abs()
    global_ = torch.randn(clips, FRAMES, 512, 2, 2, generator=generator).abs()
    heatmaps = joint_heatmaps(joints, size=(4, 4), sigma=1.0)
    return (local, global_, heatmaps, joints), labels


def train_accuracy(cfg: ModelConfig, *, steps: int = STEPS, lr: float = LR, seed: int = 0) -> float:
    """Training accuracy on the 16 clips after `steps` full-batch AdamW steps from the model of `seed`."""
    torch.manual_seed(seed)
    inputs, labels = fixed_clips()
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):  # full batch
        loss = F.cross_entropy(model(*inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float((model(*inputs).argmax(dim=1) == labels).float().mean())


def config(**overrides) -> ModelConfig:
    values = dict(num_classes=CLASSES, persons=1, num_joints=JOINTS, frames=FRAMES, depth=1, heads=2, dropout=0.0)
    return ModelConfig(**{**values, **overrides})


# Both norm placements at width 64, and the default (pre-LN) at its default width 256.
@pytest.mark.parametrize(("norm", "dim"), [("pre", 64), ("post", 64), ("pre", 256)])
def test_tiny_star_memorises_16_clips(norm, dim):
    assert train_accuracy(config(norm=norm, dim=dim)) == 1.0


def test_the_detector_catches_the_collapsed_initialisation():
    """ViT's trunc-normal(0.02) with the paper's post-LN at width 64: the collapse this test exists for, at lr 1e-3."""
    literal = config(
        dim=64, norm="post", init="vit", token_norm=False, temporal_embedding=False, joint_position="linear"
    )
    accuracies = [train_accuracy(literal, lr=1e-3, seed=seed) for seed in range(5)]
    assert statistics.median(accuracies) <= 0.5, accuracies
