"""Training configuration: the `TrainConfig` dataclass, its presets, config files, layering and checks.

Layers, lowest first: dataclass defaults (the paper's section 4.1 recipe) < preset < config file (TOML or JSON)
< CLI options. `--resume` starts from the configuration stored in the run's last checkpoint instead of the
defaults, and only the settings in `RESUMABLE_CHANGES` may differ from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.backbone import STAGES as BACKBONE_STAGES
from model.star import ModelConfig, model_summary
from pipeline.core.differences import differing_keys
from pipeline.core.errors import StarError
from pipeline.core.files import read_text_file
from pipeline.training.checkpoints import read_checkpoint

VAL_FROM_TRAIN = "auto"


OPTIMIZERS = ("sgd", "adamw")


SCHEDULERS = ("none", "cosine")


RESUMABLE_CHANGES = {"epochs", "workers", "device", "cache", "out"}  # may differ on --resume


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; defaults are the paper's §4.1 recipe."""

    cache: str = ""  # zarr feature cache written by `star extract`
    out: str = ""  # run directory: config.json, metrics.jsonl, tensorboard/, last.pt, best.pt
    benchmark: str = ""  # split scheme stored in the cache, e.g. "ntu120-xsub"; "" = the cache's only one
    train_split: str = "train"
    # Validation (chooses best.pt): "auto" carves `val_fraction` of the training performers (NTU) or samples out
    # of the training split; a split name of the cache (e.g. "test") validates on that split; "" disables it.
    # The test split is for `star evaluate`: choosing a checkpoint on it makes its test figure optimistic.
    val_split: str = VAL_FROM_TRAIN
    val_fraction: float = 0.1
    preload: bool = False  # decode the cached training/validation samples into memory once (small caches)
    epochs: int = 300
    batch_size: int = 4  # global batch, divided among torchrun processes
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 2e-4
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | cosine (per-step, after linear warm-up)
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    hflip: float = 0.0  # flip probability; off by default: it swaps left/right, which changes lateralised classes
    joint_dropout: float = 0.0  # probability of hiding each joint (confidence 0, empty heatmap)
    # Skeleton caches (`star extract --modality pose`): sampling, features and augmentation at training time
    # (pipeline/training/skeletons.py). A feature cache fixes T at extraction and takes none of these but hflip and
    # joint_dropout.
    frames: int = 16  # T sampled from each full-rate skeleton (a random frame per segment when training)
    streams: tuple[str, ...] = ("joint",)  # pose features: joint, bone, joint_motion, bone_motion
    rotate: float = 0.0  # largest random rotation, degrees
    scale: float = 0.0  # random scale per axis in [1 - scale, 1 + scale]
    shift: float = 0.0  # largest random shift per axis, in half person extents
    test_clips: int = 1  # samplings averaged per clip by `star evaluate` (validation during training uses 1)
    seed: int = 0
    workers: int = 2  # DataLoader worker processes per training process
    amp: bool = True  # bf16 autocast, used on CUDA only
    device: str = "auto"  # auto | cpu | cuda
    # Overrides of `ModelConfig` defaults ([model] table of a config file); num_classes, persons and joints
    # come from the cache. The resolved config written to RUN_DIR holds the complete model config.
    model: dict[str, Any] = field(default_factory=dict)
    # End-to-end fine-tuning (backbone unfrozen, video decoded on the fly).
    end_to_end: bool = False
    index: str = ""  # HDF5 annotation index of the dataset (video paths, skeletons)
    init: str = ""  # cache-stage checkpoint to start from
    unfreeze_from: str = "stem"  # first trainable backbone stage: stem | layer1 | ... | layer4
    backbone_lr_scale: float = 0.1  # backbone lr = lr * this
    activation_checkpointing: bool = False  # recompute backbone stages in backward to save memory


CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the recipes shipped with STAR, one TOML file each


def recipe_names() -> list[str]:
    """The recipes of configs/, by name (`paper`, `small`, `literal`, ...)."""
    return sorted(path.stem for path in CONFIGS.glob("*.toml"))


