"""Joint coordinates, heat maps (Fig. 2 b), joint map tokens (eq. 1) and multi-class token aggregation (eq. 2-4)."""

from __future__ import annotations

import math

import pytest
import torch

from model.tokens import (
    TokenAggregator,
    joint_heatmaps,
    joint_map_tokens,
    joints_to_cells,
)


def test_joints_to_cells_scales_xy_and_keeps_confidence():
    joints_px = torch.tensor([[[[20.0, 36.0, 0.7], [111.9, 0.0, 0.0]]]])  # (1, 1, 2, 3) on a 112 x 224 (H x W) input
    cells = joints_to_cells(joints_px, input_hw=(112, 224), map_hw=(14, 28))
    expected = torch.tensor([[[[20.0 * 28 / 224, 36.0 * 14 / 112, 0.7], [111.9 * 28 / 224, 0.0, 0.0]]]])
    torch.testing.assert_close(cells, expected)


def test_heatmap_values_follow_the_documented_gaussian():
    joints = torch.tensor([[[[2.5, 4.5, 1.0], [0.3, 6.9, 0.2], [3.0, 3.0, 0.0], [float("nan"), 1.0, 0.0]]]])
    sigma = 1.3
    maps = joint_heatmaps(joints, size=(7, 5), sigma=sigma)  # h' = 7 rows, w' = 5 columns
    assert maps.shape == (1, 1, 4, 7, 5)
    for n in range(2):
        x, y = joints[0, 0, n, :2].tolist()
        for row in range(7):
            for col in range(5):
                d2 = (col + 0.5 - x) ** 2 + (row + 0.5 - y) ** 2
                assert maps[0, 0, n, row, col].item() == pytest.approx(math.exp(-d2 / (2 * sigma**2)), abs=1e-6)
    # A joint exactly on a cell centre peaks at 1 there (pose-estimation convention), at (row 4, col 2).
    assert maps[0, 0, 0, 4, 2].item() == pytest.approx(1.0)
    assert maps[0, 0, 0].argmax().item() == 4 * 5 + 2
    # Confidence <= 0 gives an all-zero map, even with NaN coordinates.
    assert torch.equal(maps[0, 0, 2:], torch.zeros(2, 7, 5))


def test_heatmap_of_pixel_joint_lands_in_the_right_cell():
    joints_px = torch.tensor([[[[60.0, 13.0, 1.0]]]])  # x = 60 px, y = 13 px of a 112 x 112 input
    cells = joints_to_cells(joints_px, input_hw=(112, 112), map_hw=(14, 14))  # 8 px per cell
    maps = joint_heatmaps(cells, size=(14, 14), sigma=1.0)
    row, col = divmod(maps[0, 0, 0].argmax().item(), 14)
    assert (row, col) == (13 // 8, 60 // 8)


def test_heatmap_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        joint_heatmaps(torch.zeros(1, 1, 1, 3), size=(4, 4), sigma=0.0)


def test_joint_map_tokens_are_heatmap_weighted_sums():
    generator = torch.Generator().manual_seed(0)
    local = torch.randn(2, 3, 5, 4, 6, generator=generator)  # (B, T, C', h', w')
    heatmaps = torch.rand(2, 3, 7, 4, 6, generator=generator)  # (B, T, N, h', w')
    tokens = joint_map_tokens(local, heatmaps)
    assert tokens.shape == (2, 3, 7, 5)
    expected = torch.zeros(2, 3, 7, 5)
    for b in range(2):
        for t in range(3):
            for n in range(7):
                for c in range(5):
                    expected[b, t, n, c] = sum(
                        local[b, t, c, i, j] * heatmaps[b, t, n, i, j] for i in range(4) for j in range(6)
                    )
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="map size"):
        joint_map_tokens(local, heatmaps[..., :3])


