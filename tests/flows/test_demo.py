"""`star demo` end to end in a reduced configuration: the real Prefect flow, training loop and report writer.

One demo run (4 classes, 16 clips each, 32 px, T = 4, 30 epochs: tens of seconds) is checked three ways: it learns
(held-out top-1 of last.pt), its report folder is complete and consistent (every file, PNG sizes, metrics that
agree with the evaluation and the explanation), and a second run reuses the dataset, index, cache and model.
"""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.demo import demo_config, split_subjects
from pipeline.inference.plots import (
    box_aspect,
    frame_importance_size,
    per_class_accuracy_size,
    skeleton_box,
    training_curves_size,
)
from pipeline.inference.predict import read_pose
from pipeline.sources.layouts import NTU25

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FRAMES = 4  # held-out top-1 91.7 % with seed 0 (the test's), 83.3 % with seeds 1 and 2; at T = 8 twice the time
REDUCED = [
    "--samples-per-class",
    "16",
    "--classes",
    "4",
    "--epochs",
    "30",
    "--size",
    "32",
    "--frames",
    str(FRAMES),
    "--frame-width",
    "96",
]
REPORT_FILES = (
    "metrics.json",
    "report.md",
    "report.json",
    "confusion.csv",
    "confusion.png",
    "per_class.csv",
    "per_class_accuracy.png",
    "training_curves.png",
    "frame_importance.png",
    "explain.json",
)


def read_png(path, size=None) -> np.ndarray:
    image = matplotlib.image.imread(path)
    if size is not None:
        width, height = size
        assert image.shape[:2] == (height, width), (
            f"{path.name}: {image.shape[1]}x{image.shape[0]}, expected {width}x{height}"
        )
    assert image.ndim == 3 and image[..., :3].std() > 0.05, f"{path.name} is blank"
    return image


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    first = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), *REDUCED])
    assert first.exit_code == 0, first.output
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    second = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), *REDUCED])
    assert second.exit_code == 0, second.output
    return workdir, first.output, second.output, metrics


def test_demo_writes_the_whole_report(demo_runs):
    workdir, output, _, first_metrics = demo_runs
    report = workdir / "report"
    assert f"report: {report / 'report.md'}" in output.replace("\n", "")
    for stage in ("dataset", "extract", "train", "evaluate", "explain", "report", "held-out"):
        assert stage in output
    for name in REPORT_FILES:
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name

    metrics = json.loads((report / "metrics.json").read_text())
    evaluation = json.loads((report / "report.json").read_text())
    assert (
        metrics["held_out"]["top1"] == evaluation["top1"] and metrics["held_out"]["clips"] == evaluation["num_samples"]
    )
    assert metrics["held_out"]["checkpoint"].endswith("last.pt") and metrics["held_out"]["epoch"] == 29
    assert metrics["dataset"]["clips"] == 64 and 3 in metrics["dataset"]["held_out_subjects"]
    assert metrics["extraction"]["backbone_weights"].startswith("random")
    assert {stage["name"] for stage in metrics["stages"]} == {
        "dataset",
        "extract",
        "train",
        "evaluate",
        "explain",
        "report",
    }

    explanation = json.loads((report / "explain.json").read_text())
    (model,) = explanation["models"]
    assert len(model["scores"]) == len(explanation["frame_indices"]) == FRAMES
    assert abs(sum(model["scores"]) - 1) < 1e-5
    assert metrics["explained_clip"]["models"][0]["scores"] == model["scores"]
    assert explanation["video"].endswith(f"{metrics['explained_clip']['sample_id']}_rgb.avi")

    read_png(report / "training_curves.png", training_curves_size())
    read_png(report / "per_class_accuracy.png", per_class_accuracy_size(len(evaluation["per_class"])))
    joints = read_pose(explanation["pose"], layout=NTU25, persons=2, frame_size=(96, 54))[explanation["frame_indices"]]
    aspect = box_aspect(skeleton_box(joints, width=96, height=54))
    read_png(report / "frame_importance.png", frame_importance_size(frames=FRAMES, series=1, aspect=aspect))
    read_png(report / "confusion.png")

    text = (report / "report.md").read_text()
    for image in ("confusion.png", "per_class_accuracy.png", "training_curves.png", "frame_importance.png"):
        assert f"]({image})" in text
    assert "RANDOM weights" in text and f"top-1 {evaluation['top1']:.1%}" in text
    assert first_metrics["held_out"] == metrics["held_out"]  # the second run evaluated the same model


def test_demo_rerun_reuses_dataset_cache_and_training(demo_runs):
    workdir, first, second, _ = demo_runs
    assert "(reused)" not in first
    for stage in ("dataset", "extract", "train"):
        line = next(line for line in second.splitlines() if line.lstrip("│ ").startswith(stage) and "(reused" in line)
        assert line
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    assert metrics["extraction"]["clips_extracted_now"] == 0
    assert [stage["reused"] for stage in metrics["stages"]][:3] == [True, True, True]
    assert len(list((workdir / "runs").iterdir())) == 1  # one training run directory, reused


def test_demo_learns_on_a_reduced_configuration(demo_runs):
    """Not just plumbing: 4 classes (chance 25 %) on unseen subjects; held-out top-1 of last.pt."""
    _, _, _, metrics = demo_runs
    held = metrics["held_out"]
    assert held["checkpoint"].endswith("last.pt") and held["split"] == "ntu120-xsub-test" and held["clips"] == 24
    assert held["top1"] >= 0.75, held
    # Validation (best.pt) came from the training subjects, never from the held-out ones.
    dataset = metrics["dataset"]
    assert dataset["validation_subjects"] and set(dataset["validation_subjects"]) <= set(dataset["train_subjects"])
    assert not set(dataset["validation_subjects"]) & set(dataset["held_out_subjects"])


def test_demo_options_are_checked(tmp_path):
    with pytest.raises(StarError, match="--classes"):
        demo_config(workdir=tmp_path, classes=1)
    with pytest.raises(StarError, match="--frame-width"):
        demo_config(workdir=tmp_path, frame_width=100)
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--samples-per-class", "1"])
    assert result.exit_code == 1 and "samples-per-class" in result.output
    assert split_subjects(["S001C001P001R001A010", "S001C002P003R001A010", "S002C001P008R002A023"]) == ([1, 8], [3])
