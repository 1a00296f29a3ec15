"""`star evaluate`: a checkpoint scored on a split of its cache (`evaluate_checkpoint`), with its report files.

The metrics are `pipeline.training.metrics` (shared with training's validation); the files are written by
`pipeline.inference.reports`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from pipeline.core.devices import resolve_device
from pipeline.core.errors import StarError
from pipeline.inference.reports import write_report_files
from pipeline.sources.index import default_index_path
from pipeline.training.checkpoints import check_fingerprint, load_trained_model, read_checkpoint
from pipeline.training.data import CachedClips, VideoClips
from pipeline.training.metrics import ClassificationReport, evaluate_model
from pipeline.training.skeletons import skeleton_dataset
from pipeline.training.splits import cache_split_name, done_rows, read_cache_meta


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
            f"the cache {meta.path} has no extracted (done) samples in split {split_name!r}: "
            "run `star extract` to fill it"
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
        f"{meta['checkpoint']} on {meta['split']}: scored {report.num_samples}/{meta['clips_in_split']} clips of the "
        f"split ({len(report.per_class)} classes present; model inputs: {meta['modality']}{samplings})",
        f"  top-1 {report.top1:.2%}   top-5 {report.top5:.2%}   "
        f"mean per-class accuracy {report.mean_class_accuracy:.2%}   loss {report.loss:.4f}",
        f"  {'class':<40} {'support':>7} {'accuracy':>9} {'precision':>9}",
    ]
    lines += [
        f"  {row.class_name[:40]:<40} {row.support:>7} {row.accuracy:>9.1%} {row.precision:>9.1%}"
        for row in report.per_class
    ]
    lines.append(f"  report: {result.files['report_json']}  confusion: {result.files['confusion_png']}")
    return "\n".join(lines)
