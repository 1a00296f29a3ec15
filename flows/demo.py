"""`star demo`: the whole system on a generated dataset in one Prefect flow run, stage by stage with progress bars.

Stages, each a task of the flow with a progress bar, all in `DemoConfig.workdir` (default ./star-demo):

    dataset   `pipeline.sources.synthetic.generate_ntu_dataset`: NTU RGB+D-format videos and .skeleton files
    extract   the real Prefect flow `flows.extract.run_extract` on Prefect's embedded temporary server: index,
              MC3-18 features (RANDOM weights: nothing can be downloaded here), zarr cache
    train     the real training loop `pipeline.training.loop.train` from the cache (`small` preset + the demo's
              model size)
    evaluate  `pipeline.inference.evaluate.evaluate_checkpoint` on the held-out subjects (ntu120-xsub test split)
    explain   `pipeline.inference.explain.explain`: attention rollout for one held-out clip (paper Fig. 6)
    report    metrics.json, confusion matrix, training curves, per-class accuracy, frame importance, report.md

Re-running is cheap because every stage keeps what is still valid:
- the dataset folder is named after its generation settings and reused when its marker file matches;
- the index and the cache are the extract flow's own incremental state (the flow runs again and finds nothing to do);
- a training run directory is named after a hash of its complete configuration and of the cache fingerprint;
  it is reused when its last.pt holds the final epoch, resumed (`--resume`, bit for bit) when it stopped early, and
  trained from scratch otherwise. Evaluation, explanation and the report are always redone (seconds).

The configuration, the splits and the report's contents are `pipeline.demo`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.core.errors import StarError
from pipeline.core.progress import progress_bar
from pipeline.demo import (
    BENCHMARK,
    DATASET,
    FATTN_ATTENTION,
    RANDOM_WEIGHTS_WARNING,
    STAR_ATTENTION,
    DemoConfig,
    DemoResult,
    StageResult,
    held_out_clip,
    listed,
    metrics_payload,
    split_subjects,
    write_report,
)


class _Stages:
    """One rich progress bar per stage, on one console, and the timings of the stages for the summary."""

    def __init__(self, console) -> None:
        self.console = console
        self.results: list[StageResult] = []

    @contextmanager
    def bar(self, name: str, *, total: float | None, unit: str) -> Iterator[Any]:
        with progress_bar(f"{name:<9}", total=total, unit=unit, console=self.console, elapsed=True) as update:
            yield update

    def done(self, name: str, summary: str, started: float, *, reused: bool = False) -> None:
        self.results.append(
            StageResult(name=name, summary=summary, seconds=time.perf_counter() - started, reused=reused)
        )


def _generate_class(action: int, *, cfg: DemoConfig) -> list[str]:
    from pipeline.sources.synthetic import generate_ntu_dataset

    return generate_ntu_dataset(
        cfg.dataset_dir,
        samples_per_class=cfg.samples_per_class,
        actions=(action,),
        subjects=cfg.subjects,
        frame_size=cfg.frame_size,
        seed=cfg.seed,
    )


@task(name="dataset", cache_policy=NO_CACHE)
def _dataset_stage(cfg: DemoConfig, stages: _Stages) -> list[str]:
    """Generate the NTU-format dataset once per generation settings; a marker file says it is complete."""
    started = time.perf_counter()
    marker = cfg.dataset_dir / "demo-dataset.json"
    settings = {
        "actions": list(cfg.actions),
        "samples_per_class": cfg.samples_per_class,
        "subjects": list(cfg.subjects),
        "frame_size": list(cfg.frame_size),
        "seed": cfg.seed,
    }
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored.get("settings") == settings:
            with stages.bar("dataset", total=len(stored["sample_ids"]), unit="clips") as update:
                update(completed=len(stored["sample_ids"]), note="reused")
            stages.done(
                "dataset",
                f"{len(stored['sample_ids'])} clips, {len(cfg.actions)} classes in {cfg.dataset_dir.name}",
                started,
                reused=True,
            )
            return stored["sample_ids"]
    ids: list[str] = []
    total = len(cfg.actions) * cfg.samples_per_class
    with stages.bar("dataset", total=total, unit="clips") as update:
        # One call per class, one process per core: every sample has its own seeded generator, so the files equal
        # those of one call in one process. Rendering is Python and numpy, which threads would serialise.
        context = multiprocessing.get_context("spawn")  # no fork of a process that runs Prefect's threads
        with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, len(cfg.actions)), mp_context=context) as pool:
            for class_ids in pool.map(functools.partial(_generate_class, cfg=cfg), cfg.actions):
                ids += class_ids
                update(completed=len(ids))
    marker.write_text(json.dumps({"settings": settings, "sample_ids": ids}, indent=1) + "\n")
    train, held_out = split_subjects(ids)
    stages.done(
        "dataset",
        f"{len(ids)} clips, {len(cfg.actions)} classes; subjects {listed(train)} train, {listed(held_out)} held out",
        started,
    )
    return ids


def _extract_stage(cfg: DemoConfig, stages: _Stages):
    """The real `star extract` flow (Prefect, embedded temporary server) into the demo's cache."""
    from flows.extract import run_extract
    from pipeline.extraction.cache_progress import CacheProgress
    from pipeline.extraction.extract import ExtractConfig

    started = time.perf_counter()
    config = ExtractConfig(
        dataset=DATASET,
        root=cfg.dataset_dir,
        out=str(cfg.cache_path),
        benchmark=BENCHMARK,
        frames=cfg.frames,
        size=cfg.size,
        crop=cfg.crop,
        weights="random",
        batch_size=4,
        workers=2,
        device=cfg.device,
    )
    config.check()
    cfg.features_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_WEIGHTS_WARNING)  # the report says so, once
        with CacheProgress(config.out, console=stages.console):
            summary = run_extract(config)
    if summary.exit_code != 0:
        raise StarError(
            f"extraction left {summary.failed} failed and {summary.pending} pending samples in "
            f"{config.out} ({summary.failures[:3]}); see `star cache info {config.out}`"
        )
    reused = summary.clips_done_now == 0
    rate = f", {summary.clips_done_now / summary.seconds:.2f} clips/s" if not reused and summary.seconds > 0 else ""
    stages.done(
        "extract",
        f"{summary.done} clips in the cache" + ("" if reused else f", {summary.clips_done_now} extracted now{rate}"),
        started,
        reused=reused,
    )
    return summary


