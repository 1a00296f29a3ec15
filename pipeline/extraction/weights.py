"""The MC3-18 the pipeline runs: the weights a user names, their id in cache fingerprints, and the network.

Extraction, training (end-to-end mode), evaluation, prediction and explanation all build the backbone here,
so a cache's features and the network that reproduces them come from one place. Problems with the weights a
user names (a missing Kinetics-400 file, a corrupt state dict) become one-line `StarError`s here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.backbone import MC3_18Backbone
from model.backbone import weights_id as backbone_weights_id
from pipeline.core.errors import StarError

WEIGHTS_CHOICES = ("kinetics400", "random")  # or the path of a state-dict file


def weights_id(weights: str) -> str:
    """The fingerprint's id of the weights a user names; "random" ones are drawn under seed 0 (`load_backbone`)."""
    if weights == "random":
        return "random:seed0"
    if weights != "kinetics400" and not Path(weights).is_file():
        problem = "is a folder" if Path(weights).is_dir() else "no such file"
        raise StarError(f"--weights {weights}: {problem}; use kinetics400, random or a state-dict file")
    return backbone_weights_id(weights)


def load_backbone(weights: str, *, trainable: bool = False) -> MC3_18Backbone:
    """The MC3-18 with `weights` ("kinetics400", "random" or a state-dict path).

    "random" weights are drawn under seed 0 in a forked RNG, so every process (and training's end-to-end mode)
    rebuilds the same network without touching the caller's RNG.
    """
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return MC3_18Backbone(weights=None if weights == "random" else weights, trainable=trainable)
    except (OSError, ValueError) as err:  # the weights file: missing, unreadable, not an mc3_18 state dict
        raise StarError(str(err)) from err


def backbone_from_fingerprint(
    fingerprint: dict[str, Any], *, weights: str = "", trainable: bool = False
) -> MC3_18Backbone:
    """The MC3-18 that produced a cache's features, rebuilt from the fingerprint's weights id.

    "random:seed0" and "kinetics400:..." are rebuilt by name; "file:<sha>" needs `weights`, the state-dict path,
    whose checksum must match. End-to-end mode asks for `trainable=True`.
    """
    stored = str(fingerprint["weights"])
    for name in WEIGHTS_CHOICES:
        if stored.startswith(f"{name}:"):
            return load_backbone(name, trainable=trainable)
    if not weights:
        raise StarError(
            f"the cache was extracted with the backbone weights file {stored}: pass that state-dict file with --weights"
        )
    if weights_id(weights) != stored:
        raise StarError(
            f"--weights {weights} is not the backbone weights file of the cache ({stored}): "
            "pass the file used by `star extract`"
        )
    return load_backbone(weights, trainable=trainable)
