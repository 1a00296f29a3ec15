"""STAR: the full STAR-Transformer action recogniser (paper section 3, Fig. 2) and its one builder.

    maps + joints -> TokenAggregator (eq. 1-4) -> encoder (L x F+Z) -> decoder (L x F+B)
                  -> mean of all class tokens over all frames -> MLP head -> logits

Two entry points give the same logits for the same clip:
- `STAR.forward(local, global_, heatmaps, joints)` on (cached) backbone maps, joints in local-map cells;
- `STAR.forward_video(video, joints_px, *, backbone)` runs an `MC3_18Backbone` first, converts the
  input-pixel joints with `joints_to_cells` and builds the heat maps with `joint_heatmaps`.
  The backbone is passed in rather than owned, so a STAR state dict never contains the (usually
  frozen, cached) CNN and one STAR instance serves both the cached-feature and the video path; for
  end-to-end fine-tuning the trainer adds the backbone's parameters to its optimiser.
`forward_features` (pooled class-token features, (B, D)) and `forward_head` are split as in timm.

Defaults for what the paper leaves open (`ModelConfig`):
- dim = 256: the width of the local (layer3) features, and small enough that 12 attention modules over
  T*S = 16 * 224 = 3584 tokens train at the paper's batch size 4; the datasets are small
  (Penn Action: 2,326 clips) and the paper reports overfitting beyond 4 layers, which argues against a
  ViT-B width.
- heads = 4, i.e. a head width of 64, the head width ViT/DeiT use at every model size; at dim 256 it is
  also the faster choice for the SDPA kernels (benchmarks/attention.py).
- mlp_ratio = 4 (ViT, Vaswani et al.); dropout = 0.1 (the "pure transformer" [44] the paper follows) on the
  attention output projections, in the MLPs and in the head; attention_dropout = 0 on the attention
  probabilities, as in timm's ViT. Dropout on the probabilities sends PyTorch's CPU attention to its math
  kernel, which keeps every L x L matrix for backward; without it the fused kernel keeps none
  (benchmarks/train.py, "step"; the cost in memory and accuracy is in docs/design.md).
- heatmap_sigma = 1.0 local cell. A local cell is 8 input pixels, so this is the usual pose-estimation
  Gaussian (sigma 2 px on a stride-4 heat map = 8 input px); neighbouring joints 2-4 cells apart at
  224 px stay mostly separate.
- depth = 3 (Fig. 5). The head is Linear(D, D) -> GELU -> Dropout -> Linear(D, classes): the paper says
  only "MLP".

Options that make STAR learn at every width, each with the paper-literal setting one value away
(docs/design.md, "Making STAR learn", has the measurements):
- norm = "pre": pre-LN layers and a final LayerNorm before pooling; "post" is eq. (11)-(14) literally.
- init = "fan_in": PyTorch's default Linear init, uniform in +-1/sqrt(fan_in), which keeps the signal's
  scale at any width, and a unit-scale joint slot embedding (model/tokens.py); "vit" is ViT's
  trunc-normal(0.02) for every Linear and embedding, tuned for width 768, which at width 64 shrinks the
  signal with every Linear and collapses the model (every clip gets the same features).
- token_norm = True: LayerNorm on the projected GG and JM tokens (model/tokens.py).
- temporal_embedding = True: a learned per-frame embedding for clips of `frames` frames
  (model/tokens.py); without it STAR cannot tell an action from its time reverse.
- joint_position = "fourier": sin/cos features of the joint coordinates feed `pos` (eq. 3);
  "linear" projects the raw coordinates (model/tokens.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from model.attention import attention_flops
from model.backbone import MC3_18Backbone
from model.tokens import (
    JOINT_POSITIONS,
    MODALITIES,
    TokenAggregator,
    joint_heatmaps,
    joints_to_cells,
)
from model.transformer import LAYER_KINDS, NORMS, STARStage

INITS = ("fan_in", "vit")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything that shapes a STAR model; read only by `build_model`."""

    num_classes: int
    persons: int = 2  # NTU RGB+D: up to 2 bodies per clip
    num_joints: int = 25  # joints per person: the NTU RGB+D Kinect v2 skeleton
    dim: int = 256
    depth: int = 3  # layers per stage (Fig. 5)
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # residual branches: after the attention projections, in the MLPs, in the head
    attention_dropout: float = 0.0  # on the attention probabilities
    encoder: str = "FZ"  # Table 4: F-Z encoder, F-B decoder
    decoder: str = "FB"
    multi_class: bool = True  # Table 3
    heatmap_sigma: float = 1.0  # in local-map cells
    local_channels: int = MC3_18Backbone.local_channels
    global_channels: int = MC3_18Backbone.global_channels
    norm: str = "pre"  # "post": eq. (11)-(14) literally
    init: str = "fan_in"  # "vit": trunc-normal(0.02) Linear weights
    token_norm: bool = True  # LayerNorm on the projected GG and JM tokens
    temporal_embedding: bool = True  # learned per-frame embedding
    joint_position: str = "fourier"  # "linear": a Linear of the raw (x, y, confidence)
    frames: int = 16  # T of the clips (the temporal embedding's length; the trainer takes it from the cache)
    modality: str = "both"  # "rgb": frames only (GG tokens); "pose": skeleton only (joint positions)
    joint_channels: int = (
        3  # per-joint input: (x, y, confidence) on maps; 2 per skeleton stream + 1 from a skeleton cache
    )

    def __post_init__(self) -> None:
        for name in (
            "num_classes",
            "persons",
            "num_joints",
            "dim",
            "depth",
            "heads",
            "local_channels",
            "global_channels",
            "frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"model option {name} must be a positive integer, got {getattr(self, name)}.")
        if self.dim % self.heads:
            raise ValueError(f"model width dim={self.dim} is not divisible by heads={self.heads}.")
        choices = {
            "encoder": LAYER_KINDS,
            "decoder": LAYER_KINDS,
            "norm": NORMS,
            "init": INITS,
            "joint_position": JOINT_POSITIONS,
            "modality": MODALITIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model option {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.joint_channels < 2:
            raise ValueError(
                f"joint_channels must be at least 2 (coordinates and a confidence), got {self.joint_channels}."
            )
        if self.mlp_ratio <= 0 or self.heatmap_sigma <= 0:
            raise ValueError("mlp_ratio and heatmap_sigma must be positive.")


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _vit_init(module: nn.Module) -> None:
    # ViT initialisation: small truncated-normal linear weights and embeddings, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    if isinstance(module, TokenAggregator) and module.joint_tokens:
        nn.init.trunc_normal_(module.joint_embed, std=0.02)


class STAR(nn.Module):
    """STAR-Transformer: backbone maps + joints -> action logits (B, num_classes)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.joint_tokens = cfg.persons * cfg.num_joints  # N
        self.joint_channels = cfg.joint_channels
        self.local_channels = cfg.local_channels
        self.global_channels = cfg.global_channels
        self.heatmap_sigma = cfg.heatmap_sigma
        self.aggregator = TokenAggregator(
            global_channels=cfg.global_channels,
            local_channels=cfg.local_channels,
            dim=cfg.dim,
            persons=cfg.persons,
            num_joints=cfg.num_joints,
            multi_class=cfg.multi_class,
            token_norm=cfg.token_norm,
            frames=cfg.frames if cfg.temporal_embedding else None,
            joint_position=cfg.joint_position,
            modality=cfg.modality,
            joint_channels=cfg.joint_channels,
        )
        stage = dict(
            depth=cfg.depth,
            dim=cfg.dim,
            heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout,
            norm=cfg.norm,
            attention_dropout=cfg.attention_dropout,
        )
        self.encoder = STARStage(kind=cfg.encoder, **stage)
        self.decoder = STARStage(kind=cfg.decoder, **stage)
        # pre-LN: the residual stream is unnormalised until this final LayerNorm
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.dim, cfg.num_classes)
        )
        if cfg.init == "vit":  # "fan_in" is what nn.Linear does by itself
            self.apply(_vit_init)

    def _check_inputs(self, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> None:
        batch, frames = global_.shape[:2]
        expected = {
            "local": (local, (batch, frames, self.local_channels, *heatmaps.shape[-2:])),
            "global_": (global_, (batch, frames, self.global_channels, *global_.shape[-2:])),
            "heatmaps": (heatmaps, (batch, frames, self.joint_tokens, *local.shape[-2:])),
            "joints": (joints, (batch, frames, self.joint_tokens, 3)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"STAR input {name} has shape {tuple(tensor.shape)}, expected {shape} "
                    f"(B, T, local C'={self.local_channels}, global C={self.global_channels}, "
                    f"N = persons * num_joints = {self.joint_tokens}); check that the cached features and the "
                    "model config agree."
                )

    def class_token_positions(self, *, grid_tokens: int) -> list[int]:
        """Indices of the class tokens within one frame's S tokens (P = grid_tokens)."""
        return self.aggregator.class_token_positions(grid_tokens=grid_tokens)

    def forward_features(self, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
        """Pooled class-token features (B, D)."""
        self._check_inputs(local, global_, heatmaps, joints)
        z = self.aggregator(local, global_, heatmaps, joints)  # (B, T, S, D), eq. (1)-(4)
        return self._pool(z, grid_tokens=self.aggregator.grid_tokens(global_.shape[-2:]))

    def forward_skeleton(self, joints: Tensor) -> Tensor:
        """Logits (B, num_classes) of a pose-modality model from skeleton features (B, T, N, joint_channels)."""
        if tuple(joints.shape[2:]) != (self.joint_tokens, self.joint_channels):
            raise ValueError(
                f"skeleton features have shape {tuple(joints.shape)}, expected (B, T, {self.joint_tokens}, "
                f"{self.joint_channels}): check that the skeleton cache and the model config agree."
            )
        z = self.aggregator.forward_skeleton(joints)  # (B, T, S, D), eq. (2)-(4) without GG tokens
        return self.forward_head(self._pool(z, grid_tokens=0))

    def _pool(self, z: Tensor, *, grid_tokens: int) -> Tensor:
        z = self.norm(self.decoder(self.encoder(z)))  # (B, T, S, D), eq. (11)-(14) per layer
        cls = z[:, :, self.class_token_positions(grid_tokens=grid_tokens)]  # (B, T, K, D)
        # "The multi-class tokens output by STAR-transformer are combined into a single class token by averaging."
        return cls.mean(dim=(1, 2))  # (B, D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)  # (B, num_classes)

    def forward(self, local: Tensor, global_: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
        """Logits (B, num_classes) from local (B,T,C',h',w'), global_ (B,T,C,h,w), heatmaps (B,T,N,h',w'),
        joints (B,T,N,3) in local-map cells."""
        return self.forward_head(self.forward_features(local, global_, heatmaps, joints))

    def inputs_from_video(
        self, video: Tensor, joints_px: Tensor, *, backbone: MC3_18Backbone
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(local, global_, heatmaps, joints) for `forward`, from video (B,T,3,H,W) and pixel joints (B,T,N,3)."""
        local, global_ = backbone(video)  # (B, T, C', h', w'), (B, T, C, h, w)
        joints = joints_to_cells(joints_px, input_hw=video.shape[-2:], map_hw=local.shape[-2:])  # (B, T, N, 3)
        heatmaps = joint_heatmaps(joints, size=local.shape[-2:], sigma=self.heatmap_sigma)  # (B, T, N, h', w')
        return local, global_, heatmaps.to(local.dtype), joints.to(local.dtype)

    def forward_video(self, video: Tensor, joints_px: Tensor, *, backbone: MC3_18Backbone) -> Tensor:
        """Logits from raw clips: same result as `forward` on the maps `inputs_from_video` builds."""
        return self.forward(*self.inputs_from_video(video, joints_px, backbone=backbone))


def build_model(cfg: ModelConfig) -> STAR:
    """STAR of `cfg`: the model's builder."""
    return STAR(cfg)


def model_summary(cfg: ModelConfig, *, size: int) -> dict:
    """Parameter counts, token counts and attention FLOPs of `cfg` for clips of `cfg.frames` x size x size."""
    frames = cfg.frames
    if size % MC3_18Backbone.global_stride:
        raise ValueError(f"input size must be a multiple of {MC3_18Backbone.global_stride}, got {size}.")
    if frames < 1:
        raise ValueError(f"frames must be positive, got {frames}.")
    if {cfg.encoder[1], cfg.decoder[1]} & {"Z", "B"} and frames % 2:
        raise ValueError(f"ZAttn/BAttn split the frames into two equal groups: frames must be even, got {frames}.")
    model = build_model(cfg)
    local_side, grid_side = size // MC3_18Backbone.local_stride, size // MC3_18Backbone.global_stride
    grid = model.aggregator.grid_tokens((grid_side, grid_side))
    tokens = model.aggregator.tokens_per_frame(grid_tokens=grid)
    flops: dict[str, dict[str, int]] = {}
    for stage_name, kind in (("encoder", cfg.encoder), ("decoder", cfg.decoder)):
        per_layer = [attention_flops(k, frames=frames, tokens=tokens, dim=cfg.dim) for k in kind]
        flops[stage_name] = {part: cfg.depth * sum(f[part] for f in per_layer) for part in ("core", "projections")}
    full = attention_flops("F", frames=frames, tokens=tokens, dim=cfg.dim)
    return {
        "config": asdict(cfg),
        "input": {"frames": frames, "size": size, "local_map": local_side, "global_map": grid_side},
        "tokens": {
            "grid_per_frame": grid,
            "joints_per_frame": model.aggregator.joint_tokens,
            "class_per_frame": tokens - grid - model.aggregator.joint_tokens,
            "per_frame": tokens,
            "per_clip": frames * tokens,
        },
        "parameters": {
            "aggregator": _parameter_count(model.aggregator),
            "encoder": _parameter_count(model.encoder),
            "decoder": _parameter_count(model.decoder),
            "head": _parameter_count(model.head),
            "star_total": _parameter_count(model),
            "backbone_mc3_18": MC3_18Backbone.parameter_count(),
        },
        "attention_gflops": {
            **{f"{stage}_{part}": value / 1e9 for stage, parts in flops.items() for part, value in parts.items()},
            "total_core": sum(parts["core"] for parts in flops.values()) / 1e9,
            "total_core_if_all_full": 4 * cfg.depth * full["core"] / 1e9,
        },
    }


def format_summary(summary: dict) -> str:
    """`model_summary` as indented `key: value` lines for the terminal."""
    lines = []
    for section, values in summary.items():
        lines.append(f"{section}:")
        for key, value in values.items():
            shown = f"{value:,.2f}" if isinstance(value, float) and section == "attention_gflops" else value
            shown = f"{shown:,}" if isinstance(shown, int) and not isinstance(shown, bool) else shown
            lines.append(f"  {key:<24} {shown}")
    return "\n".join(lines)
