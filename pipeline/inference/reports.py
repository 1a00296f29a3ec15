"""The files of an evaluation report: confusion matrix (CSV and PNG), per-class table and report.json."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.files import write_atomically
from pipeline.training.metrics import ClassificationReport


def write_confusion_csv(report: ClassificationReport, path: str | os.PathLike) -> Path:
    """Rows: true class; columns: predicted class (plus "other classes" when predictions fall outside the split)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *report.confusion_columns])
        for name, row in zip(report.confusion_rows, report.confusion, strict=True):
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
        or f"top-1 {report.top1:.1%}, top-5 {report.top5:.1%}, mean class acc. {report.mean_class_accuracy:.1%} "
        f"(n={report.num_samples})"
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
