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
`pipeline.training.checkpoints`; processes `pipeline.training.distributed`; optimiser and schedule
`pipeline.training.optimization`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.core.errors import StarError
from pipeline.training.checkpoints import (
    CHECKPOINT_FORMAT,
    copy_atomic,
    save_checkpoint,
)
from pipeline.training.classifier import autocast_context, batch_to_device
from pipeline.training.config import (
    TrainConfig,
    config_to_dict,
    resolve_config,
    resume_config,
)
from pipeline.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    gather_rng_states,
)
from pipeline.training.log import ProgressBar, RunLog, epoch_line
from pipeline.training.metrics import evaluate_model
from pipeline.training.setup import TrainingRun, set_up_run


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


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train STAR as configured; with `resume`, continue RUN_DIR/last.pt exactly where it stopped."""
    run = set_up_run(cfg, resume=resume)
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


def _run_epoch(run: TrainingRun, *, epoch: int, log: RunLog, bar: ProgressBar) -> bool:
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


def _checkpoint_state(run: TrainingRun, *, epoch: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
    """What `--resume`, `star evaluate`, `star predict` and `star explain` read back (pipeline.training.checkpoints)."""
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
