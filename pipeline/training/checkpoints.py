"""Checkpoints of `star train`: written atomically, read safely and checked whole, turned back into a model.

A checkpoint is data, never code: it is read with `torch.load(weights_only=True)`. Before any command uses one,
`read_checkpoint` checks its format, its keys, its feature fingerprint and that its weights fit its model config;
`check_fingerprint` refuses a cache whose features were made differently from those the model was trained on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from model.star import ModelConfig, build_model
from pipeline.core.differences import describe_differences, differing_keys
from pipeline.core.errors import StarError
from pipeline.core.files import load_torch_file, write_atomically
from pipeline.extraction.weights import backbone_from_fingerprint
from pipeline.training.classifier import ClipClassifier

# 2: ModelConfig gained norm, init, token_norm, temporal_embedding, frames and joint_position; format-1
# checkpoints hold the post-LN, trunc-normal model without them and cannot be loaded into the current one.
# 3: ModelConfig's joint count `joints` became `num_joints` (`joints` is the joint tensor everywhere else), and
# dropout on the attention probabilities became its own option, `attention_dropout`; a format-2 checkpoint is read
# by renaming the count and setting attention_dropout to its dropout (what its model did).
CHECKPOINT_FORMAT = 3


def _from_format_2(state: dict[str, Any]) -> dict[str, Any]:
    for values in (state.get("model_config"), (state.get("config") or {}).get("model")):
        if isinstance(values, dict) and "joints" in values:
            values["num_joints"] = values.pop("joints")
            values.setdefault("attention_dropout", values.get("dropout", 0.1))
    return {**state, "format": 3}


_UPGRADES = {2: _from_format_2}  # format -> the function that reads it as the next format


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `pipeline.training.loop` safely (tensors and plain containers only) and check that
    it is whole: the keys every command reads, a model config that builds, weights that fit that model."""
    path = Path(path)
    state = load_torch_file(path, what="checkpoint", hint="use last.pt or best.pt from `star train`")
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise StarError(
            f"checkpoint {path} is not a STAR checkpoint (no model state or model config); "
            "use last.pt or best.pt from `star train`"
        )
    while state.get("format") in _UPGRADES:
        state = _UPGRADES[state["format"]](state)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise StarError(
            f"checkpoint {path} has format {state.get('format')}, written by an older STAR whose model this version "
            f"no longer builds (this version reads format {CHECKPOINT_FORMAT}): train it again with `star train`"
        )
    _check_checkpoint(state, path)
    return state


_CHECKPOINT_KEYS = {"model": dict, "model_config": dict, "fingerprint": dict, "class_names": list, "config": dict}
_FINGERPRINT_KEYS = ("frames", "input_size", "crop", "layout", "weights")
_SKELETON_FINGERPRINT_KEYS = (
    "kind",
    "dataset",
    "class_names",
    "layout",
)  # a skeleton cache's (pipeline/extraction/extract.py)


def is_skeleton_checkpoint(state: dict[str, Any]) -> bool:
    """Trained on a skeleton cache: a pose model fed skeleton features, with no maps or backbone behind it."""
    return state["fingerprint"].get("kind") == "skeletons"


def _check_checkpoint(state: dict[str, Any], path: Path) -> None:
    """A checkpoint's parts agree with each other; StarError naming the first part that does not."""
    for key, kind in _CHECKPOINT_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise StarError(f"checkpoint {path} is damaged: '{key}' is missing or not a {kind.__name__}")
    needed = _SKELETON_FINGERPRINT_KEYS if is_skeleton_checkpoint(state) else _FINGERPRINT_KEYS
    missing = [key for key in needed if key not in state["fingerprint"]]
    if missing:
        raise StarError(f"checkpoint {path} is damaged: its feature fingerprint lacks {', '.join(missing)}")
    try:
        cfg = ModelConfig(**state["model_config"])
    except (TypeError, ValueError) as err:
        raise StarError(f"checkpoint {path}: its model config cannot be built ({err})") from err
    if len(state["class_names"]) != cfg.num_classes:
        raise StarError(
            f"checkpoint {path} is damaged: {len(state['class_names'])} class names for a {cfg.num_classes}-class model"
        )
    # A real (CPU) model for its shapes: initialising one costs milliseconds, while the first model built on the meta
    # device imports torch._dynamo (its initialisers run through decompositions), which costs seconds. Its random
    # initialisation leaves the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        expected = {name: tuple(t.shape) for name, t in build_model(cfg).state_dict().items()}
    stored = {name: tuple(t.shape) if torch.is_tensor(t) else None for name, t in state["model"].items()}
    wrong = [name for name in expected if stored.get(name) != expected[name]] + sorted(set(stored) - set(expected))
    if wrong:
        name = wrong[0]
        found = (
            "absent" if name not in stored else f"shape {stored[name]}" if name in expected else "not part of the model"
        )
        needed = f", its model config needs {expected[name]}" if name in expected else ""
        raise StarError(
            f"checkpoint {path}: the weights do not fit its model config (dim={cfg.dim}, depth={cfg.depth}, "
            f"heads={cfg.heads}): {name} is {found}{needed} ({len(wrong)} tensors differ)"
        )


def check_fingerprint(*, expected: dict[str, Any], actual: dict[str, Any], what: str) -> None:
    """Refuse to use a cache whose features were made differently from those a checkpoint was trained on."""
    differing = differing_keys(expected, actual)
    if differing:
        details = describe_differences(expected, actual, differing, names=("checkpoint", "cache"))
        raise StarError(
            f"{what}: the cache's feature fingerprint differs from the checkpoint's in {', '.join(differing)} "
            f"({details}); use the cache the model was trained on or extract one with the same settings"
        )


def load_trained_model(checkpoint: dict[str, Any], *, video: bool, weights: str = "") -> ClipClassifier:
    """The classifier a checkpoint describes, in eval mode on the CPU.

    `video=True` adds the MC3-18 needed to run on decoded clips: the fine-tuned one of an end-to-end
    checkpoint, else the frozen backbone that produced the cache (rebuilt from the fingerprint; `weights`
    is the state-dict file when the cache was extracted from one).
    """
    star = build_model(ModelConfig(**checkpoint["model_config"]))  # read_checkpoint has checked that it builds
    star.load_state_dict(checkpoint["model"])
    backbone = None
    if video or checkpoint.get("stage") == "end_to_end":
        backbone = backbone_from_fingerprint(checkpoint["fingerprint"], weights=weights)
        if "backbone" in checkpoint:
            backbone.load_state_dict(checkpoint["backbone"])
    return ClipClassifier(star=star, backbone=backbone).eval()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    return write_atomically(path, lambda handle: torch.save(state, handle))


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy `src` over `dst` through a temporary file: `dst` is always a whole file."""
    with open(src, "rb") as source:
        return write_atomically(dst, lambda handle: shutil.copyfileobj(source, handle))