def config_path(name: str | os.PathLike) -> Path:
    """A config file's path: `name` as given, or a recipe of `configs/` by its name (`penn-skeleton`)."""
    path = Path(name)
    if not path.exists() and not path.suffix and (CONFIGS / f"{path.name}.toml").is_file() and path.name == str(name):
        return CONFIGS / f"{path.name}.toml"
    return path


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (.toml) or JSON (.json) training config into a plain dict; a bare name is a recipe of configs/."""
    path = config_path(path)
    text = read_text_file(path, what="config file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise StarError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise StarError(f"config file {path} is not valid {path.suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise StarError(f"config file {path} must hold a table/object of options at the top level")
    return data


def resolve_config(
    *,
    overrides: dict[str, Any],
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Layer defaults (or `base`) < preset < config file < overrides (CLI options; None values are ignored).

    A preset is a recipe of configs/ by name; a config file may name its preset (`preset = "small"`), one level
    only: a recipe names none.
    """
    file_values = load_config_file(config_file) if config_file else {}
    preset = preset or file_values.pop("preset", None)
    preset_values = _preset_values(preset) if preset else {}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    merged: dict[str, Any] = {}
    for layer in (base or {}, preset_values, file_values, overrides):
        for key, value in layer.items():
            if key == "model" and isinstance(value, dict):
                merged["model"] = {**merged.get("model", {}), **value}
            else:
                merged[key] = value
    return config_from_dict(merged, source=str(config_file) if config_file else "options")


