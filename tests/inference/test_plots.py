"""Plots: training curves, per-class bars, the Fig. 6 frame-importance figure, `star cache info --plot`.

Every PNG is read back: it must be an image of exactly the size the module promises, and not blank.
"""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.inference.plots import (
    PERSON_COLOURS,
    ImportanceSeries,
    box_aspect,
    cache_statistics,
    cache_statistics_size,
    frame_importance_size,
    per_class_accuracy_size,
    plot_frame_importance,
    plot_per_class_accuracy,
    plot_training_curves,
    read_metrics_log,
    skeleton_box,
    training_curves_size,
)
from pipeline.training.metrics import PerClassRow
from tests.fixtures.feature_caches import write_toy_cache


def read_png(path, size: tuple[int, int]) -> np.ndarray:
    """The image as (H, W, 4) floats; asserts its (width, height) and that it is not one flat colour."""
    image = matplotlib.image.imread(path)
    width, height = size
    assert image.shape == (height, width, 4), f"{path}: {image.shape[1]}x{image.shape[0]}, expected {width}x{height}"
    assert image[..., :3].std() > 0.05, f"{path} is (nearly) blank"
    return image


def colour_pixels(image: np.ndarray, hex_colour: str, tolerance: float = 0.06) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.sum(np.abs(image[..., :3] - rgb).max(axis=-1) < tolerance))


def metrics_records(epochs: int) -> list[dict]:
    """What pipeline.training.loop's RunLog writes per epoch."""
    return [
        {
            "epoch": e,
            "global_step": 10 * (e + 1),
            "train.loss": 2.3 / (e + 1),
            "train.top1": min(1.0, 0.1 + 0.2 * e),
            "train.samples_per_s": 40.0,
            "train.seconds": 3.0,
            "lr": 1e-3 * (1 - e / epochs),
            "val.top1": min(1.0, 0.1 + 0.15 * e),
            "val.top5": min(1.0, 0.5 + 0.1 * e),
            "val.mean_class_accuracy": 0.1,
            "val.loss": 2.4 / (e + 1),
            "val.samples": 30.0,
        }
        for e in range(epochs)
    ]


def test_training_curves_from_the_metrics_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    records = metrics_records(6)
    log.write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))  # order on disk does not matter
    read = read_metrics_log(log)
    assert [r["epoch"] for r in read] == list(range(6))
    path = plot_training_curves(records=read, out=tmp_path / "curves.png", title="toy run")
    image = read_png(path, training_curves_size())
    assert colour_pixels(image, "#1f77b4") > 200  # the train curves (matplotlib's first colour) were drawn


