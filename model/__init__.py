"""STAR-Transformer model (Ahn et al., WACV 2023, section 3)."""

from model.attention import (
    BinaryAttention,
    FullAttention,
    ZigzagAttention,
    attention_flops,
)
from model.backbone import MC3_18Backbone, kinetics_checkpoint_path
from model.rollout import attention_rollout
from model.star import STAR, ModelConfig, build_model, format_summary, model_summary
from model.tokens import (
    TokenAggregator,
    joint_heatmaps,
    joint_map_tokens,
    joints_to_cells,
)
from model.transformer import STARLayer, STARStage

__all__ = [
    "STAR",
    "BinaryAttention",
    "FullAttention",
    "MC3_18Backbone",
    "ModelConfig",
    "STARLayer",
    "STARStage",
    "TokenAggregator",
    "ZigzagAttention",
    "attention_flops",
    "attention_rollout",
    "build_model",
    "format_summary",
    "joint_heatmaps",
    "joint_map_tokens",
    "joints_to_cells",
    "kinetics_checkpoint_path",
    "model_summary",
]
