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
- Joint position `pos` (eq. 3): a learned embedding per (person, joint) slot plus a projection of the
  joint's position (and, for skeleton features, of every coordinate channel given: `joint_channels`).
  `joint_position="fourier"` (default) projects sin/cos features of (x/w', y/h') at geometric frequencies
  from pi to 16 pi rad per map width (the sine position encoding of DETR and NeRF, applied to continuous
  coordinates) and the confidence; `"linear"` projects the raw (x/w', y/h', confidence). The raw coordinates
  vary by a few tenths across an action, so a linear projection of them starts far weaker than the
  joint-map features and the model needs hundreds of epochs to amplify it; the Fourier features are
  unit-scale from the first step (docs/design.md, "Making STAR learn"). Features of missing
  joints are zeroed, so NaN-coded missing joints are safe. Missing joints still occupy their token slot
  (no attention mask): the paper has none, and a fixed token count keeps ZAttn/BAttn reshapes simple.
- Joint order: N = persons * num_joints with person-major order, n = person * num_joints + joint.
- Multi-class tokens (eq. 2-4): every frame carries its own copy of CLS_glob, CLS_joint and CLS_total
  (the same three learned vectors), so Z is the S x T matrix the paper writes and ZAttn/BAttn can split
  it by time without special cases. Per frame: [CLS_glob, g_1..g_P, CLS_joint, j_1..j_N, CLS_total],
  S = P + N + 3. `multi_class=False` is Table 3's single-class ablation: [CLS, g_1..g_P, j_1..j_N],
  S = P + N + 1. GG tokens get no position information (eq. 2 adds none).

Modalities (`modality`), for measuring what each input brings; "both" is STAR:
- "rgb": GG tokens and the class tokens only; no JM tokens (the skeleton is not used at all).
- "pose": JM tokens from the joint positions alone (`pos`: slot embedding + position projection, no pooled
  local features) and the class tokens; no GG tokens (the frames are not used at all). `forward_skeleton`
  takes skeleton features (B, T, N, C) directly (normalised joints, bones, motions and the confidence
  last, built by the data pipeline), so a skeleton-only model needs no maps at all.
The token layout keeps its order with the absent part left out, so class token positions follow from the counts.

Two additions the paper does not have, each one option away from its literal form:
- `token_norm`: a LayerNorm on the projected GG tokens and on the projected JM tokens (before `pos` is
  added). Backbone maps and heat-map sums differ in scale by orders of magnitude between clips and
  between the two token kinds; normalising them lets neither drown the other at initialisation.
- `frames` (learned temporal embedding): one learned vector per frame index, added to every token of
  that frame, class tokens included. Without it every attention variant is blind to frame order
  (FAttn is permutation-equivariant over frames and ZAttn/BAttn are symmetric under time reversal), so
  an action and its exact reverse (sit down / stand up) give identical logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def joints_to_cells(joints_px: Tensor, *, input_hw: tuple[int, int], map_hw: tuple[int, int]) -> Tensor:
    """(..., 3) joints in input pixels (x, y, conf) -> local-map cell units; confidence untouched."""
    (in_h, in_w), (map_h, map_w) = input_hw, map_hw
    scale = joints_px.new_tensor([map_w / in_w, map_h / in_h, 1.0])
    return joints_px * scale


def joint_heatmaps(joints: Tensor, *, size: tuple[int, int], sigma: float) -> Tensor:
    """Gaussian joint maps: joints (B, T, N, 3) in cell units -> (B, T, N, h', w'), peak 1, zero if conf <= 0."""
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be positive (in local-map cells), got {sigma}.")
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


JOINT_POSITIONS = ("fourier", "linear")
MODALITIES = ("both", "rgb", "pose")
FOURIER_MAX_CYCLES = 8.0  # highest frequency: 8 cycles (16 pi rad) per map width


def fourier_features(xy: Tensor, *, frequencies: int) -> Tensor:
    """sin/cos of each coordinate of xy (..., 2) in map units [0, 1] -> (..., 4 * frequencies)."""
    omega = math.pi * torch.logspace(
        0, math.log10(2 * FOURIER_MAX_CYCLES), frequencies, dtype=xy.dtype, device=xy.device
    )
    angles = xy.unsqueeze(-1) * omega  # (..., 2, F)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (..., 2 * 2F)