def test_metrics_log_errors_say_what_to_do(tmp_path):
    with pytest.raises(StarError, match="no training log"):
        read_metrics_log(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(StarError, match="no epochs yet"):
        read_metrics_log(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(metrics_records(1)[0]) + "\n{not json\n")
    with pytest.raises(StarError, match="line 2 is not JSON"):
        read_metrics_log(broken)


def test_per_class_accuracy_bars(tmp_path):
    rows = [
        PerClassRow(class_id=i, class_name=f"class number {i}", support=10, correct=c, accuracy=c / 10, precision=0.5)
        for i, c in enumerate([10, 7, 3, 0, 9])
    ]
    path = plot_per_class_accuracy(rows=rows, out=tmp_path / "per_class.png")
    read_png(path, per_class_accuracy_size(5))
    with pytest.raises(StarError, match="empty"):
        plot_per_class_accuracy(rows=[], out=tmp_path / "none.png")


def toy_clip(frames: int = 6, height: int = 90, width: int = 160):
    """Grey frames with one standing stick figure (NTU-like 5-joint layout) drawn by the plot."""
    images = np.full((frames, height, width, 3), 90, np.uint8)
    images[:, :, : width // 2] = 140  # two tones, so the frame is not flat
    joints = np.zeros((frames, 2, 5, 3))
    for t in range(frames):
        joints[t, 0] = [[80, 20, 1], [80, 45, 1], [65 - t, 40, 1], [95 + t, 40, 1], [80, 80, 1]]
    bones = [(0, 1), (1, 2), (1, 3), (1, 4)]
    return images, joints, bones


@pytest.mark.parametrize("models", [1, 2])
def test_frame_importance_figure(tmp_path, models):
    frames, joints, bones = toy_clip()
    scores = np.array([0.05, 0.1, 0.4, 0.2, 0.15, 0.1])
    series = [
        ImportanceSeries(label=f"model {k}", scores=np.roll(scores, k), note="predicts clapping (90%)")
        for k in range(models)
    ]
    path = plot_frame_importance(
        frames=frames,
        joints=joints,
        bones=bones,
        series=series,
        frame_indices=[0, 9, 19, 29, 39, 49],
        out=tmp_path / "importance.png",
    )
    image = read_png(path, frame_importance_size(frames=6, series=models, aspect=90 / 160))
    drawn = colour_pixels(image, PERSON_COLOURS[0])
    assert drawn > 50  # the first person's skeleton is drawn on the frames

    hidden = joints.copy()
    hidden[..., 2] = 0.0  # no confident joint: nothing is drawn
    path = plot_frame_importance(
        frames=frames,
        joints=hidden,
        bones=bones,
        series=series,
        frame_indices=list(range(6)),
        out=tmp_path / "hidden.png",
    )
    assert (
        colour_pixels(
            read_png(path, frame_importance_size(frames=6, series=models, aspect=90 / 160)), PERSON_COLOURS[0]
        )
        < drawn / 10
    )


def test_frame_importance_zooms_to_the_skeletons(tmp_path):
    frames, joints, bones = toy_clip()
    box = skeleton_box(joints, width=160, height=90)
    x0, y0, x1, y1 = box
    visible = joints[..., 2] > 0
    assert x0 < joints[..., 0][visible].min() and x1 > joints[..., 0][visible].max()
    assert y0 < joints[..., 1][visible].min() and y1 > joints[..., 1][visible].max()
    assert x0 >= -0.5 and y0 >= -0.5 and x1 <= 159.5 and y1 <= 89.5  # never past the frame (pixel edges)
    series = [ImportanceSeries(label="m", scores=[1 / 6] * 6)]
    path = plot_frame_importance(
        frames=frames,
        joints=joints,
        bones=bones,
        series=series,
        frame_indices=list(range(6)),
        out=tmp_path / "zoomed.png",
        box=box,
    )
    zoomed = read_png(path, frame_importance_size(frames=6, series=1, aspect=box_aspect(box)))
    full = read_png(
        plot_frame_importance(
            frames=frames,
            joints=joints,
            bones=bones,
            series=series,
            frame_indices=list(range(6)),
            out=tmp_path / "full.png",
        ),
        frame_importance_size(frames=6, series=1, aspect=90 / 160),
    )
    assert colour_pixels(zoomed, PERSON_COLOURS[0]) > colour_pixels(
        full, PERSON_COLOURS[0]
    )  # the skeleton is drawn larger
    hidden = joints.copy()
    hidden[..., 2] = 0
    assert skeleton_box(hidden, width=160, height=90) == (-0.5, -0.5, 159.5, 89.5)


def test_frame_importance_checks_its_inputs(tmp_path):
    frames, joints, bones = toy_clip()
    good = [ImportanceSeries(label="m", scores=[1 / 6] * 6)]
    with pytest.raises(StarError, match="4 scores for 6 frames"):
        plot_frame_importance(
            frames=frames,
            joints=joints,
            bones=bones,
            series=[ImportanceSeries(label="m", scores=[0.25] * 4)],
            frame_indices=list(range(6)),
            out=tmp_path / "x.png",
        )
    with pytest.raises(StarError, match="joints must be"):
        plot_frame_importance(
            frames=frames,
            joints=joints[:3],
            bones=bones,
            series=good,
            frame_indices=list(range(6)),
            out=tmp_path / "x.png",
        )
    with pytest.raises(StarError, match="frames must be"):
        plot_frame_importance(
            frames=frames[..., 0],
            joints=joints,
            bones=bones,
            series=good,
            frame_indices=list(range(6)),
            out=tmp_path / "x.png",
        )


def test_cache_statistics_of_a_real_cache(tmp_path):
    cache = write_toy_cache(tmp_path / "toy.zarr", failed=(2, 3), pending=(5,))
    stats = cache_statistics(cache.path)
    assert stats.splits["all"] == {"done": 21, "failed": 2, "pending": 1}
    assert (
        sum(
            counts["done"] + counts["failed"] + counts["pending"]
            for name, counts in stats.splits.items()
            if name != "all"
        )
        == 24
    )
    assert stats.failure_reasons == {"corrupt video 2": 1, "corrupt video 3": 1}
    assert sum(stats.done_per_class.values()) == 21
    assert {"local", "global", "heatmaps", "joints"} <= set(stats.array_bytes)
    assert all(
        size > 0 for name, size in stats.array_bytes.items() if name in ("local", "global", "heatmaps", "joints")
    )
    assert sum(stats.array_bytes.values()) == stats.bytes_on_disk


def test_cache_info_plot_option(tmp_path):
    cache = write_toy_cache(tmp_path / "toy.zarr", failed=(2,))
    out = tmp_path / "plots" / "cache.png"
    result = CliRunner().invoke(app, ["cache", "info", cache.path, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert f"plot: {out}" in result.output and "done: 23" in result.output
    read_png(out, cache_statistics_size())
    # --json keeps stdout machine-readable: the plot's path goes to stderr
    result = CliRunner().invoke(app, ["cache", "info", cache.path, "--json", "--plot", str(out)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["done"] == 23
