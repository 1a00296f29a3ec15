"""`star demo`: the whole system on a generated dataset, in one command, with a report (issue 6, README command #1).

Stages, each with a progress bar, all in `DemoConfig.workdir` (default ./star-demo):

    dataset   `pipeline.synthetic.generate_ntu_dataset`: NTU RGB+D-format videos and .skeleton files of 12 NTU120
              classes, subjects 1-20 (official cross-subject split: 1, 2, 4, 5, 8, 9, 13-19 train; 3, 6, 7, 10-12, 20 held out)
    extract   the real Prefect flow `flows.extract.run_extract` on Prefect's embedded temporary server: index,
              MC3-18 features (RANDOM weights: nothing can be downloaded here), zarr cache
    train     the real training loop `pipeline.train.train` from the cache (`small` preset + the demo's model size)
    evaluate  `pipeline.evaluate.evaluate_checkpoint` on the held-out subjects (ntu120-xsub test split)
    explain   `pipeline.explain.explain`: attention rollout for one held-out clip (paper Fig. 6)
    report    metrics.json, confusion matrix, training curves, per-class accuracy, frame importance, report.md

Re-running is cheap because every stage keeps what is still valid:
- the dataset folder is named after its generation settings and reused when its marker file matches;
- the index and the cache are the extract flow's own incremental state (the flow runs again and finds nothing to do);
- a training run directory is named after a hash of its complete configuration and of the cache fingerprint;
  it is reused when its last.pt holds the final epoch, resumed (`--resume`, bit for bit) when it stopped early, and
  trained from scratch otherwise. Evaluation, explanation and the report are always redone (seconds).

Which split each number comes from: the model trains on the cross-subject training subjects minus one, which the
trainer carves out as its validation split (it chooses best.pt); the held-out figures are those of the final epoch
(last.pt) on the test subjects, which take no part in training or model selection.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import StarError

BENCHMARK = "ntu120-xsub"
DATASET = "ntu120"
RANDOM_WEIGHTS_WARNING = "MC18Backbone uses RANDOM weights"


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does; the defaults fit 2 CPU cores in under 5 minutes and reach >= 95% held-out top-1."""

    workdir: Path = Path("star-demo")
    # dataset
    samples_per_class: int = 36  # spread evenly over the subjects, cameras, setups and replications
    # pipeline.synthetic.SYNTHETIC_ACTIONS, then sitting down / standing up: exact time reverses of each other,
    # which only a model that sees frame order can separate.
    actions: tuple[int, ...] = (10, 23, 24, 27, 35, 59, 80, 95, 97, 99, 8, 9)
    # NTU120 cross-subject: 1, 2, 4, 5, 8, 9, 13-19 train, 3, 6, 7, 10-12, 20 held out. Thirteen training subjects:
    # generalising to unseen bodies and clothes needs many (with 10 of them, one seed fell to 94 % held-out).
    subjects: tuple[int, ...] = tuple(range(1, 21))
    frame_size: tuple[int, int] = (320, 180)  # (width, height) of the generated videos
    seed: int = 0
    # extraction
    frames: int = 8  # T
    size: int = 64  # backbone input S x S
    crop: str = "person"  # the figure fills the input instead of a fifth of it
    # training ("small" preset of pipeline/train.py, then these)
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    dim: int = 64
    depth: int = 1
    heads: int = 2
    dropout: float = 0.0  # dropout > 0 makes PyTorch's attention fall back to its slow math kernel on CPU
    workers: int = 0  # DataLoader workers: the cache is small and the CPU is the bottleneck
    compare_fattn: bool = False  # also train the FAttn-only model (FF/FF) and draw both, as in Fig. 6
    device: str = "auto"

    def check(self) -> None:
        if self.samples_per_class < 2:
            raise StarError(f"--samples-per-class must be >= 2 so that training and held-out subjects both get clips, got {self.samples_per_class}")
        if len(self.actions) < 2:
            raise StarError("the demo needs at least two classes")
        if self.epochs < 1:
            raise StarError(f"--epochs must be >= 1, got {self.epochs}")

    @property
    def dataset_dir(self) -> Path:
        width, height = self.frame_size
        return (self.workdir / "dataset"
                / f"ntu-{len(self.actions)}x{self.samples_per_class}-p{len(self.subjects)}-{width}x{height}-seed{self.seed}")

    @property
    def features_dir(self) -> Path:
        """The cache and its annotation index (`star extract` puts the index next to the cache)."""
        return self.workdir / "features" / f"{self.dataset_dir.name}-t{self.frames}-s{self.size}-{self.crop}"

    @property
    def cache_path(self) -> Path:
        return self.features_dir / "cache.zarr"

    @property
    def report_dir(self) -> Path:
        return self.workdir / "report"

    def train_overrides(self, *, attention: tuple[str, str]) -> dict[str, Any]:
        """Options of `pipeline.train.resolve_config` on top of the `small` preset."""
        encoder, decoder = attention
        return {
            "cache": str(self.cache_path), "benchmark": BENCHMARK, "epochs": self.epochs, "batch_size": self.batch_size,
            "lr": self.lr, "workers": self.workers,
            "device": "cuda" if self.device.startswith("cuda") else self.device,  # the trainer takes auto, cpu or cuda
            "seed": self.seed, "model": {"dim": self.dim, "depth": self.depth, "heads": self.heads,
                                         "dropout": self.dropout, "encoder": encoder, "decoder": decoder},
        }


