"""Pictures of a STAR run, drawn with matplotlib's Agg backend.

- `plot_training_curves`: loss and accuracy per epoch from a run's `metrics.jsonl` (written by
  `pipeline/training/log.py`).
- `plot_per_class_accuracy`: per-class accuracy (recall) bars of an evaluation report, worst class first.
- `plot_frame_importance`: the paper's Fig. 6 — the sampled frames with their skeletons drawn, and under them the
  relative frame importance (attention rollout, §4.3) of one or more models as bar charts aligned with the frames
  (e.g. FAttn only vs. the full STAR model), the top-3 frames of each model marked.
- `plot_cache_statistics`: `star cache info --plot`: samples done/failed/pending per split, size on disk per array,
  done samples per class and the failure reasons.

Every figure has a fixed size in pixels (no `bbox_inches="tight"`, which would change it with the text), given by
the `*_size` functions, so callers and tests know what to expect; the layout engine keeps labels inside it.
The confusion matrix is drawn by `pipeline.inference.evaluate.write_confusion_png`, next to the metrics it belongs to.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.core.errors import StarError  # noqa: E402
from pipeline.core.text import human_bytes, shorten  # noqa: E402

DPI = 100
TOP_FRAMES = 3  # the paper discusses each model's top-three frames
PERSON_COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7cff4f")  # bright on dark and light backgrounds
BAR_COLOUR, TOP_BAR_COLOUR = "#9ecae1", "#08519c"
STATUS_COLOURS = {"done": "#31a354", "failed": "#de2d26", "pending": "#bdbdbd"}


def _figsize(pixels: tuple[int, int]) -> tuple[float, float]:
    """Inches for an exact pixel size at DPI; Agg truncates width x dpi, so stay a hair above the integer."""
    return ((pixels[0] + 0.01) / DPI, (pixels[1] + 0.01) / DPI)


def _save(fig: Figure, out: str | os.PathLike) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # fixed canvas: the *_size functions give its pixel size
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ training curves


def read_metrics_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run's metrics.jsonl, in epoch order."""
    path = Path(path)
    if not path.is_file():
        raise StarError(f"no training log at {path}: pass the run directory of `star train` (it holds metrics.jsonl)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise StarError(
                f"{path}, line {number} is not JSON ({err.msg}): the log is damaged; re-run training"
            ) from err
    if not records:
        raise StarError(f"{path} has no epochs yet: train for at least one epoch first")
    return sorted(records, key=lambda record: record["epoch"])


TRAINING_CURVES_INCHES = (12.0, 4.5)


def training_curves_size() -> tuple[int, int]:
    """(width, height) in pixels of `plot_training_curves`."""
    return round(TRAINING_CURVES_INCHES[0] * DPI), round(TRAINING_CURVES_INCHES[1] * DPI)


def plot_training_curves(*, records: Sequence[dict[str, Any]], out: str | os.PathLike, title: str = "") -> Path:
    """Loss (train, validation) and accuracy (train top-1, validation top-1/top-5) per epoch, plus the learning rate."""
    if not records:
        raise StarError("no training records to plot: train for at least one epoch first")
    epochs = np.array([record["epoch"] + 1 for record in records])

    def series(key: str) -> np.ndarray | None:
        values = [record.get(key) for record in records]
        return None if all(v is None for v in values) else np.array([np.nan if v is None else v for v in values], float)

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=_figsize(training_curves_size()), layout="constrained")
    marker = "o" if len(epochs) <= 40 else None
    for key, label, style in (("train.loss", "train", "-"), ("val.loss", "validation", "--")):
        values = series(key)
        if values is not None:
            loss_ax.plot(epochs, values, style, marker=marker, markersize=3, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    lr = series("lr")
    if lr is not None:
        lr_ax = loss_ax.twinx()
        lr_ax.plot(epochs, lr, ":", color="grey", label="learning rate")
        lr_ax.set_ylabel("learning rate", color="grey")
        lr_ax.tick_params(axis="y", colors="grey")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        lines = loss_ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
        loss_ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    else:
        loss_ax.legend(loc="upper right")
    for key, label, style in (
        ("train.top1", "train top-1", "-"),
        ("val.top1", "validation top-1", "--"),
        ("val.top5", "validation top-5", ":"),
    ):
        values = series(key)
        if values is not None:
            acc_ax.plot(epochs, 100 * values, style, marker=marker, markersize=3, label=label)
    best = series("val.top1")
    if best is not None and np.isfinite(best).any():
        at = int(np.nanargmax(best))
        acc_ax.annotate(
            f"best {100 * best[at]:.1f}% (epoch {epochs[at]})",
            xy=(epochs[at], 100 * best[at]),
            xytext=(0.5, 0.08),
            textcoords="axes fraction",
            ha="center",
            arrowprops={"arrowstyle": "->", "color": "black"},
        )
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 102))
    acc_ax.legend(loc="best")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, epochs[-1] + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


