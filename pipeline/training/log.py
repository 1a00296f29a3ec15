"""What a training run reports while it runs: metrics.jsonl, TensorBoard scalars and a progress bar or a line
per epoch on stderr (rank 0 only)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from torch.utils.tensorboard import SummaryWriter

from pipeline.core.progress import progress_bar
from pipeline.training.config import TrainConfig


class RunLog:
    """metrics.jsonl (one JSON object per epoch) and TensorBoard scalars; inert on ranks other than 0."""

    def __init__(self, *, run_dir: Path, enabled: bool, start_epoch: int, start_step: int) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            # A resumed run repeats the epochs after its checkpoint: drop their stale lines.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] < start_epoch
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        # purge_step discards events a crashed run wrote after the checkpoint we resume from.
        self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step if start_step else None)

    def step(self, *, global_step: int, loss: float, lr: float) -> None:
        if self.tb is not None:
            self.tb.add_scalar("train/loss_step", loss, global_step)
            self.tb.add_scalar("train/lr", lr, global_step)

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "global_step"):
                self.tb.add_scalar(key.replace(".", "/", 1), value, record["epoch"] + 1)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """rich progress bar with loss, accuracy and samples/s on an interactive terminal; one line per epoch otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._progress = None

    def start(self, *, description: str, total: int) -> None:
        if not self.live:
            return
        self._progress = ExitStack()
        self._update = self._progress.enter_context(
            progress_bar(description, total=total, console=self.console, transient=True)
        )

    def update(self, *, loss: float, acc: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._update(advance=1, note=f"loss {loss:.4f}  acc {acc:.1%}  {samples_per_s:.1f} samples/s")

    def stop(self, line: str) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.enabled:
            self.console.print(line, highlight=False, soft_wrap=True)


def epoch_line(record: dict[str, Any], cfg: TrainConfig) -> str:
    line = (
        f"epoch {record['epoch'] + 1}/{cfg.epochs}  loss {record['train.loss']:.4f}  "
        f"train top-1 {record['train.top1']:.1%}  {record['train.samples_per_s']:.1f} samples/s"
    )
    if "val.top1" in record:
        line += f"  val top-1 {record['val.top1']:.1%}  top-5 {record['val.top5']:.1%}"
    return line
