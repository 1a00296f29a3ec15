"""The metrics of a pass over a split: shared by training's validation and `star evaluate`.

- Metrics: top-1 and top-5 accuracy over all logits, mean per-class accuracy, a confusion matrix and a
  per-class table. `evaluate_model` is the evaluation pass.

Deliberate choices:
- Top-1/top-5 are computed over every logit (all classes of the dataset), but the confusion matrix, the
  per-class table and the mean per-class accuracy are restricted to the classes that actually occur in the
  evaluated split: the generated dataset uses a dozen of NTU120's 120 classes, and a 120×120 matrix of zeros
  hides what matters. Predictions of a class absent from the split are kept in one extra column
  ("other classes") so that every row still sums to its support.
- Counts are kept as one confusion matrix over all classes plus top-k hits and a loss sum; the whole state
  is one float64 vector so that data-parallel ranks merge it with a single all-reduce (exact for counts
  below 2**53).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import StarError
from pipeline.training.classifier import autocast_context, batch_to_device

TOP_K = 5
OTHER_CLASSES = "other classes"


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
                f"{len(class_names)} class names for a {self.num_classes}-class model: "
                "the cache and checkpoint disagree"
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