# ------------------------------------------------------------------------------------------ per-class accuracy


def per_class_accuracy_size(classes: int) -> tuple[int, int]:
    """(width, height) in pixels of `plot_per_class_accuracy` for `classes` bars."""
    return 900, _per_class_height(classes)


def _per_class_height(classes: int) -> int:
    return int(np.clip(120 + 26 * classes, 300, 3000))


def plot_per_class_accuracy(*, rows: Sequence[Any], out: str | os.PathLike, title: str = "") -> Path:
    """Horizontal bars of accuracy (recall) per class, worst first, with correct/support at each bar.

    `rows` are `pipeline.inference.evaluate.PerClassRow`s (anything with class_name, accuracy, correct, support).
    """
    if not rows:
        raise StarError("no per-class results to plot: the evaluated split is empty")
    ordered = sorted(rows, key=lambda row: (row.accuracy, row.class_name))
    width, height = per_class_accuracy_size(len(ordered))
    fig, ax = plt.subplots(figsize=_figsize((width, height)), layout="constrained")
    positions = np.arange(len(ordered))
    accuracy = np.array([100 * row.accuracy for row in ordered])
    colours = plt.get_cmap("RdYlGn")(np.clip(accuracy / 100, 0, 1) * 0.8 + 0.1)
    ax.barh(positions, accuracy, color=colours, edgecolor="black", linewidth=0.4)
    for y, row in zip(positions, ordered, strict=True):
        ax.text(
            min(100 * row.accuracy, 100) + 1,
            y,
            f"{100 * row.accuracy:.0f}%  ({row.correct}/{row.support})",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(positions, labels=[shorten(row.class_name, 38) for row in ordered], fontsize=8)
    ax.set_xlim(0, 125)  # room for the labels right of a 100% bar
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("accuracy (%) = correct / support")
    mean = float(np.mean(accuracy))
    ax.axvline(mean, color="black", linestyle="--", linewidth=1)
    ax.text(
        mean, 1.005, f"mean {mean:.1f}%", fontsize=8, ha="center", va="bottom", transform=ax.get_xaxis_transform()
    )  # x in accuracy, y just above the axes
    ax.set_ylim(len(ordered) - 0.4, -0.6)  # worst class on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "per-class accuracy", pad=16)
    return _save(fig, out)


# ------------------------------------------------------------------------------------------ frame importance


@dataclass(frozen=True)
class ImportanceSeries:
    """One model's relative frame importance for the clip: T scores summing to 1."""

    label: str  # e.g. "FAttn only (FF/FF)"
    scores: Sequence[float]
    note: str = ""  # e.g. the predicted class


FRAME_INCHES = 1.25  # width of one frame thumbnail
BARS_INCHES = 2.3  # height of one model's bar chart
TITLE_INCHES = 0.6


def frame_importance_size(*, frames: int, series: int, aspect: float) -> tuple[int, int]:
    """(width, height) in pixels of `plot_frame_importance` for T frames, `series` bar charts, frame height/width."""
    width, height = _frame_importance_inches(frames=frames, series=series, aspect=aspect)
    return round(width * DPI), round(height * DPI)


def _frame_importance_inches(*, frames: int, series: int, aspect: float) -> tuple[float, float]:
    thumb_width = FRAME_INCHES if frames <= 16 else 20.0 / frames
    width = max(thumb_width * frames, 8.0) + 0.9  # + the bar charts' y-axis labels
    strip = width * 0.93 / frames * aspect + 0.3  # one row of thumbnails keeps the frames' aspect ratio
    return width, TITLE_INCHES + strip + BARS_INCHES * series


def skeleton_box(
    joints: np.ndarray, *, width: int, height: int, margin: float = 0.15
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around every confident joint of a clip (T, P, J, 3), enlarged by `margin` of its longer side
    on each side and kept inside the W x H frame; the whole frame when no joint is confident.

    The frame strip of `plot_frame_importance` zooms to it: NTU actors fill a small part of the frame.
    """
    frame = (-0.5, -0.5, width - 0.5, height - 0.5)
    confident = joints[..., 2] > 0
    if not confident.any():
        return frame
    xs, ys = joints[..., 0][confident], joints[..., 1][confident]
    pad = margin * max(xs.max() - xs.min(), ys.max() - ys.min(), 1.0)
    return (
        max(frame[0], xs.min() - pad),
        max(frame[1], ys.min() - pad),
        min(frame[2], xs.max() + pad),
        min(frame[3], ys.max() + pad),
    )


def box_aspect(box: tuple[float, float, float, float]) -> float:
    """Height / width of a box, limited to [0.4, 2.5] so that thumbnails stay readable."""
    x0, y0, x1, y1 = box
    return float(np.clip((y1 - y0) / max(x1 - x0, 1e-6), 0.4, 2.5))


def plot_frame_importance(
    *,
    frames: np.ndarray,
    joints: np.ndarray,
    bones: Sequence[tuple[int, int]],
    series: Sequence[ImportanceSeries],
    frame_indices: Sequence[int],
    out: str | os.PathLike,
    title: str = "",
    box: tuple[float, float, float, float] | None = None,
) -> Path:
    """Fig. 6: the T sampled frames with skeletons, and one aligned bar chart of frame importance per model.

    frames (T, H, W, 3) uint8 RGB; joints (T, P, J, 3) as (x, y, confidence) in pixels of those frames (pixel
    centres at integers); a joint with confidence <= 0 is not drawn, nor are its bones. `box` (x0, y0, x1, y1), e.g.
    `skeleton_box(...)`, is the part of the frames shown; default: the whole frame. The figure's size is
    `frame_importance_size(frames=T, series=len(series), aspect=box_aspect(box))`.
    """
    frames = np.asarray(frames)
    joints = np.asarray(joints, dtype=np.float64)
    count = frames.shape[0]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise StarError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if joints.ndim != 4 or joints.shape[0] != count or joints.shape[-1] != 3:
        raise StarError(f"joints must be (T={count}, persons, joints, 3), got shape {joints.shape}")
    if not series:
        raise StarError("no frame-importance scores to plot")
    for item in series:
        if len(item.scores) != count:
            raise StarError(f"{item.label}: {len(item.scores)} scores for {count} frames")
    if box is None:
        box = (-0.5, -0.5, frames.shape[2] - 0.5, frames.shape[1] - 0.5)
    aspect = box_aspect(box)
    width, height = _frame_importance_inches(frames=count, series=len(series), aspect=aspect)
    fig = plt.figure(figsize=_figsize(frame_importance_size(frames=count, series=len(series), aspect=aspect)))
    strip = width * 0.93 / count * aspect + 0.3
    ratios = [strip] + [BARS_INCHES] * len(series)
    grid = fig.add_gridspec(
        1 + len(series),
        count,
        height_ratios=ratios,
        left=0.9 / width,
        right=0.99,
        top=1 - TITLE_INCHES / height,
        bottom=0.45 / height,
        wspace=0.04,
        hspace=0.45,
    )
    uniform = 1.0 / count
    for t in range(count):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(frames[t])  # equal aspect: the cell is sized for the box, so the frame is never stretched
        _draw_skeletons(ax, joints[t], bones)
        ax.set_xlim(box[0], box[2])
        ax.set_ylim(box[3], box[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{t + 1}: #{frame_indices[t]}", fontsize=7, pad=2)
    for row, item in enumerate(series, start=1):
        ax = fig.add_subplot(grid[row, :])
        scores = np.asarray(item.scores, dtype=np.float64)
        top = np.argsort(-scores, kind="stable")[:TOP_FRAMES]
        colours = [TOP_BAR_COLOUR if t in top else BAR_COLOUR for t in range(count)]
        ax.bar(np.arange(count), scores, width=0.8, color=colours, edgecolor="black", linewidth=0.4)
        for rank, t in enumerate(top, start=1):
            ax.text(t, scores[t], f"#{rank}", ha="center", va="bottom", fontsize=8, color=TOP_BAR_COLOUR)
        ax.axhline(uniform, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(-0.5, count - 0.5)
        ax.set_ylim(0, max(float(scores.max()), uniform) * 1.25)
        ax.set_xticks(np.arange(count), labels=[str(t + 1) for t in range(count)], fontsize=8)
        ax.set_ylabel("importance")
        ax.set_title(f"{item.label}" + (f" — {item.note}" if item.note else ""), fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        if row == len(series):
            ax.set_xlabel("input frame (dark bars: the model's top-3 frames; dashed line: uniform importance 1/T)")
    fig.suptitle(title or "relative frame importance (attention rollout)", fontsize=11)
    return _save(fig, out)


def _draw_skeletons(ax: plt.Axes, joints: np.ndarray, bones: Sequence[tuple[int, int]]) -> None:
    """One frame's persons (P, J, 3): bones between visible joints, then the joints on top."""
    for person, points in enumerate(joints):
        visible = points[:, 2] > 0
        if not visible.any():
            continue
        colour = PERSON_COLOURS[person % len(PERSON_COLOURS)]
        outline = [patheffects.withStroke(linewidth=3.2, foreground="black")]  # visible on any clothing or background
        for a, b in bones:
            if visible[a] and visible[b]:
                ax.plot(
                    points[[a, b], 0],
                    points[[a, b], 1],
                    color=colour,
                    linewidth=1.6,
                    solid_capstyle="round",
                    path_effects=outline,
                )
        ax.scatter(
            points[visible, 0], points[visible, 1], s=4, color=colour, edgecolors="black", linewidths=0.3, zorder=3
        )


# ------------------------------------------------------------------------------------------ cache statistics


@dataclass(frozen=True)
class CacheStatistics:
    """What `star cache info --plot` draws, gathered from the store (see `cache_statistics`)."""

    path: str
    splits: dict[str, dict[str, int]]  # split name -> {"done", "failed", "pending"} sample counts
    array_bytes: dict[str, int]  # array name -> bytes stored on disk
    done_per_class: dict[str, int]  # class name -> done samples
    failure_reasons: dict[str, int]  # reason (first words) -> samples
    done: int
    bytes_on_disk: int


def cache_statistics(path: str) -> CacheStatistics:
    """Counts per split and status, bytes per array, done samples per class and failure reasons of a cache."""
    import zarr

    from pipeline.extraction.cache_layout import SampleStatus
    from pipeline.extraction.store import FEATURE_NAMES, FeatureCache

    cache = FeatureCache.open(path, mode="r")
    info = cache.info()
    status = cache.status()
    states = {"done": SampleStatus.DONE, "failed": SampleStatus.FAILED, "pending": SampleStatus.PENDING}
    splits = {"all": {name: int(np.sum(status == value)) for name, value in states.items()}}
    for name in cache.split_names:
        member = cache.split(name)
        splits[name] = {state: int(np.sum(member & (status == value))) for state, value in states.items()}
    group = zarr.open_group(cache.path, mode="r")
    stored = set(group.array_keys())
    array_bytes = {}
    for name in FEATURE_NAMES:
        for key in (name, f"{name}_scale"):
            if key in stored:
                array_bytes[key] = int(group[key].nbytes_stored())
    array_bytes["other (status, ids, splits, metadata)"] = max(0, info.bytes_on_disk - sum(array_bytes.values()))
    class_names = list(info.fingerprint.get("class_names", []))
    done_labels = cache.labels[status == SampleStatus.DONE]
    per_class = Counter(
        class_names[label] if 0 <= label < len(class_names) else f"class {label}" for label in done_labels.tolist()
    )
    reasons = Counter(_reason_kind(reason) for _, reason in info.failures)
    return CacheStatistics(
        path=cache.path,
        splits=splits,
        array_bytes=array_bytes,
        done_per_class=dict(sorted(per_class.items())),
        failure_reasons=dict(reasons.most_common()),
        done=info.done,
        bytes_on_disk=info.bytes_on_disk,
    )


def _reason_kind(reason: str) -> str:
    """The category of a failure reason: the part before the first colon, shortened."""
    return shorten(reason.split(":", 1)[0].strip() or "unknown", 40)


CACHE_STATISTICS_INCHES = (13.0, 8.0)


def cache_statistics_size() -> tuple[int, int]:
    """(width, height) in pixels of `plot_cache_statistics`."""
    return round(CACHE_STATISTICS_INCHES[0] * DPI), round(CACHE_STATISTICS_INCHES[1] * DPI)


def plot_cache_statistics(*, stats: CacheStatistics, out: str | os.PathLike) -> Path:
    """Four panels: status per split, bytes per array, done samples per class, failure reasons."""
    fig, axes = plt.subplots(2, 2, figsize=_figsize(cache_statistics_size()), layout="constrained")
    status_ax, bytes_ax, class_ax, failure_ax = axes.ravel()

    names = list(stats.splits)
    left = np.zeros(len(names))
    for state, colour in STATUS_COLOURS.items():
        counts = np.array([stats.splits[name][state] for name in names])
        status_ax.barh(names, counts, left=left, color=colour, label=state, edgecolor="black", linewidth=0.3)
        left += counts
    for y, total in enumerate(left):
        status_ax.text(total, y, f" {int(total)}", va="center", fontsize=8)
    status_ax.invert_yaxis()
    status_ax.set_xlim(0, max(float(left.max()), 1.0) * 1.15)
    status_ax.set(xlabel="samples", title="samples per split")
    status_ax.tick_params(axis="y", labelsize=8)
    status_ax.legend(loc="lower right", fontsize=8)

    arrays = list(stats.array_bytes)
    megabytes = np.array([stats.array_bytes[name] / 1e6 for name in arrays])
    bytes_ax.barh(arrays, megabytes, color="#6baed6", edgecolor="black", linewidth=0.3)
    for y, name in enumerate(arrays):
        size = stats.array_bytes[name]
        per_clip = f", {human_bytes(size / stats.done)}/clip" if stats.done else ""
        bytes_ax.text(size / 1e6, y, f" {human_bytes(size)}{per_clip}", va="center", fontsize=8)
    bytes_ax.invert_yaxis()
    bytes_ax.set_xlim(0, max(float(megabytes.max()), 1e-3) * 1.6)
    bytes_ax.tick_params(axis="y", labelsize=8)
    per_done = f"; {human_bytes(stats.bytes_on_disk / stats.done)} per done clip" if stats.done else ""
    bytes_ax.set(xlabel="MB on disk", title=f"size on disk: {human_bytes(stats.bytes_on_disk)}{per_done}")

    if stats.done_per_class:
        classes = list(stats.done_per_class)
        class_ax.bar(
            range(len(classes)), list(stats.done_per_class.values()), color="#74c476", edgecolor="black", linewidth=0.3
        )
        many = len(classes) > 30
        labels = [str(i) for i in range(len(classes))] if many else [shorten(name, 22) for name in classes]
        step = max(1, len(classes) // 60)
        class_ax.set_xticks(
            range(0, len(classes), step),
            labels=labels[::step],
            rotation=0 if many else 55,
            ha="center" if many else "right",
            fontsize=7,
        )
        class_ax.set(ylabel="done samples", title=f"done samples per class ({len(classes)} classes)")
    else:
        class_ax.text(0.5, 0.5, "no sample is done yet", ha="center", va="center", transform=class_ax.transAxes)
        class_ax.set(title="done samples per class", xticks=[], yticks=[])

    if stats.failure_reasons:
        reasons = list(stats.failure_reasons)
        failure_ax.barh(
            reasons,
            list(stats.failure_reasons.values()),
            color=STATUS_COLOURS["failed"],
            edgecolor="black",
            linewidth=0.3,
        )
        failure_ax.invert_yaxis()
        failure_ax.tick_params(axis="y", labelsize=8)
        failure_ax.xaxis.get_major_locator().set_params(integer=True)
        failure_ax.set(xlabel="samples", title=f"failure reasons ({sum(stats.failure_reasons.values())} failed)")
    else:
        failure_ax.text(
            0.5,
            0.5,
            "no failed samples",
            ha="center",
            va="center",
            fontsize=12,
            color=STATUS_COLOURS["done"],
            transform=failure_ax.transAxes,
        )
        failure_ax.set(title="failure reasons", xticks=[], yticks=[])
    fig.suptitle(f"feature cache {shorten(stats.path, 90)}")
    return _save(fig, out)