def _run_dir(cfg: DemoConfig, overrides: dict[str, Any], fingerprint: dict[str, Any], name: str) -> Path:
    """runs/<name>-<hash of the training options, the preset and the cache fingerprint>."""
    payload = json.dumps(
        {"overrides": overrides, "preset": "small", "fingerprint": fingerprint}, sort_keys=True, default=str
    )
    return cfg.workdir / "runs" / f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def _completed_epochs(run_dir: Path) -> int:
    """Epochs in last.pt (0 when there is none)."""
    from pipeline.training.checkpoints import read_checkpoint

    last = run_dir / "last.pt"
    return int(read_checkpoint(last)["epoch"]) + 1 if last.is_file() else 0


@task(name="train", cache_policy=NO_CACHE)
def _train_stage(cfg: DemoConfig, stages: _Stages, *, attention: tuple[str, str], label: str) -> Path:
    """Train (or reuse, or resume) one model; returns its run directory."""
    from pipeline.training.config import resolve_config
    from pipeline.training.loop import train
    from pipeline.training.splits import read_cache_meta

    started = time.perf_counter()
    name = "train" if attention == STAR_ATTENTION else "train FF"
    overrides = cfg.train_overrides(attention=attention)
    run_dir = _run_dir(
        cfg, overrides, read_cache_meta(cfg.cache_path).fingerprint, "star-" + "".join(attention).lower()
    )
    train_cfg = resolve_config(overrides={**overrides, "out": str(run_dir)}, preset="small")
    done_epochs = _completed_epochs(run_dir)
    if done_epochs >= cfg.epochs:
        with stages.bar(name, total=cfg.epochs, unit="epochs") as update:
            update(completed=cfg.epochs, note="reused")
        stages.done(name, f"{label}: {cfg.epochs} epochs in {run_dir.name}", started, reused=True)
        return run_dir
    metrics = run_dir / "metrics.jsonl"
    with stages.bar(name, total=cfg.epochs, unit="epochs") as update:
        stop = threading.Event()

        def poll() -> None:  # the training loop logs one JSON line per epoch: follow it
            while not stop.wait(0.5):
                _update_from_log(metrics, update)

        watcher = threading.Thread(target=poll, name="star-demo-train-progress", daemon=True)
        watcher.start()
        try:
            train(train_cfg, resume=done_epochs > 0, show_progress=False)
        finally:
            stop.set()
            watcher.join()
            _update_from_log(metrics, update)
    resumed = f", resumed after epoch {done_epochs}" if done_epochs else ""
    stages.done(name, f"{label}: {cfg.epochs} epochs in {run_dir.name}{resumed}", started)
    return run_dir


