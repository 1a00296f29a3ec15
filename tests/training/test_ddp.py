"""Data-parallel training: `torchrun` with 2 gloo processes on CPU reproduces single-process
training on the same global batch (each rank takes its slice of every global batch, DDP averages the two
half-batch gradients), and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from tests.fixtures.data_files import REPO_ROOT
from tests.fixtures.feature_caches import write_toy_cache

REPO = REPO_ROOT


def _train_args(cache: str, out: Path) -> list[str]:
    # Model dropout is off: each rank draws its own dropout masks. Augmentation stays on: its draws depend
    # on (seed, epoch, sample) only, so both runs see the same augmented clips.
    return [
        "train", "--from-cache", cache, "--out", str(out), "--epochs", "2", "--batch-size", "4",
        "--set", "optimizer=sgd", "--lr", "0.05", "--set", "hflip=0.5", "--set", "joint_dropout=0.2", "--workers", "1",
        "--dim", "32", "--depth", "1", "--heads", "2", "--set", "dropout=0", "--no-progress",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # the ranks below run with one thread each, like this process
def test_two_gloo_processes_match_one_process(tmp_path):
    cache = write_toy_cache(tmp_path / "toy.zarr", n=24).path  # 20 train clips, 2 of them carved for validation
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    result = CliRunner().invoke(app, _train_args(cache, single))
    assert result.exit_code == 0, result.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, *_train_args(cache, ddp)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = torch.load(single / "last.pt", weights_only=True), torch.load(ddp / "last.pt", weights_only=True)
    assert one["world_size"] == 1 and two["world_size"] == 2 and len(two["rng"]) == 2
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, atol=2e-5, rtol=1e-4, msg=name)
    lines_one = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    lines_two = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert len(lines_two) == 2  # rank 0 alone writes the log
    for a, b in zip(lines_one, lines_two, strict=True):
        assert (
            abs(a["train.loss"] - b["train.loss"]) < 1e-5 and a["val.top1"] == b["val.top1"] and b["val.samples"] == 2
        )
    assert len(list((ddp / "tensorboard").iterdir())) == 1
    assert done.stdout.count("trained 2 epochs") == 1  # one summary, from rank 0
