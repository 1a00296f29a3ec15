"""Training of STAR: from the zarr feature cache, or end to end from decoded video. `train(cfg)` is the loop.

- `batch_size` is the *global* batch: with `torchrun` each of the W processes loads batch_size / W samples,
  so a run means the same thing on any number of processes (and CI checks that 2 gloo processes reproduce
  single-process training).
- Every epoch: metrics appended to RUN_DIR/metrics.jsonl, TensorBoard scalars in RUN_DIR/tensorboard, then an
  atomic RUN_DIR/last.pt (model, optimizer, scheduler, per-rank RNG states, epoch, config, cache fingerprint),
  copied to best.pt when validation top-1 improves.
- Reproducibility: the batch order is a function of (seed, epoch, workers) (`WindowSampler`: each
  DataLoader worker reads its own stream of cache units) and every augmentation draw is a function of (seed,
  epoch, sample); the DataLoader gets its own generator so that worker start-up never consumes the global RNG.
  Together with the saved RNG states this makes `--resume` with the same `--workers` continue bit for bit on
  CPU (another worker count resumes correctly, in another batch order).
- End-to-end mode (`end_to_end=True`): decodes video with `VideoClips`, unfreezes MC3-18 from a chosen stage
  with a lower learning rate, starts from a cache-stage checkpoint, bf16 autocast on CUDA and optional
  activation checkpointing of the backbone stages.

The configuration (dataclass, presets, files, layering) is `pipeline.training.config`; checkpoints are
`pipeline.training.checkpoints`; processes `pipeline.training.distributed`; optimiser and schedule `pipeline.training.optimization`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
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
    CHECKPOINT_FORMAT,
    check_fingerprint,
    copy_atomic,
    read_checkpoint,
    save_checkpoint,
)
from pipeline.training.classifier import ClipClassifier, autocast_context, batch_to_device
from pipeline.training.config import (
    VAL_FROM_TRAIN,
    TrainConfig,
    check_resumable,
    config_to_dict,
    last_checkpoint,
    model_config,
    resolve_config,
    resume_config,
    validate_config,
)
from pipeline.training.data import CachedClips, VideoClips
from pipeline.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    gather_rng_states,
    init_distributed,
)
from pipeline.training.log import ProgressBar, RunLog, epoch_line
from pipeline.training.metrics import evaluate_model
from pipeline.training.optimization import (
    build_optimizer,
    build_scheduler,
    checkpoint_stages,
    unfreeze_backbone,
)
from pipeline.training.sampling import WindowSampler
from pipeline.training.skeletons import skeleton_dataset, skeleton_spec
from pipeline.training.splits import CacheMeta, cache_split_name, carve_validation, done_rows, read_cache_meta


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


# -------------------------------------------------------------------------------------------- data and model


def _datasets(*, cfg: TrainConfig, meta: CacheMeta) -> tuple[Dataset, Dataset | None, str, str]:
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
                f"the cache {meta.path} has no extracted (done) samples in split {name!r}: run `star extract` to fill it{hint}"
            )
    validation = f"split {names['val']}" if "val" in names else "none"
    if cfg.val_split == VAL_FROM_TRAIN:
        row_of = {sample_id: row for row, sample_id in enumerate(cache.sample_ids.tolist())}
        labels = cache.labels[[row_of[sample_id] for sample_id in ids["train"].tolist()]]
        ids["train"], ids["val"] = carve_validation(ids["train"], fraction=cfg.val_fraction, labels=labels)
        names["val"] = train_name
        validation = f"{len(ids['val'])} samples carved from split {train_name} ({cfg.val_fraction:g} of its performers, or of each class's samples)"
    augment = ClipAugment(hflip=cfg.hflip, joint_dropout=cfg.joint_dropout)
    built: dict[str, Dataset] = {}
    for role, name in names.items():
        train_role = role == "train"
        if meta.skeletons:
            if cfg.end_to_end:
                raise StarError(
                    f"the cache {meta.path} holds skeletons only: end-to-end training decodes video, so it needs a feature cache"
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
                    f"end-to-end training decodes video through the annotation index, and {index_path} does not exist: pass --index"
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
            torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], cfg.grad_clip
            )
        optimizer.step()
        scheduler.step()
        global_step += 1
        n = labels.shape[0]
        sums += torch.stack(
            [loss.detach().double() * n, (logits.argmax(dim=1) == labels).sum().double(), sums.new_tensor(n)]
        )
        if ctx.is_main:
            loss_sum, correct, seen = sums.tolist()  # the one host sync per step, for the log and the bar
            log.step(global_step=global_step, loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
            bar.update(
                loss=loss_sum / seen,
                acc=correct / seen,
                samples_per_s=seen * ctx.world_size / (time.perf_counter() - start),
            )
    seconds = time.perf_counter() - start
    total = all_reduce_sum(sums, ctx)
    count = max(total[2].item(), 1.0)
    return {
        "train.loss": total[0].item() / count,
        "train.top1": total[1].item() / count,
        "train.samples_per_s": total[2].item() / seconds,
        "train.seconds": seconds,
        "lr": optimizer.param_groups[0]["lr"],
    }, global_step


def _validate(
    *, model: nn.Module, loader: DataLoader | None, num_classes: int, cfg: TrainConfig, ctx: DistContext
) -> dict[str, float]:
    if loader is None:
        return {}
    counter = evaluate_model(model=model, batches=loader, num_classes=num_classes, device=ctx.device, amp=cfg.amp)
    if ctx.distributed:
        counter.load_tensor(all_reduce_sum(counter.as_tensor(), ctx))
    return {f"val.{key}": value for key, value in counter.summary().items()}


@dataclass
class _Run:
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


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train STAR as configured; with `resume`, continue RUN_DIR/last.pt exactly where it stopped."""
    run = _set_up(cfg, resume=resume)
    last_path, best_path = run.run_dir / "last.pt", run.run_dir / "best.pt"
    if run.ctx.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.json").write_text(json.dumps(config_to_dict(run.cfg), indent=2) + "\n")
    log = RunLog(run_dir=run.run_dir, enabled=run.ctx.is_main, start_epoch=run.start_epoch, start_step=run.global_step)
    bar = ProgressBar(enabled=show_progress and run.ctx.is_main)
    try:
        for epoch in range(run.start_epoch, run.cfg.epochs):
            improved = _run_epoch(run, epoch=epoch, log=log, bar=bar)
            rng_states = gather_rng_states(run.ctx)  # a collective: every rank takes part
            if run.ctx.is_main:
                log.epoch(run.record)
                save_checkpoint(_checkpoint_state(run, epoch=epoch, rng_states=rng_states), last_path)
                if improved:
                    copy_atomic(last_path, best_path)
                bar.stop(epoch_line(run.record, run.cfg))
            barrier(run.ctx)
    finally:
        log.close()
        if run.ctx.owns_process_group:
            dist.destroy_process_group()
    return TrainResult(
        is_main=run.ctx.is_main,
        run_dir=str(run.run_dir),
        epochs_completed=run.cfg.epochs,
        best_top1=run.best_top1,
        best_epoch=run.best_epoch,
        last_metrics=run.record,
        last_checkpoint=str(last_path),
        best_checkpoint=str(best_path) if run.best_top1 is not None else None,
        validation=run.validation,
    )