def _update_from_log(metrics: Path, update) -> None:
    if not metrics.is_file():
        return
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return
    try:
        last = json.loads(lines[-1])
    except json.JSONDecodeError:  # a line being written right now: the next poll reads it whole
        return
    note = f"loss {last['train.loss']:.3f}"
    if "val.top1" in last:
        note += f"  val top-1 {last['val.top1']:.1%}"
    update(completed=len(lines), note=note)


@task(name="evaluate", cache_policy=NO_CACHE)
def _evaluate_stage(cfg: DemoConfig, stages: _Stages, run_dir: Path, *, out_dir: Path, name: str):
    from pipeline.inference.evaluate import evaluate_checkpoint

    started = time.perf_counter()
    with stages.bar(name, total=1, unit="split") as update:
        result = evaluate_checkpoint(
            checkpoint=run_dir / "last.pt",
            cache=str(cfg.cache_path),
            split="test",
            benchmark=BENCHMARK,
            out_dir=out_dir,
            batch_size=cfg.batch_size,
            workers=0,
            device=cfg.device,
        )
        update(completed=1, note=f"top-1 {result.report.top1:.1%}")
    stages.done(
        name,
        f"held-out top-1 {result.report.top1:.1%}, top-5 {result.report.top5:.1%} ({result.report.num_samples} clips)",
        started,
    )
    return result


@task(name="explain", cache_policy=NO_CACHE)
def _explain_stage(cfg: DemoConfig, stages: _Stages, run_dir: Path, fattn_dir: Path | None):
    from pipeline.inference.explain import explain

    started = time.perf_counter()
    sample_id, video, pose, true_class = held_out_clip(cfg)
    with stages.bar("explain", total=1, unit="clip") as update:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=RANDOM_WEIGHTS_WARNING)
            explanation = explain(
                video=video,
                pose=pose,
                checkpoint=run_dir / "last.pt",
                compare=fattn_dir / "last.pt" if fattn_dir is not None else None,
                out_dir=cfg.report_dir,
                device=cfg.device,
                title=f"held-out clip {sample_id} (true class: {true_class}): relative frame importance",
            )
        update(completed=1, note=sample_id)
    predicted = explanation.models[-1].top[0]
    stages.done(
        "explain",
        f"{sample_id} ({true_class}): predicted {predicted.class_name} ({predicted.probability:.0%})",
        started,
    )
    return explanation, sample_id, true_class


