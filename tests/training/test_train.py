"""`star train`: configuration layers, schedules, a tiny run that learns, run-directory contents,
bit-exact resume after SIGKILL, the errors users can cause, and the end-to-end fine-tune mode on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.extraction.weights import backbone_from_fingerprint
from pipeline.inference.evaluate import evaluate_checkpoint
from pipeline.training.config import TrainConfig, load_config_file, resolve_config
from pipeline.training.optimization import lr_factor
from pipeline.training.splits import carve_validation
from tests.fixtures.data_files import REPO_ROOT
from tests.fixtures.feature_caches import (
    TOY_BENCHMARK,
    toy_fingerprint,
    write_toy_cache,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = REPO_ROOT
TINY_MODEL = ["--dim", "32", "--depth", "1", "--heads", "2"]


@pytest.fixture(scope="module")
def toy_cache_path(tmp_path_factory) -> str:
    return write_toy_cache(tmp_path_factory.mktemp("toy") / "toy.zarr", signal=4.0).path


def star(*args: str) -> CliRunner.Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def run_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------- configuration


def test_paper_defaults():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size, cfg.epochs) == ("sgd", 2e-4, 0.9, 4, 300)


def test_config_layers_defaults_preset_file_options(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "small"\nlr = 5e-4\nepochs = 7\n[model]\nencoder = "FF"\ndim = 64\n')
    cfg = resolve_config(overrides={"epochs": 3, "model": {"dim": 32}, "cache": "c", "out": "o"}, config_file=toml)
    assert cfg.optimizer == "adamw" and cfg.scheduler == "cosine"  # from the preset the file names
    assert cfg.lr == 5e-4  # the file beats the preset
    assert cfg.epochs == 3  # options beat the file
    assert cfg.model == {"encoder": "FF", "dim": 32}  # tables merge key by key
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"lr": 1, "hflip": 0.5}))
    cfg = resolve_config(overrides={}, config_file=as_json, preset="small")
    assert (
        cfg.lr == 1.0
        and isinstance(cfg.lr, float)
        and cfg.hflip == 0.5
        and cfg.batch_size == load_config_file("small")["batch_size"]
    )


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("lr = [", ".toml", "is not valid TOML"),
        ("{not json", ".json", "is not valid JSON"),
        ("learning_rate = 1", ".toml", "unknown option\\(s\\) learning_rate"),
        ('lr = "fast"', ".toml", "option lr must be float"),
        ("[model]\nwidth = 3", ".toml", "unknown option\\(s\\) width"),
        ('optimizer = "adam"', ".toml", "unknown optimizer 'adam': choose one of sgd, adamw"),
        ('scheduler = "step"', ".toml", "unknown scheduler 'step': choose one of none, cosine"),
        ("lr = 1", ".yaml", "must end in .toml or .json"),
    ],
)
def test_bad_config_files_are_one_line_star_errors(tmp_path, text, suffix, message):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(StarError, match=message) as info:
        resolve_config(overrides={}, config_file=path)
    assert "\n" not in str(info.value)


def test_missing_config_file_and_unknown_preset(tmp_path):
    with pytest.raises(StarError, match="does not exist"):
        resolve_config(overrides={}, config_file=tmp_path / "nope.toml")
    with pytest.raises(StarError, match="unknown preset 'fast'"):
        resolve_config(overrides={}, preset="fast")


def test_warmup_then_cosine():
    factors = [lr_factor(step, total_steps=10, warmup_steps=2, schedule="cosine", min_ratio=0.1) for step in range(11)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))  # monotone decay after warm-up
    assert lr_factor(7, total_steps=10, warmup_steps=0, schedule="none", min_ratio=0.0) == 1.0


# ----------------------------------------------------------------------------------------------- a run that learns


def test_tiny_run_learns_and_fills_the_run_directory(toy_cache_path, tmp_path):
    out = tmp_path / "run"
    result = star(
        "train",
        "--from-cache",
        toy_cache_path,
        "--out",
        out,
        "--config",
        "small",
        "--epochs",
        12,
        "--batch-size",
        8,
        "--lr",
        3e-3,
        "--set",
        f"warmup_epochs={1}",
        "--workers",
        0,
        "--no-progress",
        "--val-split",
        "test",
        *TINY_MODEL,
    )
    assert result.exit_code == 0, result.output
    assert "best val top-1" in result.output and "validation (val.*, best.pt): split toy-xsub-test" in result.output
    lines = run_lines(out / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == list(range(12))
    assert lines[-1]["train.loss"] < lines[0]["train.loss"] - 0.3
    assert max(line["val.top1"] for line in lines) >= 0.75  # 4 classes: chance is 0.25
    assert lines[-1]["val.samples"] == 4 and lines[-1]["train.samples_per_s"] > 0

    config = json.loads((out / "config.json").read_text())
    assert (
        config["model"]["num_classes"] == 10 and config["model"]["dim"] == 32 and config["benchmark"] == TOY_BENCHMARK
    )
    assert config["optimizer"] == "adamw" and config["epochs"] == 12

    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 11 and state["fingerprint"] == toy_fingerprint() and state["class_names"][1] == "action 1"
    assert {"model", "optimizer", "scheduler", "rng", "config", "model_config"} <= set(state)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["best_top1"] == max(line["val.top1"] for line in lines)
    assert lines[best["epoch"]]["val.top1"] == best["best_top1"]

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val/top1")) == 12 and len(events.Scalars("train/loss_step")) == 12 * 3

    # The written config is a valid config file: it reproduces the run's settings.
    again = resolve_config(overrides={}, config_file=out / "config.json")
    assert again.lr == 3e-3 and again.model["dim"] == 32


# ----------------------------------------------------------------------------------------------- validation


def test_validation_is_carved_from_the_training_performers():
    ids = [f"S001C001P{p:03d}R001A{a:03d}" for p in (1, 2, 4, 5, 8) for a in (1, 2, 3)]
    train, val = carve_validation(ids, fraction=0.2)
    performers = lambda names: {name[8:12] for name in names}  # noqa: E731
    assert len(performers(val)) == 1 and not performers(train) & performers(val)  # one whole performer, nobody in both
    assert sorted(train + val) == sorted(ids) and len(val) == 3
    assert carve_validation(list(reversed(ids)), fraction=0.2)[1] == sorted(val, reverse=True)  # a function of the ids
    # Names without performers, or a single performer: whole samples.
    assert len(carve_validation([f"clip{i}" for i in range(10)], fraction=0.3)[1]) == 3
    assert len(carve_validation([f"S001C001P001R001A{a:03d}" for a in range(1, 11)], fraction=0.1)[1]) == 1
    with pytest.raises(StarError, match="cannot carve a validation split from 1 training sample"):
        carve_validation(["S001C001P001R001A001"], fraction=0.1)


def test_default_validation_never_touches_the_test_split(toy_cache_path, tmp_path):
    out = tmp_path / "run"
    assert TrainConfig().val_split == "auto"
    result = star(
        "train",
        "--from-cache",
        toy_cache_path,
        "--out",
        out,
        "--epochs",
        1,
        "--workers",
        0,
        "--no-progress",
        *TINY_MODEL,
    )
    assert result.exit_code == 0, result.output
    assert (
        "validation (val.*, best.pt): 2 samples carved from split toy-xsub-train "
        "(0.1 of its performers, or of each class's samples)" in result.output
    )
    # The toy cache: 16 training samples of 16 performers (P000-P023), 8 test samples; 10 % of 16 performers -> 2.
    assert run_lines(out / "metrics.jsonl")[-1]["val.samples"] == 2
    assert json.loads((out / "config.json").read_text())["val_split"] == "auto"
    _one_line_error(
        star("train", "--from-cache", toy_cache_path, "--out", tmp_path / "bad", "--set", f"val_fraction={1.5}"),
        "val_fraction must be between 0 and 1",
    )


# ----------------------------------------------------------------------------------------------- resume


def _metrics_without_timing(path: Path) -> list[dict]:
    return [
        {k: v for k, v in line.items() if k not in ("train.samples_per_s", "train.seconds")} for line in run_lines(path)
    ]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(toy_cache_path, tmp_path):
    """A run killed with SIGKILL after its first checkpoint, resumed, equals an uninterrupted run bit for bit
    (cosine schedule, model dropout, flip and joint dropout, batches read by two DataLoader workers)."""
    common = [
        "--from-cache",
        toy_cache_path,
        "--epochs",
        "8",
        "--batch-size",
        "4",
        "--set",
        "optimizer=adamw",
        "--lr",
        "2e-3",
        "--set",
        "scheduler=cosine",
        "--set",
        "warmup_epochs=1",
        "--set",
        "hflip=0.5",
        "--set",
        "joint_dropout=0.2",
        "--seed",
        "3",
        "--no-progress",
        "--dim",
        "32",
        "--depth",
        "1",
        "--heads",
        "2",
        "--set",
        "dropout=0.2",
    ]
    reference = tmp_path / "reference"
    assert star("train", *common, "--out", reference, "--workers", 2).exit_code == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "train", *common, "--out", str(killed), "--workers", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (killed / "last.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    epochs_before = len(run_lines(killed / "metrics.jsonl"))
    assert epochs_before < 8, "the run finished before it could be killed"

    result = star("train", "--out", killed, "--resume", "--no-progress")
    assert result.exit_code == 0, result.output
    assert _metrics_without_timing(killed / "metrics.jsonl") == _metrics_without_timing(reference / "metrics.jsonl")
    final, expected = (
        torch.load(killed / "last.pt", weights_only=True),
        torch.load(reference / "last.pt", weights_only=True),
    )
    assert final["model"].keys() == expected["model"].keys()
    assert all(torch.equal(final["model"][k], expected["model"][k]) for k in expected["model"])
    assert final["optimizer"]["state"][0]["exp_avg"].equal(expected["optimizer"]["state"][0]["exp_avg"])


def test_resume_refuses_changed_settings(toy_cache_path, tmp_path):
    out = tmp_path / "run"
    assert (
        star(
            "train",
            "--from-cache",
            toy_cache_path,
            "--out",
            out,
            "--epochs",
            1,
            "--workers",
            0,
            "--no-progress",
            *TINY_MODEL,
        ).exit_code
        == 0
    )
    result = star("train", "--out", out, "--resume", "--lr", 0.1)
    assert result.exit_code == 1 and "different settings (lr)" in result.output


# ----------------------------------------------------------------------------------------------- errors


def _one_line_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_user_errors_are_one_line(toy_cache_path, tmp_path):
    base = ["train", "--out", tmp_path / "run", "--workers", 0, "--no-progress"]
    _one_line_error(star(*base, "--from-cache", tmp_path / "missing.zarr"), "No feature cache at")
    _one_line_error(star(*base, "--from-cache", toy_cache_path, "--resume"), "--resume: no checkpoint")
    _one_line_error(star(*base, "--from-cache", toy_cache_path, "--set", "optimizer=adam"), "unknown optimizer 'adam'")
    _one_line_error(star(*base, "--from-cache", toy_cache_path, "--set", "scheduler=step"), "unknown scheduler 'step'")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    _one_line_error(star(*base, "--from-cache", toy_cache_path, "--config", bad), "is not valid TOML")
    _one_line_error(star(*base, "--from-cache", toy_cache_path, "--set", "train_split=val"), "no split 'val'")

    # Train rows all pending (extraction not run yet): nothing to train on.
    pending = write_toy_cache(tmp_path / "pending.zarr", n=8, pending=tuple(range(8)))
    _one_line_error(star(*base, "--from-cache", pending.path), "no extracted (done) samples in split 'toy-xsub-train'")


def test_resume_against_a_different_cache_lists_the_differing_keys(toy_cache_path, tmp_path):
    out = tmp_path / "run"
    assert (
        star(
            "train",
            "--from-cache",
            toy_cache_path,
            "--out",
            out,
            "--epochs",
            1,
            "--workers",
            0,
            "--no-progress",
            *TINY_MODEL,
        ).exit_code
        == 0
    )
    other = write_toy_cache(
        tmp_path / "other.zarr", fingerprint=toy_fingerprint(weights="kinetics400:mc3_18-a90a0ba3", crop="person")
    )
    result = star("train", "--out", out, "--resume", "--from-cache", other.path, "--epochs", 2)
    _one_line_error(result, "differs from the checkpoint's in crop, weights")


# ----------------------------------------------------------------------------------------------- end to end


def test_end_to_end_fine_tune_on_cpu(video_cache, tmp_path):
    """Cache-stage run, then --end-to-end from it: video decoded by workers, layer4 unfrozen, checkpointing on."""
    cache_run = tmp_path / "cached"
    common = [
        "--from-cache",
        video_cache,
        "--benchmark",
        "ntu120-xsub",
        "--epochs",
        1,
        "--batch-size",
        2,
        "--no-progress",
        *TINY_MODEL,
    ]
    assert star("train", *common, "--out", cache_run, "--workers", 0).exit_code == 0
    e2e = tmp_path / "e2e"
    result = star(
        "train",
        *common,
        "--out",
        e2e,
        "--workers",
        1,
        "--end-to-end",
        "--init",
        cache_run / "last.pt",
        "--set",
        "unfreeze_from=layer4",
        "--set",
        "activation_checkpointing=true",
        "--lr",
        1e-2,
        "--set",
        "optimizer=adamw",
    )
    assert result.exit_code == 0, result.output
    state = torch.load(e2e / "last.pt", weights_only=True)
    initial = torch.load(cache_run / "last.pt", weights_only=True)
    assert state["stage"] == "end_to_end" and "backbone" in state
    frozen = backbone_from_fingerprint(state["fingerprint"]).state_dict()
    tuned = state["backbone"]
    assert not torch.equal(tuned["layer4.0.conv1.0.weight"], frozen["layer4.0.conv1.0.weight"])  # trained
    # Frozen stages are untouched, BatchNorm running statistics included (they stay in eval mode).
    assert "layer3.0.conv1.1.running_mean" in frozen
    assert all(
        torch.equal(tuned[k], frozen[k]) for k in frozen if k.startswith(("stem.", "layer1.", "layer2.", "layer3."))
    )
    assert not torch.equal(state["model"]["head.3.weight"], initial["model"]["head.3.weight"])

    # Evaluating a fine-tuned checkpoint decodes video: the cached maps came from the old backbone.
    evaluation = evaluate_checkpoint(
        checkpoint=e2e / "last.pt", cache=video_cache, split="test", benchmark="ntu120-xsub", workers=0
    )
    assert evaluation.meta["stage"] == "end_to_end" and evaluation.report.num_samples == 4
    assert Path(evaluation.files["report_json"]).is_file()

    # --init must come from a cache of the same fingerprint.
    toy = write_toy_cache(tmp_path / "toy.zarr", n=8)
    mismatch = star(
        "train",
        "--from-cache",
        toy.path,
        "--out",
        tmp_path / "bad",
        "--end-to-end",
        "--init",
        cache_run / "last.pt",
        "--workers",
        0,
    )
    assert mismatch.exit_code == 1 and "differs from the checkpoint's" in mismatch.output