def _run_epoch(run: _Run, *, epoch: int, log: RunLog, bar: ProgressBar) -> bool:
    """Train one epoch and validate; update the run's record and best score; True when validation improved."""
    run.train_loader.batch_sampler.set_epoch(epoch)
    run.train_set.set_epoch(epoch)
    train_metrics, run.global_step = _train_epoch(
        model=run.model,
        loader=run.train_loader,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        cfg=run.cfg,
        ctx=run.ctx,
        log=log,
        bar=bar,
        epoch=epoch,
        global_step=run.global_step,
        frozen_stages=run.frozen_stages,
    )
    val_metrics = _validate(
        model=run.model, loader=run.val_loader, num_classes=run.model_cfg.num_classes, cfg=run.cfg, ctx=run.ctx
    )
    improved = "val.top1" in val_metrics and (run.best_top1 is None or val_metrics["val.top1"] > run.best_top1)
    if improved:
        run.best_top1, run.best_epoch = val_metrics["val.top1"], epoch
    run.record = {"epoch": epoch, "global_step": run.global_step, **train_metrics, **val_metrics}
    return improved


def _checkpoint_state(run: _Run, *, epoch: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything `--resume`, `star evaluate`, `star predict` and `star explain` read back (pipeline.training.checkpoints)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "stage": "end_to_end" if run.cfg.end_to_end else "cache",
        "epoch": epoch,
        "global_step": run.global_step,
        "model": run.star.state_dict(),
        "model_config": dataclasses.asdict(run.model_cfg),
        "config": config_to_dict(run.cfg),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_states,
        "best_top1": run.best_top1,
        "best_epoch": run.best_epoch,
        "metrics": run.record,
        "fingerprint": run.meta.fingerprint,
        "class_names": run.meta.class_names,
        "benchmark": run.benchmark,
        "validation": run.validation,
        "world_size": run.ctx.world_size,
    }
    if run.backbone is not None:
        state["backbone"] = run.backbone.state_dict()
    return state


def _set_up(cfg: TrainConfig, *, resume: bool) -> _Run:
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
    train_set, val_set, benchmark, validation = _datasets(cfg=cfg, meta=meta)
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
            f"--init {cfg.init} holds a model of another shape ({shapes}); pass the same [model] options it was trained with"
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
    run = _Run(
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
        _restore(run, checkpoint)
    return run


def _restore(run: _Run, checkpoint: dict[str, Any]) -> None:
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
    lines = [
        f"trained {result.epochs_completed} epochs into {result.run_dir}",
        f"  validation (val.*, best.pt): {result.validation}",
    ]
    if "train.loss" in metrics:
        lines.append(
            f"  last epoch: loss {metrics['train.loss']:.4f}, train top-1 {metrics['train.top1']:.1%}"
            + (f", val top-1 {metrics['val.top1']:.1%}" if "val.top1" in metrics else "")
        )
    if result.best_top1 is not None:
        lines.append(
            f"  best val top-1 {result.best_top1:.1%} at epoch {result.best_epoch + 1}: {result.best_checkpoint}"
        )
    lines.append(f"  last checkpoint: {result.last_checkpoint}")
    return "\n".join(lines)