@task(name="report", cache_policy=NO_CACHE)
def _report_stage(
    cfg: DemoConfig,
    stages: _Stages,
    *,
    dataset_ids: list[str],
    extraction,
    evaluation,
    fattn_evaluation,
    run_dir: Path,
    fattn_dir: Path | None,
    explanation,
    clip: tuple[str, str],
) -> tuple[Path, dict[str, Any]]:
    from pipeline.inference.plots import (
        plot_per_class_accuracy,
        plot_training_curves,
        read_metrics_log,
    )

    started = time.perf_counter()
    report = cfg.report_dir
    with stages.bar("report", total=3, unit="files") as update:
        plot_training_curves(
            records=read_metrics_log(run_dir / "metrics.jsonl"),
            out=report / "training_curves.png",
            title="STAR training on the generated dataset (validation = a training subject held back)",
        )
        if fattn_dir is not None:
            plot_training_curves(
                records=read_metrics_log(fattn_dir / "metrics.jsonl"),
                out=report / "training_curves_fattn.png",
                title="FAttn-only (FF/FF) training on the generated dataset",
            )
        update(completed=1)
        plot_per_class_accuracy(
            rows=evaluation.report.per_class,
            out=report / "per_class_accuracy.png",
            title=f"per-class accuracy on the held-out subjects (top-1 {evaluation.report.top1:.1%})",
        )
        update(completed=2)
        files = {
            "summary of the run (held-out metrics, per-class, timings, configuration)": str(report / "metrics.json"),
            "full evaluation report": str(report / "report.json"),
            "confusion matrix (rows: true class)": str(report / "confusion.png"),
            "confusion matrix counts": str(report / "confusion.csv"),
            "per-class table": str(report / "per_class.csv"),
            "per-class accuracy bars": str(report / "per_class_accuracy.png"),
            "training curves": str(report / "training_curves.png"),
            "frame importance (attention rollout)": str(report / "frame_importance.png"),
            "frame importance scores": str(report / "explain.json"),
        }
        if fattn_dir is not None:
            files["FAttn-only training curves"] = str(report / "training_curves_fattn.png")
            files["evaluation of the FAttn-only model (report.json, confusion matrix, per-class table)"] = str(
                report / "fattn-only"
            )
        stages.done("report", f"{len(files) + 1} files in {report}", started)
        payload = metrics_payload(
            cfg,
            stages=stages.results,
            run_dir=run_dir,
            fattn_dir=fattn_dir,
            dataset_ids=dataset_ids,
            extraction=extraction,
            evaluation=evaluation,
            fattn_evaluation=fattn_evaluation,
            explanation=explanation,
            clip=clip,
        )
        (report / "metrics.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        path = write_report(cfg, payload, files=files)
        update(completed=3)
    return path, payload


@flow(name="star-demo", validate_parameters=False, log_prints=False)
def run_demo(cfg: DemoConfig, *, console=None) -> DemoResult:
    """The demo flow: every stage a task (extraction the extract flow, as a subflow); returns where the report is,
    the held-out metrics and the stage timings."""
    import torch
    from rich.console import Console

    cfg.check()
    console = console or Console()
    stages = _Stages(console)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    if cfg.report_dir.exists():
        shutil.rmtree(cfg.report_dir)  # a report describes one run: no file of an older run may linger
    cfg.report_dir.mkdir(parents=True)
    threads = torch.get_num_threads()
    dataset_ids = _dataset_stage(cfg, stages)
    extraction = _extract_stage(cfg, stages)
    torch.set_num_threads(threads)  # the flow's worker threads may have changed it
    run_dir = _train_stage(cfg, stages, attention=STAR_ATTENTION, label="STAR (FZ/FB)")
    fattn_dir = (
        _train_stage(cfg, stages, attention=FATTN_ATTENTION, label="FAttn only (FF/FF)") if cfg.compare_fattn else None
    )
    evaluation = _evaluate_stage(cfg, stages, run_dir, out_dir=cfg.report_dir, name="evaluate")
    fattn_evaluation = None
    if fattn_dir is not None:
        fattn_evaluation = _evaluate_stage(
            cfg, stages, fattn_dir, out_dir=cfg.report_dir / "fattn-only", name="eval FF"
        )
    explanation, sample_id, true_class = _explain_stage(cfg, stages, run_dir, fattn_dir)
    report_md, payload = _report_stage(
        cfg,
        stages,
        dataset_ids=dataset_ids,
        extraction=extraction,
        evaluation=evaluation,
        fattn_evaluation=fattn_evaluation,
        run_dir=run_dir,
        fattn_dir=fattn_dir,
        explanation=explanation,
        clip=(sample_id, true_class),
    )
    return DemoResult(report_dir=str(cfg.report_dir), report_md=str(report_md), metrics=payload, stages=stages.results)


def summary_table(result: DemoResult):
    """The rich table `star demo` prints: one row per stage, then the headline figure and the report's place."""
    from rich.table import Table

    table = Table(title="STAR demo", title_justify="left")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    for stage in result.stages:
        table.add_row(stage.name, stage.summary, f"{stage.seconds:.1f}" + (" (reused)" if stage.reused else ""))
    held = result.metrics["held_out"]
    table.add_row(
        "[bold]held-out[/bold]",
        f"[bold]top-1 {held['top1']:.1%}[/bold], top-5 {held['top5']:.1%}, "
        f"mean per-class {held['mean_class_accuracy']:.1%} on {held['clips']} clips of unseen subjects",
        "",
    )
    table.add_row("total", "", f"{sum(stage.seconds for stage in result.stages):.1f}")
    table.caption = f"report: {result.report_md}"
    return table
