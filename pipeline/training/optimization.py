"""What the training loop optimises and how: optimiser, per-step learning-rate schedule, and which backbone
stages end-to-end mode unfreezes (with optional activation checkpointing)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from model.backbone import STAGES as BACKBONE_STAGES
from model.backbone import MC3_18Backbone
from pipeline.core.errors import StarError
from pipeline.training.config import OPTIMIZERS, SCHEDULERS, TrainConfig


def build_optimizer(*, param_groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (paper) or AdamW; each group may carry its own "lr"."""
    # foreach: one kernel per step over all parameters, not one per tensor (torch picks it by itself only on CUDA)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    raise StarError(f"unknown optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step `step`: linear warm-up, then constant or cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    *, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; stepping per batch keeps warm-up smooth even for runs of a few epochs."""
    if cfg.scheduler not in SCHEDULERS:
        raise StarError(f"unknown scheduler {cfg.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, total_steps=total, warmup_steps=warmup, schedule=cfg.scheduler, min_ratio=cfg.min_lr_ratio
        ),
    )


def checkpoint_stages(backbone: MC3_18Backbone) -> None:
    """Recompute each backbone stage's activations in backward instead of storing them (activation checkpointing)."""
    for name in BACKBONE_STAGES:
        stage = getattr(backbone, name)
        run = stage.forward  # the stage's own bound forward

        def checkpointed(x: torch.Tensor, run=run) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)

        stage.forward = checkpointed  # an instance attribute: state dict and parameters are unchanged


def unfreeze_backbone(*, backbone: MC3_18Backbone, unfreeze_from: str) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """Make backbone stages from `unfreeze_from` on trainable; return their parameters and the stages left frozen."""
    first = BACKBONE_STAGES.index(unfreeze_from)
    trainable: list[nn.Parameter] = []
    frozen: list[nn.Module] = []
    for index, name in enumerate(BACKBONE_STAGES):
        stage = getattr(backbone, name)
        stage.requires_grad_(index >= first)
        if index >= first:
            trainable.extend(stage.parameters())
        else:
            frozen.append(stage)
    return trainable, frozen