def _preset_values(name: str) -> dict[str, Any]:
    if name not in recipe_names():
        raise StarError(f"unknown preset {name!r}: choose one of {', '.join(recipe_names())} (the recipes of configs/)")
    values = load_config_file(CONFIGS / f"{name}.toml")
    if "preset" in values:
        raise StarError(f"the recipe {name} names a preset itself: recipes are one level, write its values out")
    return values


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs (`--set`) as overrides: VALUE is read as TOML (`0.5`, `true`, `["joint", "bone"]`) or
    else taken as a string. KEY is a TrainConfig field, else a ModelConfig one (`model.KEY` says so explicitly:
    `init` and `frames` are both)."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise StarError(f"--set {setting!r}: write KEY=VALUE, e.g. --set weight_decay=0.05 or --set model.dim=64")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if key.startswith("model.") or key not in train_fields:
            overrides.setdefault("model", {})[key.removeprefix("model.")] = value
        else:
            overrides[key] = value
    return overrides


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a validated `TrainConfig` from plain values (a config file, a checkpoint, CLI options)."""
    model_values = values.get("model") or {}
    if not isinstance(model_values, dict):
        raise StarError(f"{source}: model must be a table of ModelConfig options, got {model_values!r}")
    top = {key: value for key, value in values.items() if key != "model"}
    cfg = TrainConfig(
        **_typed_fields(TrainConfig, top, source=source),
        model=_typed_fields(ModelConfig, dict(model_values), source=f"{source} [model]"),
    )
    validate_config(cfg)
    return cfg


def model_config(
    cfg: TrainConfig, *, num_classes: int, persons: int, num_joints: int, frames: int, joint_channels: int | None = None
) -> ModelConfig:
    """The model of a run: `cfg.model` overrides, with the sizes the data imposes (a conflicting override is an error).

    `joint_channels` is given for a skeleton cache, which feeds the pose modality only.
    """
    imposed = {"num_classes": num_classes, "persons": persons, "num_joints": num_joints, "frames": frames}
    if joint_channels is not None:
        if cfg.model.get("modality", "pose") != "pose":
            raise StarError(
                f"the cache {cfg.cache} holds skeletons only (`star extract --modality pose`), so it cannot "
                f"train --modality {cfg.model['modality']}: train --modality pose, or extract a feature cache"
            )
        imposed |= {"modality": "pose", "joint_channels": joint_channels}
    conflicts = [
        f"{key}={cfg.model[key]} (the data has {value})"
        for key, value in imposed.items()
        if key in cfg.model and cfg.model[key] != value
    ]
    if conflicts:
        raise StarError(
            f"model options {', '.join(conflicts)} contradict the cache; remove them, they are read from the cache"
        )
    return checked_model_config({**cfg.model, **imposed})


def checked_model_config(values: dict[str, Any]) -> ModelConfig:
    """`ModelConfig(**values)`, with an option the model refuses turned into a one-line StarError."""
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as err:
        raise StarError(f"model options: {err}") from err


def describe_model(*, size: int, **values: Any) -> dict[str, Any]:
    """`star model-info`: parameter counts, token counts and attention FLOPs of the model `values` configure."""
    cfg = checked_model_config(values)
    try:
        return model_summary(cfg, size=size)
    except ValueError as err:  # an input size the backbone cannot take
        raise StarError(f"--size {size}: {err}") from err


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate_config(cfg: TrainConfig) -> None:
    """Option values a user can get wrong, each with a one-line fix."""
    if cfg.optimizer not in OPTIMIZERS:
        raise StarError(f"unknown optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if cfg.scheduler not in SCHEDULERS:
        raise StarError(f"unknown scheduler {cfg.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    if cfg.unfreeze_from not in BACKBONE_STAGES:
        raise StarError(
            f"unknown backbone stage {cfg.unfreeze_from!r} for unfreeze_from: "
            f"choose one of {', '.join(BACKBONE_STAGES)}"
        )
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise StarError(f"unknown device {cfg.device!r}: choose auto, cpu or cuda")
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr}
    for name, value in positive.items():
        if value <= 0:
            raise StarError(f"{name} must be positive, got {value}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise StarError(f"val_fraction must be between 0 and 1 (exclusive), got {cfg.val_fraction}")
    for name in ("hflip", "joint_dropout", "label_smoothing", "min_lr_ratio"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise StarError(f"{name} must be between 0 and 1, got {getattr(cfg, name)}")
    if cfg.test_clips < 1:
        raise StarError(f"test_clips must be >= 1, got {cfg.test_clips}")
    for name in (
        "weight_decay",
        "warmup_epochs",
        "grad_clip",
        "workers",
        "backbone_lr_scale",
        "rotate",
        "scale",
        "shift",
    ):
        if getattr(cfg, name) < 0:
            raise StarError(f"{name} must not be negative, got {getattr(cfg, name)}")


def _typed_fields(cls: type, values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Check names and types of dataclass fields, accepting ints for floats and lists for tuples (TOML/JSON)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise StarError(f"{source}: unknown option(s) {', '.join(unknown)}; valid ones are {', '.join(sorted(names))}")
    typed = {}
    for key, value in values.items():
        hint = hints[key]
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        expected = typing.get_origin(hint) or hint
        if (
            isinstance(expected, type)
            and not isinstance(value, expected)
            or (expected is int and isinstance(value, bool))
        ):
            raise StarError(f"{source}: option {key} must be {getattr(expected, '__name__', expected)}, got {value!r}")
        typed[key] = value
    return typed


def resume_config(
    *,
    out: str | os.PathLike,
    overrides: dict[str, Any],
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
) -> TrainConfig:
    """The config of the run in `out` (from its last checkpoint), with `overrides` applied on top."""
    checkpoint = last_checkpoint(Path(out))
    cfg = resolve_config(
        overrides={**overrides, "out": str(out)}, config_file=config_file, preset=preset, base=checkpoint["config"]
    )
    check_resumable(cfg=cfg, stored=checkpoint["config"])
    return cfg


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "last.pt"
    if not path.is_file():
        raise StarError(f"--resume: no checkpoint {path}; start without --resume or point --out at an existing run")
    return read_checkpoint(path)


def check_resumable(*, cfg: TrainConfig, stored: dict[str, Any]) -> None:
    """Only the epoch count, workers, device and paths may change on resume; anything else is another run."""
    changed = differing_keys(stored, config_to_dict(cfg), ignore=RESUMABLE_CHANGES)
    if changed:
        raise StarError(
            f"--resume with different settings ({', '.join(changed)}) would not continue the same run; "
            "drop those options or start a new run directory"
        )
