"""Stage 1 as plain functions: from an annotation index to a feature cache, one work unit at a time.

    preflight(cfg)        read every input the run depends on (dataset files, an existing index, cache or weights
                          file) and refuse a broken one in one line, before anything is written
    refresh_index(cfg)    build or refresh the HDF5 index (estimating the poses a custom folder lacks)
    plan(cfg)             create/open/grow the zarr cache for the selected samples, list pending units
    UnitExtractor.run(k)  decode the T clip frames of unit k's pending samples (threads), crop/resize them and map
                          the joints through the same transform, run the frozen MC3-18 in batches, build the joint
                          heatmaps, and write the unit (data first, done-mask last)
    summarize(cfg)        counts, failures and throughput from the cache itself

With `modality="pose"` the stage writes a skeleton cache instead (`pipeline.extraction.skeleton_store`): the index is
refreshed the same way, then `extract_skeletons` copies every selected sample's full-rate skeleton into the
store. No frame is decoded and no backbone runs, so the dataset's videos need not exist.

`flows/extract.py` wraps these in Prefect tasks; tests and benchmarks call them directly. Decoding overlaps the
backbone in two ways: a unit decodes its next clips in a thread pool while a batch is on the backbone, and when two
units run at once (Prefect's thread pool) a process-wide lock keeps one backbone call at a time, so one unit decodes
while the other computes. Memory per unit runner is bounded by the unit size, never by a video's length or the
dataset's size.

A sample that cannot be used (corrupt video, bad skeleton, a reason already in the index) is written to the cache as
failed with its reason; it never stops the run. Samples on NTU's official missing-skeleton list are left out of the
cache and counted as skipped.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from model.star import ModelConfig
from pipeline.core.devices import resolve_device
from pipeline.core.errors import StarError
from pipeline.extraction.cache_info import heatmap_report
from pipeline.extraction.cache_layout import CacheLayout
from pipeline.extraction.skeleton_store import (
    SkeletonSample,
    check_skeleton_target,
    content_digest,
    write_skeleton_cache,
)
from pipeline.extraction.store import DEFAULT_UNIT_SIZE, FeatureCache
from pipeline.extraction.weights import load_backbone, weights_id
from pipeline.sources.clips import Clip, ClipSpec, load_clip
from pipeline.sources.datasets import read_dataset
from pipeline.sources.datasets.records import (
    LISTED_MISSING_SKELETON,
    OK,
    POSE_IN_FRAME_FAIL,
    POSE_IN_FRAME_WARN,
    SKELETON_USABLE,
    DatasetReader,
)
from pipeline.sources.geometry import CROP_MODES
from pipeline.sources.index import (
    AnnotationIndex,
    IndexReport,
    build_index,
    check_index_file,
    default_index_path,
)

# Bump when a code change alters the values written to the cache: stores from older code are then refused.
EXTRACT_VERSION = 1
DATASETS = ("ntu60", "ntu120", "penn", "folder")
MODALITIES = ("both", "rgb", "pose")  # both, rgb: the feature cache (it serves both); pose: a skeleton cache
DEFAULT_HEATMAP_SIGMA = ModelConfig.heatmap_sigma  # local-map cells: the maps the model's defaults expect
EXIT_OK, EXIT_FAILED_SAMPLES = 0, 3


@dataclass(frozen=True)
class ExtractConfig:
    """Everything `star extract` is told; `fingerprint()` is the part that decides what the cached values are."""

    dataset: str
    root: Path
    out: str  # a local path or an fsspec URL of the zarr store
    index: Path | None = None  # default: <out's folder>/<dataset>-index.h5
    benchmark: str | None = None  # only samples of this benchmark (train and test); None: every sample
    frames: int = 16
    size: int = 224
    crop: str = "full"
    weights: str = "kinetics400"  # "kinetics400", "random" or a state-dict path
    heatmap_sigma: float = DEFAULT_HEATMAP_SIGMA
    batch_size: int = 4
    workers: int = 2  # decode threads per unit runner
    unit_size: int = DEFAULT_UNIT_SIZE  # samples per work unit = per zarr chunk; fixed when the store is created
    limit: int | None = None  # the first N indexed samples (after skips); None: all
    quantize: bool = False  # opt-in 8-bit maps with per-channel scales
    retry_failed: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    modality: str = "both"  # "pose": skeletons only, no frames decoded and no backbone (see the module docstring)

    @property
    def skeletons_only(self) -> bool:
        return self.modality == "pose"

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec(frames=self.frames, size=self.size, crop=self.crop)

    @property
    def index_path(self) -> Path:
        if self.index is not None:
            return Path(self.index)
        if "://" in self.out:
            raise StarError("--out is a URL: give --index PATH for the local HDF5 annotation index")
        return default_index_path(cache_path=self.out, dataset=self.dataset)

    def check(self) -> None:
        """One-line errors for options that cannot work, before anything is started."""
        if self.dataset not in DATASETS:
            raise StarError(f"Unknown dataset {self.dataset!r}: use one of {', '.join(DATASETS)}")
        if self.modality not in MODALITIES:
            raise StarError(
                f"Unknown modality {self.modality!r}: use both or rgb (a feature cache) or pose (skeletons only)"
            )
        if not Path(self.root).exists():
            raise StarError(f"Dataset root {self.root} does not exist")
        if self.crop not in CROP_MODES:
            raise StarError(f"Unknown crop mode {self.crop!r}: use one of {', '.join(CROP_MODES)}")
        if self.frames < 2 or self.frames % 2:
            raise StarError(
                f"--frames must be even and >= 2 (zigzag/binary attention split time in two), got {self.frames}"
            )
        if self.size < 32 or self.size % 16:
            raise StarError(f"--size must be a multiple of 16 and >= 32 (MC3-18 downsamples by 16), got {self.size}")
        for name in ("batch_size", "workers", "unit_size"):
            if getattr(self, name) < 1:
                raise StarError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise StarError(f"--limit must be >= 1, got {self.limit}")
        if self.heatmap_sigma <= 0:
            raise StarError(f"--heatmap-sigma must be > 0, got {self.heatmap_sigma}")


def fingerprint(cfg: ExtractConfig, index: AnnotationIndex | DatasetReader) -> dict:
    """What determines the cached values; a store built with a different fingerprint is refused."""
    return {
        "dataset": cfg.dataset,
        "backbone": "torchvision.mc3_18",
        "weights": weights_id(cfg.weights),
        "taps": {"local": "layer3", "global": "layer4"},
        "frames": cfg.frames,
        "input_size": cfg.size,
        "crop": cfg.crop,
        "frame_sampling": "uniform-segment-centres",
        "heatmap_sigma": cfg.heatmap_sigma,
        "decoder": f"opencv-{cv2.__version__}",
        "dtype": "uint8" if cfg.quantize else "float16",
        "extract_version": EXTRACT_VERSION,
        "class_names": list(index.class_names),
        "layout": {
            "name": index.layout.name,
            "joint_names": list(index.layout.joint_names),
            "flip_pairs": [list(p) for p in index.layout.flip_pairs],
        },
    }


def preflight(cfg: ExtractConfig) -> None:
    """Refuse options and input files that cannot work, reading but never writing anything.

    Checks the options, the dataset's own files (a custom folder's manifest, layout and class list), an
    existing annotation index, an existing store at --out (a STAR cache with the same fingerprint, or an
    empty folder) and a weights file. Per-sample files (videos, skeletons, pose files) are not read here:
    a broken one fails its sample, recorded in the cache with the reason.
    """
    cfg.check()
    reader = read_dataset(cfg.dataset, Path(cfg.root))
    check_index_file(cfg.index_path, dataset=cfg.dataset)
    if cfg.skeletons_only:
        check_skeleton_target(cfg.out, fingerprint=skeleton_fingerprint(cfg, reader))
        return
    layout = CacheLayout.for_mc3_18(
        frames=cfg.frames, input_size=cfg.size, persons=reader.persons, num_joints=reader.layout.num_joints
    )
    FeatureCache.check_target(cfg.out, fingerprint=fingerprint(cfg, reader), layout=layout, quantize=cfg.quantize)
    if cfg.weights != "random":
        load_backbone(cfg.weights)  # reads and checks the state dict


@dataclass(frozen=True)
class Plan:
    units: list[int]  # pending work units of the cache
    samples: int  # samples in the cache
    pending: int
    skipped: int  # on NTU's missing-skeleton list: not in the cache
    pose_warnings: int = 0  # selected usable samples with part of their pose outside the frame


def refresh_index(cfg: ExtractConfig) -> IndexReport:
    """Bring the annotation index up to date: new, changed and removed samples; poses a custom folder lacks are
    estimated here, before any feature extraction."""
    cfg.check()
    return build_index(cfg.dataset, Path(cfg.root), cfg.index_path)


def plan(cfg: ExtractConfig) -> Plan:
    """Create/open/grow the cache for the selected samples of the fresh index, and list the pending units.

    Runs in the coordinating process only: zarr loses rows when two processes grow an array at once.
    """
    index = AnnotationIndex(cfg.index_path)
    status = np.asarray(index.status)
    rows, skipped = selected_rows(cfg, index)
    splits = split_masks(index, rows)
    layout = CacheLayout.for_mc3_18(
        frames=cfg.frames, input_size=cfg.size, persons=index.persons, num_joints=index.layout.num_joints
    )
    cache = FeatureCache.create_or_open(
        cfg.out,
        fingerprint=fingerprint(cfg, index),
        layout=layout,
        sample_ids=np.asarray(index.sample_ids)[rows],
        labels=np.asarray(index.labels)[rows],
        splits=splits,
        unit_size=cfg.unit_size,
        quantize=cfg.quantize,
    )
    pending = cache.pending(retry_failed=cfg.retry_failed)
    in_frame = np.asarray(index.pose_in_frame)[rows]
    warnings = int(np.sum((status[rows] == OK) & (in_frame < POSE_IN_FRAME_WARN)))
    return Plan(
        units=cache.pending_units(retry_failed=cfg.retry_failed),
        samples=len(cache),
        pending=int(pending.size),
        skipped=skipped,
        pose_warnings=warnings,
    )


def selected_rows(cfg: ExtractConfig, index: AnnotationIndex) -> tuple[np.ndarray, int]:
    """Index rows to cache (the benchmark's, the first --limit) and how many are skipped as officially missing."""
    selected = np.asarray(index.status) != LISTED_MISSING_SKELETON
    skipped = int(np.sum(~selected))
    if cfg.benchmark is not None:
        if cfg.benchmark not in index.benchmarks:
            raise StarError(
                f"Unknown benchmark {cfg.benchmark!r} for {cfg.dataset}: use one of {', '.join(index.benchmarks)}"
            )
        selected &= index.splits(cfg.benchmark) != ""
    rows = np.flatnonzero(selected)
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    if rows.size == 0:
        raise StarError(f"No samples to extract under {cfg.root} (dataset {cfg.dataset}); check --root and --benchmark")
    return rows, skipped


def split_masks(index: AnnotationIndex, rows: np.ndarray) -> dict[str, np.ndarray]:
    """ "<benchmark>-<part>" -> membership mask over `rows`, for every benchmark and part of the index."""
    return {
        f"{bench}-{part}": np.asarray(index.split_mask(bench, part))[rows]
        for bench in index.benchmarks
        for part in sorted(set(index.splits(bench)) - {""})
    }


def skeleton_fingerprint(cfg: ExtractConfig, index: AnnotationIndex | DatasetReader) -> dict:
    """What determines a skeleton cache's values; a store built with a different one is refused."""
    return {
        "kind": "skeletons",
        "dataset": cfg.dataset,
        "coordinates": "original-frame pixels",
        "extract_version": EXTRACT_VERSION,
        "class_names": list(index.class_names),
        "layout": {
            "name": index.layout.name,
            "joint_names": list(index.layout.joint_names),
            "flip_pairs": [list(p) for p in index.layout.flip_pairs],
            "bones": [list(b) for b in index.layout.bones],
        },
    }


def extract_skeletons(cfg: ExtractConfig, *, seconds_before: float = 0.0) -> ExtractSummary:
    """Write the skeleton cache of the selected samples of the fresh index (skeletons only: no video is read)."""
    started = time.perf_counter()
    index = AnnotationIndex(cfg.index_path)
    rows, skipped = selected_rows(cfg, index)
    status, details = np.asarray(index.status), np.asarray(index.details)
    samples = []
    for row in rows.tolist():
        usable = status[row] in SKELETON_USABLE
        reason = "" if usable else (f"{status[row]}: {details[row]}" if details[row] else str(status[row]))
        samples.append(
            SkeletonSample(
                sample_id=str(index.sample_ids[row]),
                label=int(index.labels[row]),
                skeleton=index.skeleton(row) if usable else None,
                frame_size=(int(index.width[row]), int(index.height[row])),
                failure=reason,
            )
        )
    digest = content_digest([str(index.fingerprints[row]) for row in rows.tolist()])
    written = write_skeleton_cache(
        cfg.out,
        fingerprint=skeleton_fingerprint(cfg, index),
        persons=index.persons,
        num_joints=index.layout.num_joints,
        samples=samples,
        splits=split_masks(index, rows),
        digest=digest,
    )
    in_frame = np.asarray(index.pose_in_frame)[rows]
    warned = [
        (samples[i].sample_id, float(in_frame[i]))
        for i in range(len(rows))
        if not samples[i].failure and in_frame[i] < POSE_IN_FRAME_WARN
    ]
    failures = [(s.sample_id, s.failure) for s in samples if s.failure]
    return ExtractSummary(
        out=cfg.out,
        samples=len(samples),
        done=len(samples) - len(failures),
        failed=len(failures),
        pending=0,
        skipped=skipped,
        failures=failures,
        seconds=seconds_before + time.perf_counter() - started,
        clips_done_now=len(samples) - len(failures) if written else 0,
        index_warnings=len(warned),
        modality="pose",
        pose_warnings=warned,
    )


@dataclass(frozen=True)
class UnitReport:
    unit: int
    done: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, reason)
    seconds: float = 0.0


