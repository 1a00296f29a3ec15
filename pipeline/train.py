"""Training of STAR (issue 5, stage 2): from the zarr feature cache, or end to end from video.

`train(cfg)` is the whole stage; `star train` only builds a `TrainConfig` and calls it.

- Paper defaults (§4.1): SGD, lr 2e-4, momentum 0.9, batch 4, 300 epochs, 16 frames (T comes from the
  cache). AdamW, a cosine schedule with linear warm-up, weight decay, label smoothing and gradient
  clipping are options; the `small` preset bundles the ones that make a few-hundred-clip CPU run learn.
- Configuration layers, lowest first: dataclass defaults < preset < config file (TOML or JSON) < CLI
  options. The resolved configuration is written to RUN_DIR/config.json and stored in every checkpoint.
- `batch_size` is the *global* batch: with `torchrun` each of the W processes loads batch_size / W
  samples, so a run means the same thing on any number of processes (and CI checks that 2 gloo processes
  reproduce single-process training).
- Every epoch: metrics appended to RUN_DIR/metrics.jsonl, TensorBoard scalars in RUN_DIR/tensorboard,
  then an atomic RUN_DIR/last.pt (model, optimizer, scheduler, per-rank RNG states, epoch, config, cache
  fingerprint), copied to best.pt when validation top-1 improves.
- Reproducibility: the shuffling order is a function of (seed, epoch) only (`DistributedSampler`, also
  with one process) and every augmentation draw is a function of (seed, epoch, sample); the DataLoader
  gets its own generator so that worker start-up never consumes the global RNG. Together with the saved
  RNG states this makes `--resume` continue bit for bit on CPU.
- End-to-end mode (`end_to_end=True`): decodes video with `VideoClips`, unfreezes MC3-18 from a chosen
  stage with a lower learning rate, starts from a cache-stage checkpoint, bf16 autocast on CUDA and
  optional activation checkpointing of the backbone stages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils.checkpoint
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.tensorboard import SummaryWriter

from model.backbone import MC18Backbone
from model.star import ModelConfig, build_model
from pipeline.cache import FeatureCache
from pipeline.data import (
    CachedClips,
    CacheMeta,
    ClipAugment,
    VideoClips,
    cache_split_name,
    carve_validation,
    default_index_path,
    done_rows,
    frozen_backbone_from_fingerprint,
    read_cache_meta,
)
from pipeline.errors import StarError
from pipeline.files import read_text_file
from pipeline.evaluate import (
    CHECKPOINT_FORMAT,
    ClipClassifier,
    autocast_context,
    batch_to_device,
    check_fingerprint,
    evaluate_model,
    read_checkpoint,
)

VAL_FROM_TRAIN = "auto"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("none", "cosine")
BACKBONE_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
RESUMABLE_CHANGES = {"epochs", "workers", "device", "cache", "out"}  # may differ on --resume

# Named override sets (rule 4: a small local dict, unknown names are an error).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's §4.1 recipe: the dataclass defaults themselves.
    "paper": {},
    # Tens to hundreds of clips from scratch on a CPU: AdamW with warm-up and cosine decay fits in tens of
    # epochs where SGD at 2e-4 needs hundreds; light regularisation against overfitting so few clips.
    # The model width is left to [model] / --dim: narrow models (dim 64-128) are what a CPU can train.
    "small": {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "scheduler": "cosine",
        "warmup_epochs": 2.0,
        "epochs": 60,
        "batch_size": 16,
        "label_smoothing": 0.1,
        "grad_clip": 1.0,
        "joint_dropout": 0.1,
        "preload": True,
    },
}


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


@dataclass(frozen=True)
class TrainResult:
    is_main: bool  # rank 0 (the process that logs, checkpoints and reports)
    run_dir: str
    epochs_completed: int
    best_top1: float | None
    best_epoch: int | None
    last_metrics: dict[str, Any]
    last_checkpoint: str
    best_checkpoint: str | None
    validation: str = "none"  # where val.* figures (and best.pt) come from


# -------------------------------------------------------------------------------------------- configuration


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (.toml) or JSON (.json) training config into a plain dict."""
    path = Path(path)
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
    """Layer defaults (or `base`) < preset < config file < overrides (CLI options; None values are ignored)."""
    file_values = load_config_file(config_file) if config_file else {}
    file_preset = file_values.pop("preset", None)  # a config file may name its preset
    preset = preset or file_preset or "paper"
    if preset not in PRESETS:
        raise StarError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    merged: dict[str, Any] = {}
    for layer in (base or {}, PRESETS[preset], file_values, overrides):
        for key, value in layer.items():
            if key == "model" and isinstance(value, dict):
                merged["model"] = {**merged.get("model", {}), **value}
            else:
                merged[key] = value
    return config_from_dict(merged, source=str(config_file) if config_file else "options")


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a validated `TrainConfig` from plain values (a config file, a checkpoint, CLI options)."""
    model_values = values.get("model") or {}
    if not isinstance(model_values, dict):
        raise StarError(f"{source}: model must be a table of ModelConfig options, got {model_values!r}")
    top = {key: value for key, value in values.items() if key != "model"}
    cfg = TrainConfig(**_typed_fields(TrainConfig, top, source=source), model=_typed_fields(ModelConfig, dict(model_values), source=f"{source} [model]"))
    validate_config(cfg)
    return cfg


def model_config(cfg: TrainConfig, *, num_classes: int, persons: int, joints: int, frames: int) -> ModelConfig:
    """The model of a run: `cfg.model` overrides, with the sizes the data imposes (a conflicting override is an error)."""
    imposed = {"num_classes": num_classes, "persons": persons, "joints": joints, "frames": frames}
    conflicts = [f"{key}={cfg.model[key]} (the data has {value})" for key, value in imposed.items() if key in cfg.model and cfg.model[key] != value]
    if conflicts:
        raise StarError(f"model options {', '.join(conflicts)} contradict the cache; remove them, they are read from the cache")
    return ModelConfig(**{**cfg.model, **imposed})


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate_config(cfg: TrainConfig) -> None:
    """Option values a user can get wrong, each with a one-line fix."""
    if cfg.optimizer not in OPTIMIZERS:
        raise StarError(f"unknown optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if cfg.scheduler not in SCHEDULERS:
        raise StarError(f"unknown scheduler {cfg.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    if cfg.unfreeze_from not in BACKBONE_STAGES:
        raise StarError(f"unknown backbone stage {cfg.unfreeze_from!r} for unfreeze_from: choose one of {', '.join(BACKBONE_STAGES)}")
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
    for name in ("weight_decay", "warmup_epochs", "grad_clip", "workers", "backbone_lr_scale"):
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
        if isinstance(expected, type) and not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise StarError(f"{source}: option {key} must be {getattr(expected, '__name__', expected)}, got {value!r}")
        typed[key] = value
    return typed


# -------------------------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_process_group: bool = False  # this process created it, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(*, device: str) -> DistContext:
    """Join the process group that `torchrun` describes in the environment (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise StarError("--device cuda was requested but no CUDA device is visible; use --device cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    owns = world_size > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device, owns_process_group=owns)


def _all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        values = values.to(ctx.device if ctx.device.type == "cuda" else "cpu")
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def _barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


# -------------------------------------------------------------------------------------------- optimisation


def build_optimizer(*, param_groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (paper) or AdamW; each group may carry its own "lr"."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise StarError(f"unknown optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step `step`: linear warm-up, then constant or cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(*, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; stepping per batch keeps warm-up smooth even for runs of a few epochs."""
    if cfg.scheduler not in SCHEDULERS:
        raise StarError(f"unknown scheduler {cfg.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps=total, warmup_steps=warmup, schedule=cfg.scheduler, min_ratio=cfg.min_lr_ratio),
    )


# -------------------------------------------------------------------------------------------- RNG and checkpoints


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as checkpoint-safe values (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def _copy_atomic(src: Path, dst: Path) -> Path:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


# -------------------------------------------------------------------------------------------- run log


class RunLog:
    """metrics.jsonl (one JSON object per epoch) and TensorBoard scalars; inert on ranks other than 0."""

    def __init__(self, *, run_dir: Path, enabled: bool, start_epoch: int, start_step: int) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            # A resumed run repeats the epochs after its checkpoint: drop their stale lines.
            kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] < start_epoch]
            self.path.write_text("".join(line + "\n" for line in kept))
        # purge_step discards events a crashed run wrote after the checkpoint we resume from.
        self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step if start_step else None)

    def step(self, *, global_step: int, loss: float, lr: float) -> None:
        if self.tb is not None:
            self.tb.add_scalar("train/loss_step", loss, global_step)
            self.tb.add_scalar("train/lr", lr, global_step)

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                self.tb.add_scalar(key.replace(".", "/", 1), value, record["epoch"] + 1)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """rich progress bar with loss, accuracy and samples/s on an interactive terminal; one line per epoch otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._progress = None

    def start(self, *, description: str, total: int) -> None:
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, stats="")

    def update(self, *, loss: float, acc: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, stats=f"loss {loss:.4f}  acc {acc:.1%}  {samples_per_s:.1f} samples/s")

    def stop(self, line: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)


# -------------------------------------------------------------------------------------------- data and model


def _checkpoint_stages(backbone: MC18Backbone) -> None:
    """Recompute each backbone stage's activations in backward instead of storing them (activation checkpointing)."""
    for name in BACKBONE_STAGES:
        stage = getattr(backbone, name)
        run = stage.forward  # the stage's own bound forward

        def checkpointed(x: torch.Tensor, run=run) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)

        stage.forward = checkpointed  # an instance attribute: state dict and parameters are unchanged


def _unfreeze_backbone(*, backbone: MC18Backbone, unfreeze_from: str) -> tuple[list[nn.Parameter], list[nn.Module]]:
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


def _datasets(*, cfg: TrainConfig, meta: CacheMeta) -> tuple[Dataset, Dataset | None, str, str]:
    """Train and validation datasets (cached maps, or video in end-to-end mode), the benchmark name and where the
    validation samples come from."""
    cache = FeatureCache.open(meta.path, mode="r")
    train_name = cache_split_name(cache, benchmark=cfg.benchmark, split=cfg.train_split)
    benchmark = train_name.removesuffix(f"-{cfg.train_split}") if train_name != cfg.train_split else ""
    names = {"train": train_name}
    if cfg.val_split and cfg.val_split != VAL_FROM_TRAIN:
        names["val"] = cache_split_name(cache, benchmark=benchmark, split=cfg.val_split)
    ids = {role: cache.sample_ids[done_rows(cache, split_name=name)] for role, name in names.items()}
    for role, name in names.items():
        if not ids[role].size:
            hint = "; or pass --val-split '' to train without validation" if role == "val" else ""
            raise StarError(f"the cache {meta.path} has no extracted (done) samples in split {name!r}: run `star extract` to fill it{hint}")
    validation = f"split {names['val']}" if "val" in names else "none"
    if cfg.val_split == VAL_FROM_TRAIN:
        ids["train"], ids["val"] = carve_validation(ids["train"], fraction=cfg.val_fraction)
        names["val"] = train_name
        validation = f"{len(ids['val'])} samples carved from split {train_name} ({cfg.val_fraction:g} of its performers)"
    augment = ClipAugment(hflip=cfg.hflip, joint_dropout=cfg.joint_dropout)
    built: dict[str, Dataset] = {}
    for role, name in names.items():
        train_role = role == "train"
        if cfg.end_to_end:
            index_path = Path(cfg.index) if cfg.index else default_index_path(cache_path=meta.path, dataset=str(meta.fingerprint.get("dataset", "")))
            if not index_path.is_file():
                raise StarError(f"end-to-end training decodes video through the annotation index, and {index_path} does not exist: pass --index")
            built[role] = VideoClips(
                index_path=index_path, sample_ids=ids[role], spec=meta.clip_spec, jitter=train_role,
                augment=augment if train_role else None, layout=meta.layout, seed=cfg.seed,
            )
        else:
            built[role] = CachedClips(path=meta.path, split_name=name, sample_ids=ids[role], preload=cfg.preload,
                                      augment=augment if train_role else None, layout=meta.layout, seed=cfg.seed)
    return built["train"], built.get("val"), benchmark, validation


def _make_loader(*, dataset: Dataset, cfg: TrainConfig, ctx: DistContext, shuffle: bool) -> DataLoader:
    per_rank = cfg.batch_size // ctx.world_size
    if shuffle:
        # One process is a world of one: the same sampler makes the order a function of (seed, epoch) only.
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=False)
    else:
        # Evaluation: every sample exactly once over all ranks (no padding duplicates that would skew metrics).
        sampler = list(range(ctx.rank, len(dataset), ctx.world_size))
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=ctx.device.type == "cuda",
        drop_last=False,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeding must not draw from the global RNG
        persistent_workers=False,  # workers are re-forked each epoch, so they see the dataset's new epoch
    )


