"""A training run set up from its config: datasets, loaders, model, optimiser and, with `--resume`, the state of
the run's last checkpoint. `pipeline.training.loop` runs the epochs over it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from model.star import ModelConfig, build_model
from pipeline.core.differences import describe_differences, differing_keys
from pipeline.core.errors import StarError
from pipeline.core.rng import restore_rng_state, seed_everything
from pipeline.extraction.weights import backbone_from_fingerprint
from pipeline.sources.index import default_index_path
from pipeline.training.augment import ClipAugment
from pipeline.training.checkpoints import (
    check_fingerprint,
    read_checkpoint,
)
from pipeline.training.classifier import ClipClassifier
from pipeline.training.config import (
    VAL_FROM_TRAIN,
    TrainConfig,
    check_resumable,
    last_checkpoint,
    model_config,
    validate_config,
)
from pipeline.training.data import CachedClips, VideoClips
from pipeline.training.distributed import (
    DistContext,
    init_distributed,
)
from pipeline.training.optimization import (
    build_optimizer,
    build_scheduler,
    checkpoint_stages,
    unfreeze_backbone,
)
from pipeline.training.sampling import WindowSampler
from pipeline.training.skeletons import skeleton_dataset, skeleton_spec
from pipeline.training.splits import CacheMeta, cache_split_name, carve_validation, done_rows, read_cache_meta

# -------------------------------------------------------------------------------------------- data and model


def training_datasets(*, cfg: TrainConfig, meta: CacheMeta) -> tuple[Dataset, Dataset | None, str, str]:
    """Train and validation datasets (cached maps, skeletons, or video in end-to-end mode), the benchmark name and
    where the validation samples come from."""
    cache = meta.open()
    train_name = cache_split_name(cache, benchmark=cfg.benchmark, split=cfg.train_split)
    benchmark = train_name.removesuffix(f"-{cfg.train_split}") if train_name != cfg.train_split else ""
    names = {"train": train_name}
    if cfg.val_split and cfg.val_split != VAL_FROM_TRAIN:
        names["val"] = cache_split_name(cache, benchmark=benchmark, split=cfg.val_split)
    ids = {role: cache.sample_ids[done_rows(cache, split_name=name)] for role, name in names.items()}
    for role, name in names.items():
        if not ids[role].size:
            hint = "; or pass --val-split '' to train without validation" if role == "val" else ""
            raise StarError(
                f"the cache {meta.path} has no extracted (done) samples in split {name!r}: "
                f"run `star extract` to fill it{hint}"
            )
    validation = f"split {names['val']}" if "val" in names else "none"
    if cfg.val_split == VAL_FROM_TRAIN:
        row_of = {sample_id: row for row, sample_id in enumerate(cache.sample_ids.tolist())}
        labels = cache.labels[[row_of[sample_id] for sample_id in ids["train"].tolist()]]
        ids["train"], ids["val"] = carve_validation(ids["train"], fraction=cfg.val_fraction, labels=labels)
        names["val"] = train_name
        validation = (
            f"{len(ids['val'])} samples carved from split {train_name} "
            f"({cfg.val_fraction:g} of its performers, or of each class's samples)"
        )
    augment = ClipAugment(hflip=cfg.hflip, joint_dropout=cfg.joint_dropout)
    built: dict[str, Dataset] = {}
    for role, name in names.items():
        train_role = role == "train"
        if meta.skeletons:
            if cfg.end_to_end:
                raise StarError(
                    f"the cache {meta.path} holds skeletons only: end-to-end training decodes video, "
                    "so it needs a feature cache"
                )
            rows = np.flatnonzero(np.isin(cache.sample_ids, np.asarray(ids[role])))
            built[role] = skeleton_dataset(cache=cache, rows=rows, cfg=cfg, layout=meta.layout, train=train_role)
        elif cfg.end_to_end:
            index_path = (
                Path(cfg.index)
                if cfg.index
                else default_index_path(cache_path=meta.path, dataset=str(meta.fingerprint.get("dataset", "")))
            )
            if not index_path.is_file():
                raise StarError(
                    f"end-to-end training decodes video through the annotation index, and {index_path} "
                    "does not exist: pass --index"
                )
            built[role] = VideoClips(
                index_path=index_path,
                sample_ids=ids[role],
                spec=meta.clip_spec,
                jitter=train_role,
                augment=augment if train_role else None,
                layout=meta.layout,
                seed=cfg.seed,
            )
        else:
            built[role] = CachedClips(
                path=meta.path,
                split_name=name,
                sample_ids=ids[role],
                preload=cfg.preload,
                augment=augment if train_role else None,
                layout=meta.layout,
                seed=cfg.seed,
            )
    return built["train"], built.get("val"), benchmark, validation


def make_loader(
    dataset: Dataset, *, batch_size: int, seed: int, workers: int, ctx: DistContext, shuffle: bool
) -> DataLoader:
    """The DataLoader of one rank: `batch_size` is the global batch; `shuffle` for training, in order otherwise."""
    per_rank = batch_size // ctx.world_size
    if shuffle:
        # Random work units, random rows inside windows of units, one stream of windows per worker: each unit of
        # the cache is read once per epoch (pipeline.training.sampling). Decoded video has no units: every clip is its
        # own group and the order is a plain permutation.
        window = 2 * batch_size
        if isinstance(dataset, CachedClips):
            groups = dataset.units
            dataset.cached_rows = 2 * window  # the window being read and the next one
        else:
            groups = np.arange(len(dataset))
        batches = WindowSampler(
            groups,
            batch_size=batch_size,
            seed=seed,
            window_rows=window,
            streams=workers,
            world_size=ctx.world_size,
            rank=ctx.rank,
        )
        options: dict[str, Any] = {"batch_sampler": batches}
    else:
        # Evaluation: every sample exactly once over all ranks (no padding duplicates that would skew metrics).
        options = {"sampler": list(range(ctx.rank, len(dataset), ctx.world_size)), "batch_size": per_rank}
    return DataLoader(
        dataset,
        **options,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # worker seeding must not draw from the global RNG
        persistent_workers=False,  # workers are re-forked each epoch, so they see the dataset's new epoch
    )


# -------------------------------------------------------------------------------------------- the loop


@dataclass
class TrainingRun:
    """One training run, set up: what the loop reads and updates (epoch counters and the best validation score)."""

    cfg: TrainConfig
    ctx: DistContext
    meta: CacheMeta
    model_cfg: ModelConfig
    star: nn.Module
    backbone: nn.Module | None
    model: nn.Module  # the classifier, wrapped in DistributedDataParallel when there are several processes
    frozen_stages: list[nn.Module]  # backbone stages left frozen in end-to-end mode (kept in eval mode)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_set: Dataset
    train_loader: DataLoader
    val_loader: DataLoader | None
    benchmark: str
    validation: str  # where val.* figures (and best.pt) come from
    start_epoch: int = 0
    global_step: int = 0
    best_top1: float | None = None
    best_epoch: int | None = None
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)


def set_up_run(cfg: TrainConfig, *, resume: bool) -> TrainingRun:
    """Check the configuration and the checkpoints it names, then build data, model, optimiser and schedule,
    restored from RUN_DIR/last.pt with `resume`. Writes nothing."""
    if not cfg.out:
        raise StarError("no run directory: pass --out RUN_DIR")
    checkpoint = last_checkpoint(Path(cfg.out)) if resume else None
    if checkpoint is not None:
        check_resumable(cfg=cfg, stored=checkpoint["config"])
    validate_config(cfg)
    ctx = init_distributed(device=cfg.device)
    if cfg.batch_size % ctx.world_size:
        raise StarError(
            f"batch size {cfg.batch_size} is the global batch and must be divisible by the {ctx.world_size} processes"
        )
    seed_everything(cfg.seed + ctx.rank)

    meta = read_cache_meta(cfg.cache)
    if checkpoint is not None:
        check_fingerprint(
            expected=checkpoint["fingerprint"], actual=meta.fingerprint, what=f"--resume {cfg.out}/last.pt"
        )
    init = read_checkpoint(cfg.init) if cfg.init and checkpoint is None else None
    if init is not None:
        check_fingerprint(expected=init["fingerprint"], actual=meta.fingerprint, what=f"--init {cfg.init}")
    train_set, val_set, benchmark, validation = training_datasets(cfg=cfg, meta=meta)
    if meta.skeletons:
        spec = skeleton_spec(cfg)
        model_cfg = model_config(
            cfg,
            num_classes=len(meta.class_names),
            persons=meta.persons,
            num_joints=meta.num_joints,
            frames=spec.frames,
            joint_channels=spec.channels,
        )
    else:
        model_cfg = model_config(
            cfg,
            num_classes=len(meta.class_names),
            persons=meta.persons,
            num_joints=meta.num_joints,
            frames=meta.clip_spec.frames,
        )
    differing = differing_keys(init["model_config"], dataclasses.asdict(model_cfg)) if init is not None else []
    if differing:
        shapes = describe_differences(
            init["model_config"], dataclasses.asdict(model_cfg), differing, names=("--init", "this run")
        )
        raise StarError(
            f"--init {cfg.init} holds a model of another shape ({shapes}); "
            "pass the same [model] options it was trained with"
        )
    cfg = dataclasses.replace(cfg, model=dataclasses.asdict(model_cfg), benchmark=benchmark)

    star = build_model(model_cfg)
    backbone = backbone_from_fingerprint(meta.fingerprint, trainable=True) if cfg.end_to_end else None
    start = checkpoint or init  # weights to start from: the run's own (resume) or a cache-stage model (init)
    if start is not None:
        star.load_state_dict(start["model"])
        if backbone is not None and "backbone" in start:
            backbone.load_state_dict(start["backbone"])
    frozen_stages: list[nn.Module] = []
    param_groups = [{"params": [p for p in star.parameters() if p.requires_grad]}]
    if backbone is not None:
        backbone_params, frozen_stages = unfreeze_backbone(backbone=backbone, unfreeze_from=cfg.unfreeze_from)
        param_groups.append({"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_scale})
        if cfg.activation_checkpointing:
            checkpoint_stages(backbone)
    classifier = ClipClassifier(star=star, backbone=backbone).to(ctx.device)
    model: nn.Module = classifier
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            classifier, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
        )
    optimizer = build_optimizer(param_groups=param_groups, cfg=cfg)
    loader_options = {"batch_size": cfg.batch_size, "seed": cfg.seed, "workers": cfg.workers, "ctx": ctx}
    train_loader = make_loader(train_set, **loader_options, shuffle=True)
    val_loader = make_loader(val_set, **loader_options, shuffle=False) if val_set is not None else None
    scheduler = build_scheduler(optimizer=optimizer, cfg=cfg, steps_per_epoch=len(train_loader))
    run = TrainingRun(
        cfg=cfg,
        ctx=ctx,
        meta=meta,
        model_cfg=model_cfg,
        star=star,
        backbone=backbone,
        model=model,
        frozen_stages=frozen_stages,
        optimizer=optimizer,
        scheduler=scheduler,
        train_set=train_set,
        train_loader=train_loader,
        val_loader=val_loader,
        benchmark=benchmark,
        validation=validation,
    )
    if checkpoint is not None:
        restore_run(run, checkpoint)
    return run


def restore_run(run: TrainingRun, checkpoint: dict[str, Any]) -> None:
    """Continue where `checkpoint` stopped: optimiser, schedule, counters, best score and each rank's RNG."""
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.start_epoch, run.global_step, run.record = (
        checkpoint["epoch"] + 1,
        checkpoint["global_step"],
        checkpoint["metrics"],
    )
    run.best_top1, run.best_epoch = checkpoint["best_top1"], checkpoint["best_epoch"]
    if len(checkpoint["rng"]) == run.ctx.world_size:
        restore_rng_state(checkpoint["rng"][run.ctx.rank])
    else:
        seed_everything(
            run.cfg.seed * 1000 + run.start_epoch + run.ctx.rank
        )  # another world size cannot continue the same streams