class UnitExtractor:
    """Turns work units into cache rows; one per process (see `extractor_for`), shared by its threads."""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.index = AnnotationIndex(cfg.index_path)
        self.cache = FeatureCache.open(cfg.out, mode="r+")
        self.rows = {sample_id: row for row, sample_id in enumerate(self.index.sample_ids)}
        self.device = resolve_device(cfg.device)
        self.backbone = load_backbone(cfg.weights).to(self.device)
        self._decoder = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="star-decode")
        self._compute = threading.Lock()  # one backbone call at a time; other threads decode meanwhile

    def run(self, unit: int) -> UnitReport:
        started = time.perf_counter()
        status = self.cache.status()
        rows = [
            row
            for row in self.cache.unit_samples(unit)
            if status[row] == 0 or (self.cfg.retry_failed and status[row] == 2)
        ]
        decoding = [self._decoder.submit(self._load, row) for row in rows]
        results: dict[int, dict | str] = {}
        batch: list[tuple[int, Clip]] = []
        for row, future in zip(rows, decoding, strict=True):
            clip = future.result()  # a Clip, or the reason it failed
            if isinstance(clip, str):
                results[row] = clip
            else:
                batch.append((row, clip))
            if len(batch) == self.cfg.batch_size:
                results.update(self._features(batch))
                batch = []
        if batch:
            results.update(self._features(batch))
        self.cache.write_unit(unit, results)
        failed = [
            (str(self.cache.sample_ids[row]), reason) for row, reason in results.items() if isinstance(reason, str)
        ]
        return UnitReport(
            unit=unit, done=len(results) - len(failed), failed=failed, seconds=time.perf_counter() - started
        )

    def _load(self, row: int) -> Clip | str:
        """The clip of cache row `row`, or why it cannot be used (recorded in the cache, never raised)."""
        sample_id = str(self.cache.sample_ids[row])
        i = self.rows.get(sample_id)
        if i is None:
            return "not in the annotation index any more"
        if self.index.status[i] != OK:
            record = self.index.record(i)
            return f"{record.status}: {record.detail}" if record.detail else str(record.status)
        try:
            return load_clip(
                video=Path(self.index.video_paths[i]),
                skeleton=self.index.skeleton(i),
                usable_frames=int(self.index.usable_frames[i]),
                frame_size=(int(self.index.width[i]), int(self.index.height[i])),
                spec=self.cfg.spec,
            )
        except (StarError, cv2.error, OSError) as err:
            return f"decode error: {err}"

    def _features(self, batch: list[tuple[int, Clip]]) -> dict[int, dict]:
        from model.tokens import joint_heatmaps, joints_to_cells

        video = torch.from_numpy(np.stack([clip.frames for _, clip in batch]))  # (B, T, S, S, 3) uint8
        video = video.permute(0, 1, 4, 2, 3).to(self.device)  # (B, T, 3, S, S)
        joints_px = torch.from_numpy(np.stack([clip.joints for _, clip in batch]))  # (B, T, P, J, 3)
        with self._compute, torch.inference_mode():
            local, global_ = self.backbone(video)  # (B, T, 256, h', w'), (B, T, 512, h, w)
        map_hw = tuple(local.shape[-2:])
        joints = joints_to_cells(joints_px, input_hw=(self.cfg.size, self.cfg.size), map_hw=map_hw)
        heatmaps = joint_heatmaps(
            joints.flatten(2, 3), size=map_hw, sigma=self.cfg.heatmap_sigma
        )  # (B, T, P*J, h', w')
        local, global_, heatmaps = (x.half().cpu().numpy() for x in (local, global_, heatmaps))
        joints = joints.cpu().numpy()
        return {
            row: {"local": local[b], "global": global_[b], "heatmaps": heatmaps[b], "joints": joints[b]}
            for b, (row, _) in enumerate(batch)
        }


