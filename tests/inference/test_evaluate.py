"""Evaluation metrics, report writers, checkpoint reading and `star evaluate`."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipeline.core.differences import differing_keys
from pipeline.core.errors import StarError
from pipeline.inference.evaluate import evaluate_checkpoint
from pipeline.inference.reports import write_report_files
from pipeline.training.checkpoints import check_fingerprint, load_trained_model, read_checkpoint
from pipeline.training.config import resolve_config
from pipeline.training.data import CachedClips
from pipeline.training.loop import train
from pipeline.training.metrics import OTHER_CLASSES, MetricCounter
from tests.fixtures.feature_caches import toy_fingerprint, write_toy_cache

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_NAMES = [f"class {c}" for c in range(8)]


def _logits_ranking(rankings: list[list[int]], num_classes: int = 8) -> torch.Tensor:
    """Logits whose descending order starts with the given classes."""
    logits = torch.zeros(len(rankings), num_classes)
    for i, ranking in enumerate(rankings):
        for position, c in enumerate(ranking):
            logits[i, c] = 10.0 - position
    return logits


def _counter() -> MetricCounter:
    # Split holds classes 1, 3, 5 only; one prediction falls on class 7, absent from the split.
    labels = torch.tensor([1, 1, 1, 3, 3, 5])
    rankings = [[1], [1], [3, 1], [3], [7, 0, 1, 2, 4, 3], [5]]
    counter = MetricCounter(num_classes=8)
    counter.update(logits=_logits_ranking(rankings), labels=labels, loss_sum=3.0)
    return counter


def test_metrics_by_hand():
    summary = _counter().summary()
    assert summary["top1"] == pytest.approx(4 / 6)
    # Top-5 misses only the sample whose true class is ranked 6th.
    assert summary["top5"] == pytest.approx(5 / 6)
    assert summary["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert summary["loss"] == pytest.approx(0.5)
    assert summary["samples"] == 6


def test_report_restricted_to_present_classes_with_other_column():
    report = _counter().report(class_names=CLASS_NAMES)
    assert report.confusion_rows == ["class 1", "class 3", "class 5"]
    assert report.confusion_columns == ["class 1", "class 3", "class 5", OTHER_CLASSES]
    assert report.confusion == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    rows = {row.class_name: row for row in report.per_class}
    assert rows["class 1"].support == 3 and rows["class 1"].correct == 2
    assert rows["class 3"].precision == pytest.approx(1 / 2)
    assert report.num_classes_model == 8


def test_no_other_column_when_predictions_stay_inside():
    counter = MetricCounter(num_classes=4)
    counter.update(logits=_logits_ranking([[0], [2], [0]], num_classes=4), labels=torch.tensor([0, 2, 2]))
    report = counter.report(class_names=["a", "b", "c", "d"])
    assert report.confusion_columns == ["a", "c"]
    assert report.confusion == [[1, 0], [1, 1]]


def test_state_vector_merges_like_one_pass():
    """Two ranks' counters summed through `as_tensor` equal one counter over all samples (the DDP path)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 6, generator=generator)
    labels = torch.randint(0, 6, (20,), generator=generator)
    whole = MetricCounter(num_classes=6)
    whole.update(logits=logits, labels=labels, loss_sum=7.5)
    first, second = MetricCounter(num_classes=6), MetricCounter(num_classes=6)
    first.update(logits=logits[:9], labels=labels[:9], loss_sum=3.0)
    second.update(logits=logits[9:], labels=labels[9:], loss_sum=4.5)
    merged = MetricCounter(num_classes=6)
    merged.load_tensor(first.as_tensor() + second.as_tensor())
    assert np.array_equal(merged.confusion, whole.confusion)
    assert merged.summary() == whole.summary()


def test_top5_with_fewer_than_five_classes():
    counter = MetricCounter(num_classes=3)
    counter.update(logits=_logits_ranking([[2, 1, 0]], num_classes=3), labels=torch.tensor([0]))
    assert counter.summary()["top5"] == 1.0 and counter.summary()["top1"] == 0.0


