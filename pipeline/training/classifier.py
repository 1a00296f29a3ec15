"""The classifier training and evaluation run: STAR over cached maps or over decoded video, and its batches."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.errors import StarError


class ClipClassifier(nn.Module):
    """Runs STAR on one collated batch, from cached maps or from video, so DDP can wrap either path.

    A batch with a "video" key goes through `STAR.forward_video` with this module's `backbone` (end-to-end
    mode); otherwise the cached maps go through `STAR.forward`. One `forward` for both is what lets
    `DistributedDataParallel` see the video path too (DDP synchronises only gradients of calls made through
    its own `forward`), and owning the backbone puts its trainable parameters under DDP.
    """

    def __init__(self, *, star: nn.Module, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.star = star
        self.backbone = backbone

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "local" not in batch and "video" not in batch:  # skeleton features (pipeline.training.skeletons)
            return self._skeleton_logits(batch["joints"])
        if "video" in batch:
            if self.backbone is None:
                raise StarError(
                    "a video batch needs a backbone: build the classifier with backbone=MC3_18Backbone(...)"
                )
            return self.star.forward_video(batch["video"], batch["joints"], backbone=self.backbone)
        # Cached maps arrive as the float16 they are stored in (half the bytes to read, copy and transfer).
        local, global_, heatmaps = (batch[name].float() for name in ("local", "global", "heatmaps"))
        return self.star(local, global_, heatmaps, batch["joints"])

    def _skeleton_logits(self, joints: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C) -> logits; (B, K, T, N, C), K samplings of each clip -> log of their mean probabilities."""
        if joints.dim() == 4:
            return self.star.forward_skeleton(joints)
        logits = self.star.forward_skeleton(joints.flatten(0, 1))  # (B * K, classes)
        probabilities = mean_probabilities(logits, clips=joints.shape[1])  # (B, classes)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


def mean_probabilities(logits: torch.Tensor, *, clips: int) -> torch.Tensor:
    """(B * K, classes) logits of K samplings per clip -> (B, classes): the mean of their softmax, how a skeleton
    clip is scored (`star evaluate`, `star predict`, `star watch`)."""
    return logits.float().softmax(dim=-1).view(-1, clips, logits.shape[-1]).mean(dim=1)


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a collated batch to `device` (non-blocking when the batch is pinned)."""
    return {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()
    }


def autocast_context(*, device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere (CPU runs stay float32 and bit-reproducible)."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