# -------------------------------------------------------------------------------------------- the loop


def _train_epoch(
    *,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    cfg: TrainConfig,
    ctx: DistContext,
    log: RunLog,
    bar: ProgressBar,
    epoch: int,
    global_step: int,
    frozen_stages: list[nn.Module],
) -> tuple[dict[str, float], int]:
    model.train()
    for stage in frozen_stages:
        stage.eval()  # frozen backbone stages keep their BatchNorm running statistics
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, samples (this rank)
    start = time.perf_counter()
    bar.start(description=f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader))
    for batch in loader:
        batch = batch_to_device(batch, ctx.device)
        with autocast_context(device=ctx.device, enabled=cfg.amp):
            logits = model(batch)
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        global_step += 1
        n = labels.shape[0]
        sums += torch.stack([loss.detach().double() * n, (logits.argmax(dim=1) == labels).sum().double(), sums.new_tensor(n)])
        if ctx.is_main:
            loss_sum, correct, seen = sums.tolist()  # the one host sync per step, for the log and the bar
            log.step(global_step=global_step, loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
            bar.update(loss=loss_sum / seen, acc=correct / seen, samples_per_s=seen * ctx.world_size / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    total = _all_reduce_sum(sums, ctx)
    count = max(total[2].item(), 1.0)
    return {
        "train.loss": total[0].item() / count,
        "train.top1": total[1].item() / count,
        "train.samples_per_s": total[2].item() / seconds,
        "train.seconds": seconds,
        "lr": optimizer.param_groups[0]["lr"],
    }, global_step


def _validate(*, model: nn.Module, loader: DataLoader | None, num_classes: int, cfg: TrainConfig, ctx: DistContext) -> dict[str, float]:
    if loader is None:
        return {}
    counter = evaluate_model(model=model, batches=loader, num_classes=num_classes, device=ctx.device, amp=cfg.amp)
    if ctx.distributed:
        counter.load_tensor(_all_reduce_sum(counter.as_tensor(), ctx))
    return {f"val.{key}": value for key, value in counter.summary().items()}


def resume_config(*, out: str | os.PathLike, overrides: dict[str, Any], config_file: str | os.PathLike | None = None, preset: str | None = None) -> TrainConfig:
    """The config of the run in `out` (from its last checkpoint), with `overrides` applied on top."""
    checkpoint = _last_checkpoint(Path(out))
    cfg = resolve_config(overrides={**overrides, "out": str(out)}, config_file=config_file, preset=preset, base=checkpoint["config"])
    _check_resumable(cfg=cfg, stored=checkpoint["config"])
    return cfg


def _last_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "last.pt"
    if not path.is_file():
        raise StarError(f"--resume: no checkpoint {path}; start without --resume or point --out at an existing run")
    return read_checkpoint(path)


def _check_resumable(*, cfg: TrainConfig, stored: dict[str, Any]) -> None:
    """Only the epoch count, workers, device and paths may change on resume; anything else is another run."""
    mine = config_to_dict(cfg)
    changed = sorted(key for key in mine if key not in RESUMABLE_CHANGES and mine[key] != stored.get(key))
    if changed:
        raise StarError(
            f"--resume with different settings ({', '.join(changed)}) would not continue the same run; "
            "drop those options or start a new run directory"
        )


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train STAR as configured; with `resume`, continue RUN_DIR/last.pt exactly where it stopped."""
    if not cfg.out:
        raise StarError("no run directory: pass --out RUN_DIR")
    run_dir = Path(cfg.out)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    checkpoint = _last_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        _check_resumable(cfg=cfg, stored=checkpoint["config"])
    validate_config(cfg)
    ctx = init_distributed(device=cfg.device)
    if cfg.batch_size % ctx.world_size:
        raise StarError(f"batch size {cfg.batch_size} is the global batch and must be divisible by the {ctx.world_size} processes")
    seed_everything(cfg.seed + ctx.rank)

    meta = read_cache_meta(cfg.cache)
    if checkpoint is not None:
        check_fingerprint(expected=checkpoint["fingerprint"], actual=meta.fingerprint, what=f"--resume {last_path}")
    init = read_checkpoint(cfg.init) if cfg.init and checkpoint is None else None
    if init is not None:
        check_fingerprint(expected=init["fingerprint"], actual=meta.fingerprint, what=f"--init {cfg.init}")
    train_set, val_set, benchmark, validation = _datasets(cfg=cfg, meta=meta)
    model_cfg = model_config(cfg, num_classes=len(meta.class_names), persons=meta.persons, joints=meta.joints,
                             frames=meta.clip_spec.frames)
    if init is not None and init["model_config"] != dataclasses.asdict(model_cfg):
        raise StarError(f"--init {cfg.init} holds a model of another shape ({_config_diff(init['model_config'], dataclasses.asdict(model_cfg))}); pass the same [model] options it was trained with")
    cfg = dataclasses.replace(cfg, model=dataclasses.asdict(model_cfg), benchmark=benchmark)

    star = build_model(model_cfg)
    backbone = frozen_backbone_from_fingerprint(meta.fingerprint, trainable=True) if cfg.end_to_end else None
    if init is not None:
        star.load_state_dict(init["model"])
        if backbone is not None and "backbone" in init:
            backbone.load_state_dict(init["backbone"])
    frozen_stages: list[nn.Module] = []
    param_groups = [{"params": [p for p in star.parameters() if p.requires_grad]}]
    if backbone is not None:
        backbone_params, frozen_stages = _unfreeze_backbone(backbone=backbone, unfreeze_from=cfg.unfreeze_from)
        param_groups.append({"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_scale})
        if cfg.activation_checkpointing:
            _checkpoint_stages(backbone)
    classifier = ClipClassifier(star=star, backbone=backbone).to(ctx.device)
    optimizer = build_optimizer(param_groups=param_groups, cfg=cfg)
    model: nn.Module = classifier
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(classifier, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)

    train_loader = _make_loader(dataset=train_set, cfg=cfg, ctx=ctx, shuffle=True)
    val_loader = _make_loader(dataset=val_set, cfg=cfg, ctx=ctx, shuffle=False) if val_set is not None else None
    scheduler = build_scheduler(optimizer=optimizer, cfg=cfg, steps_per_epoch=len(train_loader))

    start_epoch, global_step, best_top1, best_epoch = 0, 0, None, None
    record: dict[str, Any] = {}
    if checkpoint is not None:
        star.load_state_dict(checkpoint["model"])
        if backbone is not None:
            backbone.load_state_dict(checkpoint["backbone"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, global_step, record = checkpoint["epoch"] + 1, checkpoint["global_step"], checkpoint["metrics"]
        best_top1, best_epoch = checkpoint["best_top1"], checkpoint["best_epoch"]
        if len(checkpoint["rng"]) == ctx.world_size:
            restore_rng_state(checkpoint["rng"][ctx.rank])
        else:
            seed_everything(cfg.seed * 1000 + start_epoch + ctx.rank)  # another world size cannot continue the same streams

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    log = RunLog(run_dir=run_dir, enabled=ctx.is_main, start_epoch=start_epoch, start_step=global_step)
    bar = ProgressBar(enabled=show_progress and ctx.is_main)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            train_loader.sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            train_metrics, global_step = _train_epoch(
                model=model, loader=train_loader, optimizer=optimizer, scheduler=scheduler, cfg=cfg, ctx=ctx,
                log=log, bar=bar, epoch=epoch, global_step=global_step, frozen_stages=frozen_stages,
            )
            val_metrics = _validate(model=model, loader=val_loader, num_classes=model_cfg.num_classes, cfg=cfg, ctx=ctx)
            improved = "val.top1" in val_metrics and (best_top1 is None or val_metrics["val.top1"] > best_top1)
            if improved:
                best_top1, best_epoch = val_metrics["val.top1"], epoch
            record = {"epoch": epoch, "global_step": global_step, **train_metrics, **val_metrics}
            rng_states = _gather_rng_states(ctx)
            if ctx.is_main:
                log.epoch(record)
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "stage": "end_to_end" if cfg.end_to_end else "cache",
                    "epoch": epoch,
                    "global_step": global_step,
                    "model": star.state_dict(),
                    "model_config": dataclasses.asdict(model_cfg),
                    "config": config_to_dict(cfg),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_states,
                    "best_top1": best_top1,
                    "best_epoch": best_epoch,
                    "metrics": record,
                    "fingerprint": meta.fingerprint,
                    "class_names": meta.class_names,
                    "benchmark": benchmark,
                    "validation": validation,
                    "world_size": ctx.world_size,
                }
                if backbone is not None:
                    state["backbone"] = backbone.state_dict()
                save_checkpoint(state, last_path)
                if improved:
                    _copy_atomic(last_path, best_path)
                bar.stop(_epoch_line(record, cfg))
            _barrier(ctx)
    finally:
        log.close()
        if ctx.owns_process_group:
            dist.destroy_process_group()
    return TrainResult(
        is_main=ctx.is_main,
        run_dir=str(run_dir),
        epochs_completed=cfg.epochs,
        best_top1=best_top1,
        best_epoch=best_epoch,
        last_metrics=record,
        last_checkpoint=str(last_path),
        best_checkpoint=str(best_path) if best_top1 is not None else None,
        validation=validation,
    )


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key))


def _gather_rng_states(ctx: DistContext) -> list[dict[str, Any]]:
    state = capture_rng_state()
    if not ctx.distributed:
        return [state]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _epoch_line(record: dict[str, Any], cfg: TrainConfig) -> str:
    line = (
        f"epoch {record['epoch'] + 1}/{cfg.epochs}  loss {record['train.loss']:.4f}  train top-1 {record['train.top1']:.1%}  "
        f"{record['train.samples_per_s']:.1f} samples/s"
    )
    if "val.top1" in record:
        line += f"  val top-1 {record['val.top1']:.1%}  top-5 {record['val.top5']:.1%}"
    return line


def run_training(
    *,
    overrides: dict[str, Any],
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """`star train`: resolve the configuration (from the run's last checkpoint with `resume`) and train."""
    if resume:
        if not overrides.get("out"):
            raise StarError("--resume needs --out RUN_DIR, the run to continue")
        cfg = resume_config(out=overrides["out"], overrides=overrides, config_file=config_file, preset=preset)
    else:
        cfg = resolve_config(overrides=overrides, config_file=config_file, preset=preset)
    return train(cfg, resume=resume, show_progress=show_progress)


def format_result(result: TrainResult) -> str:
    """What `star train` prints when it is done."""
    metrics = result.last_metrics
    lines = [f"trained {result.epochs_completed} epochs into {result.run_dir}", f"  validation (val.*, best.pt): {result.validation}"]
    if "train.loss" in metrics:
        lines.append(f"  last epoch: loss {metrics['train.loss']:.4f}, train top-1 {metrics['train.top1']:.1%}" + (f", val top-1 {metrics['val.top1']:.1%}" if "val.top1" in metrics else ""))
    if result.best_top1 is not None:
        lines.append(f"  best val top-1 {result.best_top1:.1%} at epoch {result.best_epoch + 1}: {result.best_checkpoint}")
    lines.append(f"  last checkpoint: {result.last_checkpoint}")
    return "\n".join(lines)
