"""Evaluation of a trained STAR model: metrics, reports and `star evaluate` (`evaluate_checkpoint`).

- Metrics: top-1 and top-5 accuracy over all logits, mean per-class accuracy, a confusion matrix (CSV and
  PNG) and a per-class table, written next to a JSON report. The evaluation pass `evaluate_model` is shared
  with training's validation.

Deliberate choices:
- Top-1/top-5 are computed over every logit (all classes of the dataset), but the confusion matrix, the
  per-class table and the mean per-class accuracy are restricted to the classes that actually occur in the
  evaluated split: the generated dataset uses 10 of NTU120's 120 classes, and a 120×120 matrix of zeros
  hides what matters. Predictions of a class absent from the split are kept in one extra column
  ("other classes") so that every row still sums to its support.
- Counts are kept as one confusion matrix over all classes plus top-k hits and a loss sum; the whole state
  is one float64 vector so that data-parallel ranks merge it with a single all-reduce (exact for counts
  below 2**53).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.core.devices import resolve_device
from pipeline.core.errors import StarError
from pipeline.core.files import write_atomically
from pipeline.sources.index import default_index_path
from pipeline.training.checkpoints import check_fingerprint, load_trained_model, read_checkpoint
from pipeline.training.classifier import autocast_context, batch_to_device
from pipeline.training.data import (
    CachedClips,
    VideoClips,
    cache_split_name,
    done_rows,
    read_cache_meta,
)
from pipeline.training.skeletons import skeleton_dataset

TOP_K = 5
OTHER_CLASSES = "other classes"


# ----------------------------------------------------------------------------------------------- checkpoints


# ------------------------------------------------------------------------------------------------ batches


# ------------------------------------------------------------------------------------------------ metrics


class MetricCounter:
    """Running confusion matrix over all classes, top-k hits and summed loss for one pass over a split."""

    def __init__(self, *, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # (true, predicted)
        self.topk_hits = 0
        self.loss_sum = 0.0

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def update(self, *, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float = 0.0) -> None:
        """Add a batch: logits (B, C), labels (B,), and the summed (not mean) loss of the batch."""
        logits = logits.detach().float().cpu()
        labels = labels.detach().cpu().long()
        k = min(TOP_K, self.num_classes)
        topk = logits.topk(k, dim=1).indices  # (B, k)
        np.add.at(self.confusion, (labels.numpy(), topk[:, 0].numpy()), 1)
        self.topk_hits += int((topk == labels[:, None]).any(dim=1).sum())
        self.loss_sum += float(loss_sum)

    def as_tensor(self) -> torch.Tensor:
        """The whole state as one float64 vector, for `torch.distributed.all_reduce`."""
        flat = torch.from_numpy(self.confusion.reshape(-1).astype(np.float64))
        return torch.cat([flat, torch.tensor([self.topk_hits, self.loss_sum], dtype=torch.float64)])

    def load_tensor(self, state: torch.Tensor) -> None:
        """Replace the state by a (reduced) vector produced by `as_tensor`."""
        n = self.num_classes * self.num_classes
        state = state.detach().cpu().double()
        self.confusion = state[:n].round().long().numpy().reshape(self.num_classes, self.num_classes)
        self.topk_hits = int(round(float(state[n])))
        self.loss_sum = float(state[n + 1])

    def summary(self) -> dict[str, float]:
        """Top-1, top-5, mean per-class accuracy and mean loss; the scalars logged every epoch."""
        count = max(self.count, 1)
        support = self.confusion.sum(axis=1)
        present = support > 0
        recall = np.diag(self.confusion)[present] / support[present]
        return {
            "top1": float(np.trace(self.confusion) / count),
            "top5": float(self.topk_hits / count),
            "mean_class_accuracy": float(recall.mean()) if present.any() else 0.0,
            "loss": float(self.loss_sum / count),
            "samples": float(self.count),
        }

    def report(self, *, class_names: list[str]) -> ClassificationReport:
        """The full report, restricted to the classes present in the evaluated split."""
        if len(class_names) != self.num_classes:
            raise StarError(
                f"{len(class_names)} class names for a {self.num_classes}-class model: the cache and checkpoint disagree"
            )
        support = self.confusion.sum(axis=1)
        present = np.flatnonzero(support > 0)
        inside = self.confusion[np.ix_(present, present)]  # (present, present)
        outside = self.confusion[present].sum(axis=1) - inside.sum(axis=1)  # (present,) predicted as absent classes
        predicted = inside.sum(axis=0)
        rows = [
            PerClassRow(
                class_id=int(c),
                class_name=class_names[c],
                support=int(support[c]),
                correct=int(self.confusion[c, c]),
                accuracy=float(self.confusion[c, c] / support[c]),
                precision=float(self.confusion[c, c] / predicted[i]) if predicted[i] else 0.0,
            )
            for i, c in enumerate(present)
        ]
        matrix = inside if not outside.any() else np.concatenate([inside, outside[:, None]], axis=1)
        columns = [class_names[c] for c in present] + ([OTHER_CLASSES] if outside.any() else [])
        metrics = self.summary()
        return ClassificationReport(
            num_samples=self.count,
            num_classes_model=self.num_classes,
            top1=metrics["top1"],
            top5=metrics["top5"],
            mean_class_accuracy=metrics["mean_class_accuracy"],
            loss=metrics["loss"],
            per_class=rows,
            confusion_rows=[class_names[c] for c in present],
            confusion_columns=columns,
            confusion=matrix.tolist(),
        )


@dataclass(frozen=True)
class PerClassRow:
    class_id: int
    class_name: str
    support: int
    correct: int
    accuracy: float  # recall of the class
    precision: float


@dataclass(frozen=True)
class ClassificationReport:
    """Metrics of one split; the confusion matrix rows are the classes present, its columns may add "other"."""

    num_samples: int
    num_classes_model: int
    top1: float
    top5: float
    mean_class_accuracy: float
    loss: float
    per_class: list[PerClassRow]
    confusion_rows: list[str]
    confusion_columns: list[str]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate_model(
    *,
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    num_classes: int,
    device: torch.device,
    amp: bool = True,
) -> MetricCounter:
    """One pass in eval mode: logits for every batch, accumulated into a `MetricCounter` (local to this rank)."""
    was_training = model.training
    model.eval()
    counter = MetricCounter(num_classes=num_classes)
    for batch in batches:
        batch = batch_to_device(batch, device)
        with autocast_context(device=device, enabled=amp):
            logits = model(batch)
        logits = logits.float()
        loss_sum = nn.functional.cross_entropy(logits, batch["label"], reduction="sum")
        counter.update(logits=logits, labels=batch["label"], loss_sum=float(loss_sum))
    model.train(was_training)
    return counter


# ------------------------------------------------------------------------------------------------ writers


def write_confusion_csv(report: ClassificationReport, path: str | os.PathLike) -> Path:
    """Rows: true class; columns: predicted class (plus "other classes" when predictions fall outside the split)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *report.confusion_columns])
        for name, row in zip(report.confusion_rows, report.confusion):
            writer.writerow([name, *row])
    return path