def demo_config(
    *,
    workdir: Path,
    compare_fattn: bool = False,
    device: str = "auto",
    samples_per_class: int | None = None,
    classes: int | None = None,
    epochs: int | None = None,
    size: int | None = None,
    frames: int | None = None,
    frame_width: int | None = None,
    seed: int | None = None,
) -> DemoConfig:
    """The default demo with the given changes (None: keep the default); `classes` keeps the first N classes.

    The size options exist so tests can run the whole demo in seconds; the defaults are what the README promises.
    """
    values: dict[str, Any] = {"workdir": Path(workdir), "compare_fattn": compare_fattn, "device": device}
    given = {"samples_per_class": samples_per_class, "epochs": epochs, "size": size, "frames": frames, "seed": seed}
    values.update({key: value for key, value in given.items() if value is not None})
    if classes is not None:
        if not 2 <= classes <= len(DemoConfig.actions):
            raise StarError(f"--classes must be between 2 and {len(DemoConfig.actions)}, got {classes}")
        values["actions"] = DemoConfig.actions[:classes]
    if frame_width is not None:
        if frame_width < 32 or frame_width % 16:
            raise StarError(f"--frame-width must be a multiple of 16 and >= 32, got {frame_width}")
        values["frame_size"] = (frame_width, frame_width * 9 // 16)
    return DemoConfig(**values)


STAR_ATTENTION = ("FZ", "FB")  # the paper's encoder/decoder (Table 4)
FATTN_ATTENTION = ("FF", "FF")


@dataclass(frozen=True)
class StageResult:
    name: str
    summary: str
    seconds: float
    reused: bool = False


@dataclass(frozen=True)
class DemoResult:
    report_dir: str
    report_md: str
    metrics: dict[str, Any]
    stages: list[StageResult] = field(default_factory=list)

    @property
    def top1(self) -> float:
        return float(self.metrics["held_out"]["top1"])


# ------------------------------------------------------------------------------------------------ progress


class _Stages:
    """One rich progress bar per stage, on one console, and the timings of the stages for the summary."""

    def __init__(self, console) -> None:
        self.console = console
        self.results: list[StageResult] = []

    @contextmanager
    def bar(self, name: str, *, total: float | None, unit: str) -> Iterator[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn(f"{name:<9}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=self.console)
        task = progress.add_task(name, total=total, note="")
        with progress:
            yield lambda **update: progress.update(task, **update)

    def done(self, name: str, summary: str, started: float, *, reused: bool = False) -> None:
        self.results.append(StageResult(name=name, summary=summary, seconds=time.perf_counter() - started, reused=reused))


def _prefect_environment() -> None:
    """Quiet, offline Prefect; must happen before `prefect` is imported (ecosystem notes)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # Prefect's 20 s is too short on a busy 2-core machine


# ------------------------------------------------------------------------------------------------ stages


def split_subjects(sample_ids: list[str]) -> tuple[list[int], list[int]]:
    """(training, held-out) subjects of the generated samples under the official NTU120 cross-subject split."""
    from pipeline.datasets.ntu import NTU120_TRAIN_SUBJECTS, parse_ntu_name

    subjects = sorted({parse_ntu_name(sample_id).subject for sample_id in sample_ids})
    return [s for s in subjects if s in NTU120_TRAIN_SUBJECTS], [s for s in subjects if s not in NTU120_TRAIN_SUBJECTS]


def validation_subjects(sample_ids: list[str], *, fraction: float) -> list[int]:
    """The training subjects the trainer holds back for validation (`pipeline.data.carve_validation`)."""
    from pipeline.data import carve_validation
    from pipeline.datasets.ntu import parse_ntu_name

    train_subjects = set(split_subjects(sample_ids)[0])
    train_ids = [i for i in sample_ids if parse_ntu_name(i).subject in train_subjects]
    return sorted({parse_ntu_name(i).subject for i in carve_validation(train_ids, fraction=fraction)[1]})


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers))


def _dataset_stage(cfg: DemoConfig, stages: _Stages) -> list[str]:
    """Generate the NTU-format dataset once per generation settings; a marker file says it is complete."""
    from pipeline.synthetic import generate_ntu_dataset

    started = time.perf_counter()
    marker = cfg.dataset_dir / "demo-dataset.json"
    settings = {"actions": list(cfg.actions), "samples_per_class": cfg.samples_per_class, "subjects": list(cfg.subjects),
                "frame_size": list(cfg.frame_size), "seed": cfg.seed}
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored.get("settings") == settings:
            with stages.bar("dataset", total=len(stored["sample_ids"]), unit="clips") as update:
                update(completed=len(stored["sample_ids"]), note="reused")
            stages.done("dataset", f"{len(stored['sample_ids'])} clips, {len(cfg.actions)} classes in {cfg.dataset_dir.name}", started, reused=True)
            return stored["sample_ids"]
    ids: list[str] = []
    total = len(cfg.actions) * cfg.samples_per_class
    with stages.bar("dataset", total=total, unit="clips") as update:
        # One call per class: every sample has its own seeded generator, so the files equal those of one call.
        for action in cfg.actions:
            ids += generate_ntu_dataset(cfg.dataset_dir, samples_per_class=cfg.samples_per_class, actions=(action,),
                                        subjects=cfg.subjects, frame_size=cfg.frame_size, seed=cfg.seed)
            update(completed=len(ids))
    marker.write_text(json.dumps({"settings": settings, "sample_ids": ids}, indent=1) + "\n")
    train, held_out = split_subjects(ids)
    stages.done("dataset", f"{len(ids)} clips, {len(cfg.actions)} classes; subjects {_listed(train)} train, "
                           f"{_listed(held_out)} held out", started)
    return ids


def _extract_stage(cfg: DemoConfig, stages: _Stages):
    """The real `star extract` flow (Prefect, embedded temporary server) into the demo's cache."""
    from pipeline.extract import ExtractConfig
    from pipeline.progress import CacheProgress

    _prefect_environment()
    from flows.extract import run_extract

    started = time.perf_counter()
    config = ExtractConfig(dataset=DATASET, root=cfg.dataset_dir, out=str(cfg.cache_path), benchmark=BENCHMARK,
                           frames=cfg.frames, size=cfg.size, crop=cfg.crop, weights="random", batch_size=4, workers=2,
                           unit_size=16, device=cfg.device)
    config.check()
    cfg.features_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_WEIGHTS_WARNING)  # the report says so, once
        with CacheProgress(config.out, console=stages.console):
            summary = run_extract(config)
    if summary.exit_code != 0:
        raise StarError(f"extraction left {summary.failed} failed and {summary.pending} pending samples in "
                        f"{config.out} ({summary.failures[:3]}); see `star cache info {config.out}`")
    reused = summary.clips_done_now == 0
    rate = f", {summary.clips_done_now / summary.seconds:.2f} clips/s" if not reused and summary.seconds > 0 else ""
    stages.done("extract", f"{summary.done} clips in the cache" + ("" if reused else f", {summary.clips_done_now} extracted now{rate}"),
                started, reused=reused)
    return summary


def _run_dir(cfg: DemoConfig, overrides: dict[str, Any], fingerprint: dict[str, Any], name: str) -> Path:
    """runs/<name>-<hash of the training options, the preset and the cache fingerprint>."""
    payload = json.dumps({"overrides": overrides, "preset": "small", "fingerprint": fingerprint}, sort_keys=True, default=str)
    return cfg.workdir / "runs" / f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def _completed_epochs(run_dir: Path) -> int:
    """Epochs in last.pt (0 when there is none)."""
    from pipeline.evaluate import read_checkpoint

    last = run_dir / "last.pt"
    return int(read_checkpoint(last)["epoch"]) + 1 if last.is_file() else 0


def _train_stage(cfg: DemoConfig, stages: _Stages, *, attention: tuple[str, str], label: str) -> Path:
    """Train (or reuse, or resume) one model; returns its run directory."""
    from pipeline.data import read_cache_meta
    from pipeline.train import resolve_config, train

    started = time.perf_counter()
    name = "train" if attention == STAR_ATTENTION else "train FF"
    overrides = cfg.train_overrides(attention=attention)
    run_dir = _run_dir(cfg, overrides, read_cache_meta(cfg.cache_path).fingerprint, "star-" + "".join(attention).lower())
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


def _evaluate_stage(cfg: DemoConfig, stages: _Stages, run_dir: Path, *, out_dir: Path, name: str):
    from pipeline.evaluate import evaluate_checkpoint

    started = time.perf_counter()
    with stages.bar(name, total=1, unit="split") as update:
        result = evaluate_checkpoint(checkpoint=run_dir / "last.pt", cache=str(cfg.cache_path), split="test",
                                     benchmark=BENCHMARK, out_dir=out_dir, batch_size=cfg.batch_size, workers=0,
                                     device=cfg.device)
        update(completed=1, note=f"top-1 {result.report.top1:.1%}")
    stages.done(name, f"held-out top-1 {result.report.top1:.1%}, top-5 {result.report.top5:.1%} "
                      f"({result.report.num_samples} clips)", started)
    return result


def held_out_clip(cfg: DemoConfig) -> tuple[str, Path, Path, str]:
    """The clip the demo explains: the first held-out sample of the class "jump up" (or of the first class).

    Returns (sample id, video, pose file, class name). A whole-body action shows where in time the model looks.
    """
    from pipeline.index import AnnotationIndex

    index = AnnotationIndex(cfg.features_dir / f"{DATASET}-index.h5")
    held_out = np.flatnonzero(np.asarray(index.split_mask(BENCHMARK, "test", ok_only=True)))
    if not held_out.size:
        raise StarError(f"the generated dataset has no held-out ({BENCHMARK} test) sample: use more samples per class")
    labels = np.asarray(index.labels)[held_out]
    preferred = [row for row, label in zip(held_out, labels) if label == 27 - 1]  # A027 jump up
    row = int(preferred[0] if preferred else held_out[0])
    sample_id = str(index.sample_ids[row])
    pose = cfg.dataset_dir / "nturgb+d_skeletons" / f"{sample_id}.skeleton"
    return sample_id, Path(index.video_paths[row]), pose, index.class_names[int(index.labels[row])]


def _explain_stage(cfg: DemoConfig, stages: _Stages, run_dir: Path, fattn_dir: Path | None):
    from pipeline.explain import explain

    started = time.perf_counter()
    sample_id, video, pose, true_class = held_out_clip(cfg)
    with stages.bar("explain", total=1, unit="clip") as update:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=RANDOM_WEIGHTS_WARNING)
            explanation = explain(video=video, pose=pose, checkpoint=run_dir / "last.pt",
                                  compare=fattn_dir / "last.pt" if fattn_dir is not None else None,
                                  out_dir=cfg.report_dir, device=cfg.device,
                                  title=f"held-out clip {sample_id} (true class: {true_class}): relative frame importance")
        update(completed=1, note=sample_id)
    predicted = explanation.models[-1].top[0]
    stages.done("explain", f"{sample_id} ({true_class}): predicted {predicted.class_name} ({predicted.probability:.0%})", started)
    return explanation, sample_id, true_class


# ------------------------------------------------------------------------------------------------ the report


def _metrics_payload(cfg: DemoConfig, *, dataset_ids: list[str], extraction, evaluation, fattn_evaluation,
                     run_dir: Path, fattn_dir: Path | None, explanation, clip: tuple[str, str], stages: list[StageResult]) -> dict[str, Any]:
    from pipeline.plots import read_metrics_log

    def held_out(result) -> dict[str, Any]:
        report = result.report
        return {"split": result.meta["split"], "clips": report.num_samples, "top1": report.top1, "top5": report.top5,
                "mean_class_accuracy": report.mean_class_accuracy, "loss": report.loss, "checkpoint": result.meta["checkpoint"],
                "epoch": result.meta["epoch"]}

    last = read_metrics_log(run_dir / "metrics.jsonl")[-1]
    train_config = json.loads((run_dir / "config.json").read_text())
    payload = {
        "held_out": held_out(evaluation),
        "per_class": [asdict(row) for row in evaluation.report.per_class],
        "last_epoch": last,
        "dataset": {"dataset": DATASET, "benchmark": BENCHMARK, "clips": len(dataset_ids), "classes": len(cfg.actions),
                    "train_subjects": split_subjects(dataset_ids)[0], "held_out_subjects": split_subjects(dataset_ids)[1],
                    "validation_subjects": validation_subjects(dataset_ids, fraction=float(train_config["val_fraction"])),
                    "root": str(cfg.dataset_dir), "frame_size": list(cfg.frame_size)},
        "extraction": {"cache": str(cfg.cache_path), "clips_done": extraction.done, "clips_extracted_now": extraction.clips_done_now,
                       "seconds": extraction.seconds, "backbone_weights": "random (MC3-18 architecture, seed 0)",
                       "frames": cfg.frames, "size": cfg.size, "crop": cfg.crop},
        "training": {"run_dir": str(run_dir), "preset": "small", "config": train_config},
        "explained_clip": {"sample_id": clip[0], "true_class": clip[1], **explanation.to_dict()},
        "stages": [asdict(stage) for stage in stages],
        "demo_config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    if fattn_evaluation is not None:
        payload["fattn_only"] = {"run_dir": str(fattn_dir), "held_out": held_out(fattn_evaluation)}
    return payload


def _write_report(cfg: DemoConfig, payload: dict[str, Any], *, files: dict[str, str]) -> Path:
    held = payload["held_out"]
    train_cfg = payload["training"]["config"]
    model = train_cfg["model"]
    clip = payload["explained_clip"]
    seconds = sum(stage["seconds"] for stage in payload["stages"])
    lines = [
        "# STAR demo report",
        "",
        f"Generated by `star demo --workdir {cfg.workdir}` on {time.strftime('%Y-%m-%d %H:%M')} in {seconds:.0f} s "
        "(stages below).",
        "",
        "## Result",
        "",
        f"**Held-out subjects ({BENCHMARK} test split, subjects {_listed(payload['dataset']['held_out_subjects'])}; "
        f"{held['clips']} clips): "
        f"top-1 {held['top1']:.1%}, top-5 {held['top5']:.1%}, mean per-class accuracy {held['mean_class_accuracy']:.1%}** "
        f"(final epoch {held['epoch'] + 1}, `last.pt`). These subjects take no part in training or model selection: "
        f"best.pt is chosen on the validation subject(s) {_listed(payload['dataset']['validation_subjects'])}, carved from "
        "the training subjects.",
        "",
    ]
    if "fattn_only" in payload:
        other = payload["fattn_only"]["held_out"]
        lines += ["| model | encoder / decoder | held-out top-1 | top-5 |", "|---|---|---|---|",
                  f"| FAttn only | FF / FF | {other['top1']:.1%} | {other['top5']:.1%} |",
                  f"| STAR | {model['encoder']} / {model['decoder']} | {held['top1']:.1%} | {held['top5']:.1%} |", ""]
    lines += [
        "![confusion matrix](confusion.png)",
        "",
        "![per-class accuracy](per_class_accuracy.png)",
        "",
        "## What ran",
        "",
        f"1. **Dataset**: `pipeline.synthetic.generate_ntu_dataset` wrote {payload['dataset']['clips']} clips of "
        f"{payload['dataset']['classes']} NTU RGB+D 120 classes in the real NTU layout (`.avi` + `.skeleton`, "
        f"{cfg.frame_size[0]}x{cfg.frame_size[1]} px) under `{payload['dataset']['root']}`: a rendered figure whose "
        f"motion matches the class name, {len(payload['dataset']['train_subjects'] + payload['dataset']['held_out_subjects'])} "
        "subjects (body size, proportions, clothes), 3 camera angles, 2 setups.",
        f"2. **Extraction**: the `star-extract` Prefect flow on Prefect's embedded temporary server built the HDF5 "
        f"annotation index and the zarr feature cache `{payload['extraction']['cache']}` "
        f"(T = {cfg.frames} frames, {cfg.size}x{cfg.size} input, crop `{cfg.crop}`). "
        "**The MC3-18 backbone has RANDOM weights**: the Kinetics-400 checkpoint cannot be downloaded here, so the "
        "RGB features are those of an untrained network and most of the signal comes from the skeletons. With "
        "`mc3_18-a90a0ba3.pth` in the torch hub cache, `star extract --weights kinetics400` uses the real features.",
        f"3. **Training**: `pipeline.train` (`small` preset: AdamW, cosine schedule with warm-up, label smoothing) "
        f"for {train_cfg['epochs']} epochs, batch {train_cfg['batch_size']}, lr {train_cfg['lr']:g}, model width "
        f"{model['dim']}, {model['depth']} layer(s) per stage, {model['heads']} heads, encoder {model['encoder']}, "
        f"decoder {model['decoder']}; on the training subjects {_listed(payload['dataset']['train_subjects'])} minus the "
        f"validation subject(s) {_listed(payload['dataset']['validation_subjects'])}. "
        f"Run directory: `{payload['training']['run_dir']}`.",
        "",
        "![training curves](training_curves.png)",
        "",
        f"4. **Evaluation** of `last.pt` on the held-out subjects: `report.json`, `confusion.csv`, `per_class.csv`.",
        f"5. **Explanation** (paper §4.3, Fig. 6): attention rollout over the {len(clip['frame_indices'])} input frames of "
        f"the held-out clip `{clip['sample_id']}` (true class: {clip['true_class']}).",
        "",
        "![frame importance](frame_importance.png)",
        "",
        "| model | prediction | top-3 frames (input frame: video frame) |",
        "|---|---|---|",
    ]
    for item in clip["models"]:
        order = np.argsort(-np.asarray(item["scores"]), kind="stable")[:3]
        best = item["top"][0]
        frames = ", ".join(f"{t + 1}: #{clip['frame_indices'][t]}" for t in order)
        lines.append(f"| {item['label']} | {best['class_name']} ({best['probability']:.0%}) | {frames} |")
    lines += ["", "## Stages", "", "| stage | result | seconds |", "|---|---|---|"]
    lines += [f"| {stage['name']} | {stage['summary']} | {stage['seconds']:.1f} |" for stage in payload["stages"]]
    lines += [
        "",
        "Re-running `star demo` reuses the dataset, the index and the cache (the flow runs and finds nothing to do) and "
        "a training run whose `last.pt` holds the final epoch (a stopped run is resumed); evaluation, explanation and "
        "this report are redone.",
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{Path(path).name}`: {what}" for what, path in files.items()]
    path = cfg.report_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _report_stage(cfg: DemoConfig, stages: _Stages, *, dataset_ids: list[str], extraction, evaluation, fattn_evaluation,
                  run_dir: Path, fattn_dir: Path | None, explanation, clip: tuple[str, str]) -> tuple[Path, dict[str, Any]]:
    from pipeline.plots import plot_per_class_accuracy, plot_training_curves, read_metrics_log

    started = time.perf_counter()
    report = cfg.report_dir
    with stages.bar("report", total=3, unit="files") as update:
        plot_training_curves(records=read_metrics_log(run_dir / "metrics.jsonl"), out=report / "training_curves.png",
                             title="STAR training on the generated dataset (validation = a training subject held back)")
        if fattn_dir is not None:
            plot_training_curves(records=read_metrics_log(fattn_dir / "metrics.jsonl"), out=report / "training_curves_fattn.png",
                                 title="FAttn-only (FF/FF) training on the generated dataset")
        update(completed=1)
        plot_per_class_accuracy(rows=evaluation.report.per_class, out=report / "per_class_accuracy.png",
                                title=f"per-class accuracy on the held-out subjects (top-1 {evaluation.report.top1:.1%})")
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
            files["evaluation of the FAttn-only model (report.json, confusion matrix, per-class table)"] = str(report / "fattn-only")
        stages.done("report", f"{len(files) + 1} files in {report}", started)
        payload = _metrics_payload(cfg, stages=stages.results, run_dir=run_dir, fattn_dir=fattn_dir, dataset_ids=dataset_ids,
                                   extraction=extraction, evaluation=evaluation, fattn_evaluation=fattn_evaluation,
                                   explanation=explanation, clip=clip)
        (report / "metrics.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        path = _write_report(cfg, payload, files=files)
        update(completed=3)
    return path, payload


def run_demo(cfg: DemoConfig, *, console=None) -> DemoResult:
    """All stages; returns where the report is, the held-out metrics and the stage timings."""
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
    fattn_dir = _train_stage(cfg, stages, attention=FATTN_ATTENTION, label="FAttn only (FF/FF)") if cfg.compare_fattn else None
    evaluation = _evaluate_stage(cfg, stages, run_dir, out_dir=cfg.report_dir, name="evaluate")
    fattn_evaluation = None
    if fattn_dir is not None:
        fattn_evaluation = _evaluate_stage(cfg, stages, fattn_dir, out_dir=cfg.report_dir / "fattn-only", name="eval FF")
    explanation, sample_id, true_class = _explain_stage(cfg, stages, run_dir, fattn_dir)
    report_md, payload = _report_stage(cfg, stages, dataset_ids=dataset_ids, extraction=extraction, evaluation=evaluation,
                                       fattn_evaluation=fattn_evaluation, run_dir=run_dir, fattn_dir=fattn_dir,
                                       explanation=explanation, clip=(sample_id, true_class))
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
    table.add_row("[bold]held-out[/bold]", f"[bold]top-1 {held['top1']:.1%}[/bold], top-5 {held['top5']:.1%}, "
                  f"mean per-class {held['mean_class_accuracy']:.1%} on {held['clips']} clips of unseen subjects", "")
    table.add_row("total", "", f"{sum(stage.seconds for stage in result.stages):.1f}")
    table.caption = f"report: {result.report_md}"
    return table