def make_inputs(batch=2, frames=4, persons=2, joints=3, grid=(2, 3), local_hw=(4, 6), seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = persons * joints
    local = torch.randn(batch, frames, 8, *local_hw, generator=generator)
    global_ = torch.randn(batch, frames, 16, *grid, generator=generator)
    coords = torch.rand(batch, frames, n, 2, generator=generator) * torch.tensor([local_hw[1], local_hw[0]])
    conf = torch.rand(batch, frames, n, 1, generator=generator) + 0.1
    joint_cells = torch.cat((coords, conf), dim=-1)
    heatmaps = joint_heatmaps(joint_cells, size=local_hw, sigma=1.0)
    return local, global_, heatmaps, joint_cells


@pytest.mark.parametrize("multi_class, joint_position", [(True, "fourier"), (False, "fourier"), (True, "linear")])
def test_aggregator_layout_and_contents(multi_class, joint_position):
    torch.manual_seed(0)
    aggregator = TokenAggregator(
        global_channels=16,
        local_channels=8,
        dim=12,
        persons=2,
        num_joints=3,
        multi_class=multi_class,
        joint_position=joint_position,
    )
    local, global_, heatmaps, joints = make_inputs()
    z = aggregator(local, global_, heatmaps, joints)
    grid, n = 6, 6
    classes = 3 if multi_class else 1
    assert z.shape == (2, 4, grid + n + classes, 12)
    assert aggregator.tokens_per_frame(grid_tokens=grid) == grid + n + classes

    cls_pos = aggregator.class_token_positions(grid_tokens=grid)
    assert cls_pos == ([0, grid + 1, grid + n + 2] if multi_class else [0])
    # Every frame carries its own copy of the same learned class tokens.
    for k, pos in enumerate(cls_pos):
        assert torch.equal(z[:, :, pos], aggregator.class_tokens[k].expand(2, 4, 12))

    grid_rows = list(range(1, 1 + grid))
    joint_rows = list(range(grid + 2, grid + 2 + n)) if multi_class else list(range(1 + grid, 1 + grid + n))
    # GG tokens: projected global features in row-major order, no position added (eq. 2), from the weights.
    w_g, b_g = aggregator.grid_proj.weight, aggregator.grid_proj.bias
    expected_grid = torch.einsum("btchw,dc->bthwd", global_, w_g).reshape(2, 4, grid, 12) + b_g
    torch.testing.assert_close(z[:, :, grid_rows], expected_grid, atol=1e-5, rtol=1e-5)
    # JM tokens: projected eq. (1) tokens + per-(person, joint) embedding + projected normalised position (eq. 3).
    position = joints / torch.tensor([6.0, 4.0, 1.0])  # x / w', y / h', confidence
    if joint_position == "fourier":  # sin/cos of x and y at 12 / 4 = 3 frequencies, then the confidence
        omega = torch.pi * torch.tensor([1.0, 4.0, 16.0])  # geometric from pi to 16 pi
        angles = position[..., :2, None] * omega  # (B, T, N, 2, 3)
        position = torch.cat((angles.sin(), angles.cos()), dim=-1).flatten(-2)
        position = torch.cat((position, joints[..., 2:]), dim=-1)  # (B, T, N, 13)
    eq1 = torch.einsum("btchw,btnhw->btnc", local, heatmaps)  # eq. (1): heat-map-weighted sums, written out
    w_j, b_j = aggregator.joint_proj.weight, aggregator.joint_proj.bias
    w_p, b_p = aggregator.position_proj.weight, aggregator.position_proj.bias
    expected_joint = eq1 @ w_j.T + b_j + aggregator.joint_embed + position @ w_p.T + b_p
    torch.testing.assert_close(z[:, :, joint_rows], expected_joint, atol=1e-5, rtol=1e-5)


def test_token_norm_and_temporal_embedding():
    torch.manual_seed(0)
    aggregator = TokenAggregator(
        global_channels=16, local_channels=8, dim=12, persons=2, num_joints=3, token_norm=True, frames=4
    )
    with torch.no_grad():
        aggregator.frame_embed.normal_()
    local, global_, heatmaps, joints = make_inputs()
    z = aggregator(local, global_, heatmaps, joints)
    frame = aggregator.frame_embed[None, :, None]  # (1, T, 1, D): frame t's vector on every token of frame t
    projected = torch.einsum("btchw,dc->bthwd", global_, aggregator.grid_proj.weight).reshape(2, 4, 6, 12)
    projected = projected + aggregator.grid_proj.bias
    mean, var = projected.mean(-1, keepdim=True), projected.var(-1, unbiased=False, keepdim=True)
    grid = (projected - mean) / torch.sqrt(var + 1e-5)  # LN, unit gain and zero bias at initialisation
    torch.testing.assert_close(z[:, :, 1:7], grid + frame, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z[:, :, 0], aggregator.class_tokens[0] + frame[:, :, 0].expand(2, 4, 12))
    with pytest.raises(ValueError, match="T=4 frames but got clips of T=2"):
        aggregator(local[:, :2], global_[:, :2], heatmaps[:, :2], joints[:, :2])


def test_aggregator_missing_joints_with_nan_coordinates_stay_finite():
    aggregator = TokenAggregator(global_channels=16, local_channels=8, dim=12, persons=2, num_joints=3)
    local, global_, _, joints = make_inputs()
    joints[0, 1, 2] = torch.tensor([float("nan"), float("nan"), 0.0])  # a missing joint
    heatmaps = joint_heatmaps(joints, size=(4, 6), sigma=1.0)
    z = aggregator(local, global_, heatmaps, joints)
    assert torch.isfinite(z).all()
    joint_row = 6 + 2 + 2  # P = 6, CLS_joint, then joint index 2
    expected = aggregator.joint_proj.bias + aggregator.joint_embed[2] + aggregator.position_proj.bias
    torch.testing.assert_close(z[0, 1, joint_row], expected)


@pytest.mark.parametrize("modality", ["rgb", "pose"])
def test_a_single_modality_sees_only_its_input(modality):
    """rgb: GG + class tokens, blind to the skeleton; pose: joint-position + class tokens, blind to the frames."""
    torch.manual_seed(0)
    aggregator = TokenAggregator(
        global_channels=16, local_channels=8, dim=12, persons=2, num_joints=3, modality=modality
    )
    local, global_, heatmaps, joints = make_inputs()
    z = aggregator(local, global_, heatmaps, joints)
    grid = aggregator.grid_tokens(global_.shape[-2:])
    assert (grid, aggregator.joint_tokens) == ((6, 0) if modality == "rgb" else (0, 6))
    assert z.shape == (2, 4, grid + aggregator.joint_tokens + 3, 12)
    assert aggregator.class_token_positions(grid_tokens=grid) == [0, grid + 1, grid + aggregator.joint_tokens + 2]
    grid_part, joint_part = aggregator.content_slices(grid_tokens=grid)
    assert (grid_part.stop - grid_part.start, joint_part.stop - joint_part.start) == (grid, aggregator.joint_tokens)
    other_frames = (torch.rand_like(local), torch.rand_like(global_), heatmaps, joints)
    other_pose = (local, global_, heatmaps.flip(-1), joints.flip(2))
    seen, unseen = (other_frames, other_pose) if modality == "rgb" else (other_pose, other_frames)
    assert torch.equal(aggregator(*unseen), z)  # the other input changes nothing
    assert not torch.allclose(aggregator(*seen), z)
    if modality == "pose":  # pos alone: the slot embedding plus the projected joint position
        position = aggregator.position_proj(aggregator._position_features(joints, map_hw=(4, 6)))
        torch.testing.assert_close(z[:, :, joint_part], aggregator.joint_embed + position)