def joint_map_tokens(local: Tensor, heatmaps: Tensor) -> Tensor:
    """Eq. (1): heat-map-weighted sums of the local map, local (B, T, C', h', w') -> (B, T, N, C')."""
    if local.shape[:2] != heatmaps.shape[:2] or local.shape[-2:] != heatmaps.shape[-2:]:
        raise ValueError(
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
        num_joints: int,
        multi_class: bool = True,
        token_norm: bool = False,
        frames: int | None = None,
        joint_position: str = "fourier",
        modality: str = "both",
        joint_channels: int = 3,
    ) -> None:
        super().__init__()
        if joint_position not in JOINT_POSITIONS:
            raise ValueError(
                f"joint_position={joint_position!r} is not a joint position encoding; use one of {JOINT_POSITIONS}."
            )
        if modality not in MODALITIES:
            raise ValueError(f"modality={modality!r} is not one of {', '.join(MODALITIES)}.")
        self.modality = modality
        self.uses_grid = modality != "pose"  # GG tokens from the frames
        self.uses_maps = modality == "both"  # JM tokens pool the local maps (eq. 1)
        self.joint_tokens = persons * num_joints if modality != "rgb" else 0  # N JM tokens per frame
        self.multi_class = multi_class
        if self.uses_grid:
            self.grid_proj = nn.Linear(global_channels, dim)  # GG tokens, C -> D
            self.grid_norm = nn.LayerNorm(dim) if token_norm else nn.Identity()
        if self.uses_maps:
            self.joint_proj = nn.Linear(local_channels, dim)  # JM tokens, C' -> D
            self.joint_norm = nn.LayerNorm(dim) if token_norm else nn.Identity()
        # Learned temporal embedding, one row per frame index (None: the paper's frame-order-blind tokens).
        self.frame_embed = nn.Parameter(torch.zeros(frames, dim)) if frames else None
        self.frequencies = max(dim // 4, 1) if joint_position == "fourier" else 0
        if self.joint_tokens:
            self.joint_embed = nn.Parameter(torch.zeros(self.joint_tokens, dim))  # pos: one vector per (person, joint)
            # pos: position features -> D; Fourier: 2F sin/cos features per coordinate channel + confidence, linear: the
            # C channels as they are ((x/w', y/h', confidence) on cached maps)
            coordinates = joint_channels - 1
            self.position_proj = nn.Linear(
                2 * self.frequencies * coordinates + 1 if self.frequencies else joint_channels, dim
            )
            # The joint slot embedding starts at unit scale, like nn.Embedding and like the normalised tokens it is
            # added to (at std 0.02 the joints are nearly anonymous at first).
            nn.init.normal_(self.joint_embed, std=1.0)
        # Rows: CLS_glob, CLS_joint, CLS_total (multi-class) or the single CLS (ablation).
        self.class_tokens = nn.Parameter(torch.zeros(3 if multi_class else 1, dim))
        # The class tokens and the temporal embedding start small, as in ViT: a unit-scale random per-frame vector
        # drowns the content (docs/design.md, "Making STAR learn").
        for embedding in (self.class_tokens, self.frame_embed):
            if embedding is not None:
                nn.init.trunc_normal_(embedding, std=0.02)

    def grid_tokens(self, global_hw: tuple[int, int]) -> int:
        """P, the GG tokens per frame for a global map of h x w (0 without the frames)."""
        return global_hw[0] * global_hw[1] if self.uses_grid else 0

    def class_token_positions(self, *, grid_tokens: int) -> list[int]:
        """Indices of the class tokens within one frame's S tokens (P = grid_tokens, see `grid_tokens`)."""
        if self.multi_class:
            return [0, grid_tokens + 1, grid_tokens + self.joint_tokens + 2]
        return [0]

    def content_slices(self, *, grid_tokens: int) -> tuple[slice, slice]:
        """(GG tokens, JM tokens) positions within one frame's S tokens; empty slices for an absent part."""
        grid = slice(1, 1 + grid_tokens)  # after CLS_glob (or the single CLS)
        first_joint = grid.stop + (1 if self.multi_class else 0)  # after CLS_joint
        return grid, slice(first_joint, first_joint + self.joint_tokens)

    def tokens_per_frame(self, *, grid_tokens: int) -> int:
        """S = P + N + number of class tokens."""
        return grid_tokens + self.joint_tokens + len(self.class_token_positions(grid_tokens=grid_tokens))

    def _position_features(self, joints: Tensor, *, map_hw: tuple[int, int] | None) -> Tensor:
        """(B, T, N, C) joints -> (B, T, N, F_in) inputs of `position_proj`, zero for missing joints.

        The last channel is the confidence. With `map_hw` the joints are (x, y, confidence) in cells and become
        (x/w', y/h', confidence); without it the coordinate channels are taken as they are (normalised skeleton
        features, `forward_skeleton`).
        """
        coords, confidence = joints[..., :-1], joints[..., -1:]
        if map_hw is not None:
            map_h, map_w = map_hw
            coords = coords / coords.new_tensor([map_w, map_h])  # (B, T, N, 2): x/w', y/h'
        if self.frequencies:
            coords = fourier_features(coords, frequencies=self.frequencies)  # (B, T, N, 2F (C - 1))
        visible = confidence > 0  # (B, T, N, 1); NaN confidence counts as missing
        return torch.where(
            visible, torch.cat((coords, confidence), dim=-1), torch.zeros((), dtype=joints.dtype, device=joints.device)
        )

    def forward(self, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
        batch, frames = global_.shape[:2]
        self._check_frames(frames)
        empty = global_.new_zeros(batch, frames, 0, self.class_tokens.shape[-1])  # (B, T, 0, D): a part left out
        grid = (
            self.grid_norm(self.grid_proj(global_.flatten(3).transpose(2, 3))) if self.uses_grid else empty
        )  # (B, T, P, D)
        joint = empty
        if self.joint_tokens:
            position = self.position_proj(
                self._position_features(joints, map_hw=tuple(heatmaps.shape[-2:]))
            )  # (B, T, N, D)
            if self.uses_maps:  # eq. (1), (3): T_j + pos
                joint = (
                    self.joint_norm(self.joint_proj(joint_map_tokens(local, heatmaps))) + self.joint_embed + position
                )
            else:  # pos alone
                joint = self.joint_embed + position
        return self._assemble(grid, joint)

    def forward_skeleton(self, joints: Tensor) -> Tensor:
        """Z (B, T, S, D) of the pose modality from skeleton features (B, T, N, C), the confidence last."""
        if self.uses_grid or not self.joint_tokens:
            raise ValueError(
                f"skeleton features alone feed the pose modality only; this aggregator is modality={self.modality!r}."
            )
        self._check_frames(joints.shape[1])
        joint = self.joint_embed + self.position_proj(self._position_features(joints, map_hw=None))  # (B, T, N, D)
        return self._assemble(joint.new_zeros(*joint.shape[:2], 0, joint.shape[-1]), joint)

    def _check_frames(self, frames: int) -> None:
        if self.frame_embed is not None and frames != len(self.frame_embed):
            raise ValueError(
                f"this STAR model learned a temporal embedding for T={len(self.frame_embed)} frames but got clips of "
                f"T={frames}; sample {len(self.frame_embed)} frames per clip (or train a model for T={frames})."
            )

    def _assemble(self, grid: Tensor, joint: Tensor) -> Tensor:
        """GG tokens (B, T, P, D) and JM tokens (B, T, N, D), either possibly empty, with the class tokens -> Z."""
        batch, frames = grid.shape[:2]
        cls = self.class_tokens.expand(batch, frames, -1, -1)  # (B, T, K, D): one copy per frame
        if self.multi_class:
            # eq. (2)-(4): [CLS_glob, T_g] + [CLS_joint, T_j + pos] + [CLS_total]
            parts = (cls[:, :, 0:1], grid, cls[:, :, 1:2], joint, cls[:, :, 2:3])
        else:
            parts = (cls, grid, joint)  # pure-ViT single class token (Table 3 ablation)
        z = torch.cat(parts, dim=2)  # (B, T, S, D)
        if self.frame_embed is not None:
            z = z + self.frame_embed[:, None]  # (T, 1, D): frame t's vector on all of its tokens
        return z
