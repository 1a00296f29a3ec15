"""What turns prepared clips into logits for `star predict`: a checkpoint in PyTorch or an export in its runtime.

Both scorers take the same named numpy inputs with a leading batch axis (skeleton checkpoints: "joints" (B, T, N, C)
skeleton features; the others: "video" (B, T, 3, S, S) uint8 and "joints" (B, T, N, 3) in input pixels) and expose the
checkpoint facts the caller prepares them from as `state` (class_names, fingerprint, model_config, config). The
preparation itself lives in one place, `pipeline.inference.predict`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.core.devices import resolve_device
from pipeline.core.errors import StarError
from pipeline.inference.runtime import ExportedModel, is_export
from pipeline.training.checkpoints import is_skeleton_checkpoint, load_trained_model, read_checkpoint


class Scorer(Protocol):
    state: dict[str, Any]

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, classes) float32 logits of named inputs with a leading batch axis."""
        ...


class CheckpointScorer:
    """A `star train` checkpoint in PyTorch, with the MC3-18 that made its features unless it is a skeleton model."""

    def __init__(self, checkpoint: str | os.PathLike, *, weights: str = "", device: str = "auto") -> None:
        self.state = read_checkpoint(checkpoint)
        self.device = resolve_device(device)
        video = not is_skeleton_checkpoint(self.state)
        self.model = load_trained_model(self.state, video=video, weights=weights).to(self.device)

    @torch.no_grad()
    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        batch = {name: torch.from_numpy(array).to(self.device) for name, array in inputs.items()}
        return self.model(batch).float().cpu().numpy()


def open_scorer(path: str | os.PathLike, *, weights: str = "", device: str = "auto") -> Scorer:
    """The scorer of a checkpoint, or of an export (its folder, model file or sidecar) that `star predict` can feed."""
    if not is_export(path):
        return CheckpointScorer(path, weights=weights, device=device)
    exported = ExportedModel(path)
    if exported.kind == "maps":
        raise StarError(
            f"{Path(path)} takes cached backbone maps, not video: export the checkpoint with --backbone to predict "
            "from a video (or run it on maps of a cache)"
        )
    return exported