def test_report_files(tmp_path):
    report = _counter().report(class_names=CLASS_NAMES)
    files = write_report_files(report, out_dir=tmp_path, meta={"split": "test"})
    with open(files["confusion_csv"]) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["true \\ predicted", "class 1", "class 3", "class 5", OTHER_CLASSES]
    assert rows[2] == ["class 3", "0", "1", "0", "1"]
    with open(files["per_class_csv"]) as handle:
        table = list(csv.DictReader(handle))
    assert [row["class_name"] for row in table] == ["class 1", "class 3", "class 5"]
    assert float(table[0]["accuracy"]) == pytest.approx(2 / 3, abs=1e-4)
    image = matplotlib.image.imread(files["confusion_png"])
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 300
    assert image[..., :3].std() > 0.05  # not a blank canvas
    payload = json.loads((tmp_path / "report.json").read_text())
    assert payload["split"] == "test" and payload["top1"] == pytest.approx(4 / 6)
    assert payload["confusion"] == report.confusion


def test_fingerprint_check_names_differing_keys():
    stored = {"T": 16, "input_size": 224, "weights": "random", "layers": ["layer3", "layer4"]}
    same = {"T": 16, "input_size": 224, "weights": "random", "layers": ("layer3", "layer4")}
    check_fingerprint(expected=stored, actual=same, what="evaluate")
    other = {"T": 8, "input_size": 224, "weights": "kinetics400", "layers": ["layer3", "layer4"]}
    assert differing_keys(stored, other) == ["T", "weights"]
    with pytest.raises(StarError, match="differs from the checkpoint's in T, weights"):
        check_fingerprint(expected=stored, actual=other, what="evaluate")


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(StarError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(StarError, match="cannot be read"):
        read_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(StarError, match="not a STAR checkpoint"):
        read_checkpoint(foreign)


def test_a_checkpoint_of_the_post_ln_model_before_the_learning_fixes_is_refused_clearly(trained, tmp_path):
    """Format 1 (no norm / init / token_norm / temporal_embedding in its model config): a clear message, no
    shape error."""
    cache, checkpoint = trained
    old = torch.load(checkpoint, weights_only=True)
    old["format"] = 1
    old["model_config"] = {
        k: v
        for k, v in old["model_config"].items()
        if k not in ("norm", "init", "token_norm", "temporal_embedding", "frames", "joint_position")
    }
    path = tmp_path / "old.pt"
    torch.save(old, path)
    with pytest.raises(StarError, match="has format 1, written by an older STAR"):
        read_checkpoint(path)
    result = _star("evaluate", "--checkpoint", path, "--cache", cache, "--workers", 0)
    assert result.exit_code == 1 and "format 1" in result.output and len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------- star evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy cache and a checkpoint trained on it for a few epochs (in-process; `one_thread` runs first)."""
    folder = tmp_path_factory.mktemp("trained")
    cache = write_toy_cache(folder / "toy.zarr", signal=4.0)
    cfg = resolve_config(
        overrides={
            "cache": cache.path,
            "out": str(folder / "run"),
            "epochs": 3,
            "batch_size": 8,
            "workers": 0,
            "lr": 3e-3,
            "model": {"dim": 32, "depth": 1, "heads": 2},
        },
        preset="small",
    )
    train(cfg, show_progress=False)
    return cache.path, folder / "run" / "last.pt"


def _star(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_evaluate_json_matches_a_direct_forward_pass(trained, tmp_path):
    cache, checkpoint = trained
    result = _star(
        "evaluate", "--checkpoint", checkpoint, "--cache", cache, "--out", tmp_path / "eval", "--workers", 0, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)  # nothing but JSON on stdout
    assert report["split"] == "toy-xsub-test" and report["num_samples"] == 4 and report["num_classes_model"] == 10
    assert report["confusion_rows"] == ["action 1", "action 4", "action 6", "action 9"]
    assert sum(map(sum, report["confusion"])) == 4
    assert all(
        (tmp_path / "eval" / name).is_file()
        for name in ("report.json", "confusion.csv", "confusion.png", "per_class.csv")
    )

    model = load_trained_model(torch.load(checkpoint, weights_only=True), video=False)
    test = CachedClips(path=cache, split_name="toy-xsub-test")
    with torch.no_grad():
        logits = torch.cat([model({k: v[None] for k, v in test[i].items()}) for i in range(len(test))])
    labels = torch.as_tensor(test.labels)
    assert report["top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert report["top5"] == pytest.approx((logits.topk(5).indices == labels[:, None]).any(1).float().mean().item())


def test_evaluate_text_report_and_default_folder(trained):
    cache, checkpoint = trained
    result = _star("evaluate", "--checkpoint", checkpoint, "--cache", cache, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output and "action 6" in result.output
    assert (checkpoint.parent / "eval-toy-xsub-test" / "confusion.png").is_file()


def test_evaluate_refuses_a_cache_with_another_fingerprint(trained, tmp_path):
    _, checkpoint = trained
    other = write_toy_cache(tmp_path / "other.zarr", n=8, fingerprint=toy_fingerprint(input_size=64, dtype="uint8"))
    result = _star("evaluate", "--checkpoint", checkpoint, "--cache", other.path, "--workers", 0)
    assert result.exit_code == 1
    assert "differs from the checkpoint's in dtype, input_size" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_format_2_checkpoint_is_read_with_its_joint_count_renamed(trained, tmp_path):
    """Format 2 called the joint count `joints` and had no attention_dropout; read as format 3, it evaluates the
    same."""
    cache, checkpoint = trained
    current = torch.load(checkpoint, weights_only=True)
    old = {**current, "format": 2}
    old["model_config"] = {
        ("joints" if k == "num_joints" else k): v
        for k, v in current["model_config"].items()
        if k != "attention_dropout"
    }
    old["config"] = {**current["config"], "model": dict(old["model_config"])}
    path = tmp_path / "format2.pt"
    torch.save(old, path)
    state = read_checkpoint(path)
    # What the format-2 model did: dropout on the attention probabilities too.
    assert state["format"] == 3 and state["model_config"] == {
        **current["model_config"],
        "attention_dropout": current["model_config"]["dropout"],
    }
    assert state["config"]["model"]["num_joints"] == current["model_config"]["num_joints"]
    a = evaluate_checkpoint(checkpoint=checkpoint, cache=cache, out_dir=tmp_path / "a", workers=0)
    b = evaluate_checkpoint(checkpoint=path, cache=cache, out_dir=tmp_path / "b", workers=0)
    assert a.report.top1 == b.report.top1 and a.report.confusion == b.report.confusion


@pytest.mark.parametrize("modality", ["rgb", "pose"])
def test_a_single_modality_model_is_trained_recorded_and_reported(trained, tmp_path, modality):
    cache, _ = trained
    run = tmp_path / modality
    result = _star(
        "train",
        "--from-cache",
        cache,
        "--out",
        run,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--workers",
        0,
        "--no-progress",
        "--dim",
        32,
        "--depth",
        1,
        "--heads",
        2,
        "--modality",
        modality,
    )
    assert result.exit_code == 0, result.output
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["model_config"]["modality"] == modality
    absent = "grid_proj" if modality == "pose" else "joint_proj"  # the unused input has no parameters at all
    assert not any(absent in name for name in state["model"])
    result = _star("evaluate", "--checkpoint", run / "last.pt", "--cache", cache, "--workers", 0)
    assert result.exit_code == 0 and f"model inputs: {modality}" in result.output, result.output
    assert json.loads((run / "eval-toy-xsub-test" / "report.json").read_text())["modality"] == modality
    bad = _star("train", "--from-cache", cache, "--out", tmp_path / "bad", "--modality", "depth", "--no-progress")
    assert bad.exit_code != 0 and "modality='depth' is not one of both, rgb, pose" in bad.output