_EXTRACTOR_LOCK = threading.Lock()
# Units run two at a time in a process: while one waits for its first decoded clips or writes its chunks, the
# other keeps the backbone busy (the backbone itself runs one batch at a time, see UnitExtractor._compute).
UNITS_IN_FLIGHT = 2


@functools.lru_cache(maxsize=1)
def _extractor(cfg: ExtractConfig, index_version: tuple[int, int]) -> UnitExtractor:
    return UnitExtractor(cfg)


def extractor_for(cfg: ExtractConfig) -> UnitExtractor:
    """The process's extractor for `cfg`: the backbone is loaded once per process, not once per unit.

    Keyed by the index file's identity too: a rebuilt index (new samples) replaces the file, and the extractor must
    not keep reading the old one.
    """
    stat = os.stat(cfg.index_path)
    with _EXTRACTOR_LOCK:  # units start in several threads at once; build one extractor, and seed it alone
        return _extractor(cfg, (stat.st_ino, stat.st_mtime_ns))


def run_unit(cfg: ExtractConfig, unit: int) -> UnitReport:
    return extractor_for(cfg).run(unit)


@dataclass(frozen=True)
class ExtractSummary:
    out: str
    samples: int
    done: int
    failed: int
    pending: int
    skipped: int
    failures: list[tuple[str, str]]
    seconds: float
    clips_done_now: int
    empty_heatmaps: int = 0  # done clips without a visible joint on the local map
    mostly_empty_heatmaps: int = 0  # done clips with most visible joints off the map
    index_warnings: int = 0  # usable samples with part of their pose outside the video frame
    modality: str = "both"  # "pose": a skeleton cache
    pose_warnings: list[tuple[str, float]] = field(default_factory=list)  # skeleton caches: (sample_id, share inside)

    @property
    def exit_code(self) -> int:
        """0: every selected sample is in the cache; 3: some samples failed (see `failures`)."""
        return EXIT_OK if self.failed == 0 and self.pending == 0 else EXIT_FAILED_SAMPLES

    def format(self, *, max_failures: int = 10) -> str:
        rate = self.clips_done_now / self.seconds if self.seconds > 0 else 0.0
        kind = "skeleton cache" if self.modality == "pose" else "cache"
        lines = [
            f"{kind} {self.out}: {self.done} done, {self.failed} failed, {self.pending} pending of "
            f"{self.samples} samples ({self.skipped} skipped: on the official missing-skeleton list)",
            f"this run: {self.clips_done_now} clips in {self.seconds:.1f} s ({rate:.2f} clips/s)",
        ]
        if self.modality == "pose":
            if self.pose_warnings:
                shown = ", ".join(f"{sample_id} ({share:.0%})" for sample_id, share in self.pose_warnings[:5])
                more = f" and {len(self.pose_warnings) - 5} more" if len(self.pose_warnings) > 5 else ""
                lines.append(
                    f"warning: {len(self.pose_warnings)} sample(s) have visible joints outside their frames, "
                    f"kept as annotated (share inside): {shown}{more}"
                )
        else:
            lines.append(f"joint heat maps: {heatmap_report(self.empty_heatmaps, self.mostly_empty_heatmaps)}")
        if self.index_warnings and self.modality != "pose":
            lines.append(
                f"warning: {self.index_warnings} usable sample(s) have only {POSE_IN_FRAME_FAIL:.0%}-"
                f"{POSE_IN_FRAME_WARN:.0%} of their visible joints inside the video frame"
            )
        for sample_id, reason in self.failures[:max_failures]:
            lines.append(f"  failed {sample_id}: {reason}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (`star cache info {self.out}`)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


def summarize(cfg: ExtractConfig, plan: Plan, reports: list[UnitReport], seconds: float) -> ExtractSummary:
    info = FeatureCache.open(cfg.out).info()
    return ExtractSummary(
        out=cfg.out,
        samples=info.samples,
        done=info.done,
        failed=info.failed,
        pending=info.pending,
        skipped=plan.skipped,
        failures=list(info.failures),
        seconds=seconds,
        clips_done_now=sum(r.done for r in reports),
        empty_heatmaps=info.empty_heatmaps,
        mostly_empty_heatmaps=info.mostly_empty_heatmaps,
        index_warnings=plan.pose_warnings,
    )


def extract(cfg: ExtractConfig) -> ExtractSummary:
    """The whole stage in this process, without Prefect: what tests and benchmarks call. Units run
    `UNITS_IN_FLIGHT` at a time, as in the Prefect flow."""
    started = time.perf_counter()
    preflight(cfg)
    refresh_index(cfg)
    if cfg.skeletons_only:
        return extract_skeletons(cfg, seconds_before=time.perf_counter() - started)
    work = plan(cfg)
    with ThreadPoolExecutor(max_workers=UNITS_IN_FLIGHT, thread_name_prefix="star-unit") as units:
        reports = list(units.map(functools.partial(run_unit, cfg), work.units))
    return summarize(cfg, work, reports, time.perf_counter() - started)
