"""Cross-modal tokens of STAR (paper section 3.1, eq. 1-4): joint heat maps, joint map tokens, multi-class tokens.

Coordinate convention (shared with the data pipeline): joints are (x, y, confidence) in LOCAL
feature-map cell units, x right and y down; cell i spans [i, i+1), so its centre is i + 0.5.
`joints_to_cells` converts from input-pixel coordinates (pixel i spans [i, i+1) of the H x W network
input) by scaling with w'/W and h'/H.

Choices where the paper is silent:
- Heat maps (Fig. 2 b): an unnormalised Gaussian of std `sigma` cells evaluated at cell centres, peak 1
  at the joint (the pose-estimation convention), so eq. (1) is a Gaussian-weighted *sum* of the local
  features around the joint. A joint with confidence <= 0 (missing) gives an all-zero map; otherwise the
  map is not scaled by confidence (confidence reaches the model through the position projection).
- Joint position `pos` (eq. 3): a learned embedding per (person, joint) slot plus a linear projection of
  the joint's (x/w', y/h', confidence). Coordinates of missing joints are zeroed first, so NaN-coded
  missing joints are safe. Missing joints still occupy their token slot (no attention mask): the paper
  has none, and a fixed token count keeps ZAttn/BAttn reshapes simple.
- Joint order: N = persons * joints with person-major order, n = person * joints + joint.
- Multi-class tokens (eq. 2-4): every frame carries its own copy of CLS_glob, CLS_joint and CLS_total
  (the same three learned vectors), so Z is the S x T matrix the paper writes and ZAttn/BAttn can split
  it by time without special cases. Per frame: [CLS_glob, g_1..g_P, CLS_joint, j_1..j_N, CLS_total],
  S = P + N + 3. `multi_class=False` is Table 3's single-class ablation: [CLS, g_1..g_P, j_1..j_N],
  S = P + N + 1. GG tokens get no position information (eq. 2 adds none), and there is no temporal
  position embedding, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.errors import StarError


def joints_to_cells(joints_px: Tensor, *, input_hw: tuple[int, int], map_hw: tuple[int, int]) -> Tensor:
    """(..., 3) joints in input pixels (x, y, conf) -> local-map cell units; confidence untouched."""
    (in_h, in_w), (map_h, map_w) = input_hw, map_hw
    scale = joints_px.new_tensor([map_w / in_w, map_h / in_h, 1.0])
    return joints_px * scale


def joint_heatmaps(joints: Tensor, *, size: tuple[int, int], sigma: float) -> Tensor:
    """Gaussian joint maps: joints (B, T, N, 3) in cell units -> (B, T, N, h', w'), peak 1, zero if conf <= 0."""
    if sigma <= 0:
        raise StarError(f"heatmap sigma must be positive (in local-map cells), got {sigma}.")
    height, width = size
    x, y, confidence = joints.unbind(-1)  # (B, T, N) each
    centres_x = torch.arange(width, dtype=joints.dtype, device=joints.device) + 0.5
    centres_y = torch.arange(height, dtype=joints.dtype, device=joints.device) + 0.5
    # The 2-D Gaussian is separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2).
    gauss_x = torch.exp(-((centres_x - x.unsqueeze(-1)) ** 2) / (2 * sigma**2))  # (B, T, N, w')
    gauss_y = torch.exp(-((centres_y - y.unsqueeze(-1)) ** 2) / (2 * sigma**2))  # (B, T, N, h')
    maps = gauss_y.unsqueeze(-1) * gauss_x.unsqueeze(-2)  # (B, T, N, h', w')
    visible = (confidence > 0).unsqueeze(-1).unsqueeze(-1)  # (B, T, N, 1, 1); NaN confidence counts as missing
    return torch.where(visible, maps, torch.zeros((), dtype=maps.dtype, device=maps.device))


def joint_map_tokens(local: Tensor, heatmaps: Tensor) -> Tensor:
    """Eq. (1): heat-map-weighted sums of the local map, local (B, T, C', h', w') -> (B, T, N, C')."""
    if local.shape[:2] != heatmaps.shape[:2] or local.shape[-2:] != heatmaps.shape[-2:]:
        raise StarError(
            f"local maps {tuple(local.shape)} and joint heat maps {tuple(heatmaps.shape)} disagree on batch, "
            "frames or map size; build the heat maps at the local map's size (h', w')."
        )
    return torch.einsum("btchw,btnhw->btnc", local, heatmaps)


class TokenAggregator(nn.Module):
    """GG tokens + JM tokens + class tokens -> multi-class token tensor Z (B, T, S, D), eq. (1)-(4)."""

    def __init__(
        self,
        *,
        global_channels: int,
        local_channels: int,
        dim: int,
        persons: int,
        joints: int,
        multi_class: bool = True,
    ) -> None:
        super().__init__()
        self.num_joints = persons * joints
        self.multi_class = multi_class
        self.grid_proj = nn.Linear(global_channels, dim)  # GG tokens, C -> D
        self.joint_proj = nn.Linear(local_channels, dim)  # JM tokens, C' -> D
        self.joint_embed = nn.Parameter(torch.zeros(self.num_joints, dim))  # pos: one vector per (person, joint)
        self.position_proj = nn.Linear(3, dim)  # pos: (x/w', y/h', confidence) -> D
        # Rows: CLS_glob, CLS_joint, CLS_total (multi-class) or the single CLS (ablation).
        self.class_tokens = nn.Parameter(torch.zeros(3 if multi_class else 1, dim))
        nn.init.trunc_normal_(self.joint_embed, std=0.02)
        nn.init.trunc_normal_(self.class_tokens, std=0.02)

    def class_token_positions(self, *, grid_tokens: int) -> list[int]:
        """Indices of the class tokens within one frame's S tokens."""
        if self.multi_class:
            return [0, grid_tokens + 1, grid_tokens + self.num_joints + 2]
        return [0]

    def tokens_per_frame(self, *, grid_tokens: int) -> int:
        """S = P + N + number of class tokens."""
        return grid_tokens + self.num_joints + len(self.class_token_positions(grid_tokens=grid_tokens))

    def forward(self, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
        batch, frames = global_.shape[:2]
        map_h, map_w = heatmaps.shape[-2:]
        grid = self.grid_proj(global_.flatten(3).transpose(2, 3))  # (B, T, P, D), P = h*w
        joint = self.joint_proj(joint_map_tokens(local, heatmaps))  # (B, T, N, D), eq. (1)
        visible = joints[..., 2:] > 0  # (B, T, N, 1)
        position = joints / joints.new_tensor([map_w, map_h, 1.0])  # (B, T, N, 3): x/w', y/h', confidence
        position = torch.where(visible, position, torch.zeros((), dtype=joints.dtype, device=joints.device))
        joint = joint + self.joint_embed + self.position_proj(position)  # eq. (3): T_j + pos
        cls = self.class_tokens.expand(batch, frames, -1, -1)  # (B, T, K, D): one copy per frame
        if self.multi_class:
            # eq. (2)-(4): [CLS_glob, T_g] + [CLS_joint, T_j + pos] + [CLS_total]
            parts = (cls[:, :, 0:1], grid, cls[:, :, 1:2], joint, cls[:, :, 2:3])
        else:
            parts = (cls, grid, joint)  # pure-ViT single class token (Table 3 ablation)
        return torch.cat(parts, dim=2)  # (B, T, S, D)