def write_per_class_csv(report: ClassificationReport, path: str | os.PathLike) -> Path:
    """One row per class present in the split: id, name, support, correct, accuracy (recall), precision."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "class_name", "support", "correct", "accuracy", "precision"])
        for row in report.per_class:
            writer.writerow(
                [row.class_id, row.class_name, row.support, row.correct, f"{row.accuracy:.4f}", f"{row.precision:.4f}"]
            )
    return path


def write_confusion_png(report: ClassificationReport, path: str | os.PathLike, *, title: str = "") -> Path:
    """Row-normalised confusion matrix with class names and counts (counts only up to 30 classes, for legibility)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    path = Path(path)
    counts = np.asarray(report.confusion, dtype=np.int64).reshape(
        len(report.confusion_rows), len(report.confusion_columns)
    )
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n_rows, n_cols = counts.shape
    side = float(np.clip(0.45 * max(n_rows, n_cols) + 3.0, 5.0, 30.0))
    fig, ax = plt.subplots(figsize=(side * 1.1, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_cols), labels=report.confusion_columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), labels=report.confusion_rows, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if max(n_rows, n_cols) <= 30:
        for i in range(n_rows):
            for j in range(n_cols):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    ax.set_title(
        title
        or f"top-1 {report.top1:.1%}, top-5 {report.top5:.1%}, mean class acc. {report.mean_class_accuracy:.1%} (n={report.num_samples})"
    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report_files(
    report: ClassificationReport, *, out_dir: str | os.PathLike, meta: dict[str, Any]
) -> dict[str, str]:
    """Write report.json, confusion.csv, confusion.png and per_class.csv into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_csv": str(write_confusion_csv(report, out / "confusion.csv")),
        "confusion_png": str(write_confusion_png(report, out / "confusion.png")),
        "per_class_csv": str(write_per_class_csv(report, out / "per_class.csv")),
        "report_json": str(out / "report.json"),
    }
    payload = {**meta, **report.to_dict(), "files": files}
    write_atomically(out / "report.json", lambda handle: handle.write(json.dumps(payload, indent=2).encode()))
    return files


# ------------------------------------------------------------------------------------------------ checkpoints → models


@dataclass(frozen=True)
class EvaluationResult:
    report: ClassificationReport
    meta: dict[str, Any]
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, **self.report.to_dict(), "files": self.files}


def evaluate_checkpoint(
    *,
    checkpoint: str | os.PathLike,
    cache: str | os.PathLike,
    split: str = "test",
    benchmark: str | None = None,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    workers: int = 2,
    index: str | os.PathLike | None = None,
    weights: str = "",
    device: str = "auto",
) -> EvaluationResult:
    """Evaluate a checkpoint on one split of a cache and write the report files (default: next to the checkpoint).

    A cache-stage checkpoint reads the cached maps; an end-to-end checkpoint (fine-tuned backbone) decodes
    the same samples from video through the annotation index, since the cached maps came from the old backbone.
    """
    state = read_checkpoint(checkpoint)
    meta = read_cache_meta(cache)
    check_fingerprint(expected=state["fingerprint"], actual=meta.fingerprint, what=f"evaluate {checkpoint}")
    store = meta.open()
    split_name = cache_split_name(
        store, benchmark=state.get("benchmark", "") if benchmark is None else benchmark, split=split
    )
    rows = done_rows(store, split_name=split_name)
    if not rows.size:
        raise StarError(
            f"the cache {meta.path} has no extracted (done) samples in split {split_name!r}: run `star extract` to fill it"
        )
    end_to_end = state.get("stage") == "end_to_end"
    test_clips = int(state["config"].get("test_clips", 1))
    if meta.skeletons:
        dataset = skeleton_dataset(
            cache=store, rows=rows, cfg=state["config"], layout=meta.layout, train=False, test_clips=test_clips
        )
    elif end_to_end:
        index_path = (
            Path(index)
            if index
            else default_index_path(cache_path=meta.path, dataset=str(meta.fingerprint.get("dataset", "")))
        )
        dataset = VideoClips(index_path=index_path, sample_ids=store.sample_ids[rows], spec=meta.clip_spec)
    else:
        dataset = CachedClips(path=meta.path, split_name=split_name)
    torch_device = resolve_device(device)
    model = load_trained_model(state, video=end_to_end, weights=weights).to(torch_device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch_device.type == "cuda")
    counter = evaluate_model(model=model, batches=loader, num_classes=len(state["class_names"]), device=torch_device)
    report = counter.report(class_names=list(state["class_names"]))
    info = {
        "checkpoint": str(checkpoint),
        "cache": meta.path,
        "split": split_name,
        "epoch": state.get("epoch"),
        "stage": state.get("stage", "cache"),
        "modality": state["model_config"].get("modality", "both"),
        "clips_in_split": int(np.sum(store.split(split_name))),  # scored: num_samples; the rest failed extraction
        "test_clips": test_clips if meta.skeletons else 1,
    }
    target = Path(out_dir) if out_dir is not None else Path(checkpoint).parent / f"eval-{split_name}"
    files = write_report_files(report, out_dir=target, meta=info)
    return EvaluationResult(report=report, meta=info, files=files)


def format_evaluation(result: EvaluationResult) -> str:
    """Human-readable summary: headline metrics, then the per-class table."""
    report = result.report
    meta = result.meta
    samplings = f", {meta['test_clips']} samplings per clip" if meta.get("test_clips", 1) > 1 else ""
    lines = [
        f"{meta['checkpoint']} on {meta['split']}: scored {report.num_samples}/{meta['clips_in_split']} clips of the split "
        f"({len(report.per_class)} classes present; model inputs: {meta['modality']}{samplings})",
        f"  top-1 {report.top1:.2%}   top-5 {report.top5:.2%}   mean per-class accuracy {report.mean_class_accuracy:.2%}   loss {report.loss:.4f}",
        f"  {'class':<40} {'support':>7} {'accuracy':>9} {'precision':>9}",
    ]
    lines += [
        f"  {row.class_name[:40]:<40} {row.support:>7} {row.accuracy:>9.1%} {row.precision:>9.1%}"
        for row in report.per_class
    ]
    lines.append(f"  report: {result.files['report_json']}  confusion: {result.files['confusion_png']}")
    return "\n".join(lines)
