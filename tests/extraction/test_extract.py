"""Stage 1 end to end on generated NTU-format data: the real MC3-18 architecture with random weights, small T and
size, real videos decoded by OpenCV, a real HDF5 index and a real zarr store; Prefect flow runs for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.extraction.cache_layout import SampleStatus
from pipeline.extraction.extract import ExtractConfig, extract, plan, refresh_index
from pipeline.extraction.store import FeatureCache
from pipeline.sources.clips import ClipSpec, load_clip
from pipeline.sources.synthetic import generate_ntu_dataset
from tests.fixtures.data_files import REAL_NTU_VIDEO, REPO_ROOT

ACTIONS = (23, 27, 80)  # hand waving, jump up, squat down


def small_config(root: Path, out: Path, **overrides) -> ExtractConfig:
    base = ExtractConfig(
        dataset="ntu120",
        root=root,
        out=str(out),
        frames=4,
        size=64,
        weights="random",
        unit_size=4,
        batch_size=2,
        workers=2,
    )
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ntu")
    generate_ntu_dataset(root, samples_per_class=4, actions=ACTIONS, subjects=(1, 3), cameras=(1, 2))
    return root


@pytest.fixture(scope="module")
def clean_cache(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "cache.zarr"
    summary = extract(small_config(dataset, out))
    assert summary.exit_code == 0 and summary.done == 12
    return out


def read_all(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in ("local", "global", "heatmaps", "joints", "status")}


def test_extract_writes_every_sample_consistently(clean_cache, dataset):
    cache = FeatureCache.open(clean_cache)
    assert cache.info().done == 12
    sample = cache.read(0)
    assert sample["local"].shape == (4, 256, 8, 8) and sample["global"].shape == (4, 512, 4, 4)
    assert sample["heatmaps"].shape == (4, 50, 8, 8) and sample["joints"].shape == (4, 2, 25, 3)
    # Heatmaps peak where the joints are: the argmax cell of a confident joint's map contains the joint.
    joints, heatmaps = sample["joints"].reshape(4, 50, 3), sample["heatmaps"]
    t, n = np.argwhere(joints[..., 2] > 0)[0]
    row, col = np.unravel_index(np.argmax(heatmaps[t, n]), heatmaps.shape[-2:])
    assert abs(col + 0.5 - joints[t, n, 0]) <= 0.5 + 1e-3 and abs(row + 0.5 - joints[t, n, 1]) <= 0.5 + 1e-3
    # The cache carries what training needs to name classes and flip joints.
    assert cache.fingerprint["class_names"][22] == "hand waving"
    assert cache.fingerprint["layout"]["name"] == "ntu25"
    assert set(np.asarray(cache.labels)) == {a - 1 for a in ACTIONS}


def test_rerun_is_a_no_op(clean_cache, dataset):
    before = read_all(clean_cache)
    summary = extract(small_config(dataset, clean_cache))
    assert summary.clips_done_now == 0 and summary.done == 12
    after = read_all(clean_cache)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_clean_run(dataset, clean_cache, tmp_path):
    out = tmp_path / "killed.zarr"
    cfg = small_config(dataset, out, unit_size=2)
    code = (
        f"from pathlib import Path; from pipeline.extraction.extract import ExtractConfig, extract; "
        f"extract(ExtractConfig(dataset='ntu120', root=Path({str(dataset)!r}), out={str(out)!r}, frames=4, "
        f"size=64, weights='random', unit_size=2, batch_size=2, workers=2))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and process.poll() is None:
            try:
                done = int(np.sum(FeatureCache.open(out).status() == SampleStatus.DONE))
            except StarError:
                done = 0
            if 2 <= done < 12:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the extraction finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    interrupted = FeatureCache.open(out)
    assert 2 <= interrupted.info().done < 12
    summary = extract(cfg)
    assert summary.exit_code == 0 and summary.done == 12
    resumed, clean = read_all(out), read_all(clean_cache)
    for name in resumed:
        assert np.array_equal(resumed[name], clean[name]), name


def test_bad_samples_are_recorded_and_skipped(tmp_path):
    root = tmp_path / "ntu"
    ids = generate_ntu_dataset(root, samples_per_class=2, actions=ACTIONS, subjects=(1, 3), cameras=(1,))
    videos, skeletons = root / "nturgb+d_rgb", root / "nturgb+d_skeletons"
    (videos / f"{ids[0]}_rgb.avi").write_bytes(b"")  # zero-byte video
    corrupt = videos / f"{ids[1]}_rgb.avi"
    data = bytearray(corrupt.read_bytes())
    corrupt.write_bytes(bytes(data[: len(data) // 3]))  # truncated mid-stream
    (skeletons / f"{ids[2]}.skeleton").unlink()  # missing skeleton
    summary = extract(small_config(root, tmp_path / "cache.zarr"))
    assert summary.exit_code == 3
    assert summary.done == len(ids) - 3 and summary.failed == 3
    reasons = dict(summary.failures)
    assert set(reasons) == set(ids[:3])
    assert all(reason for reason in reasons.values())
    assert "skeleton" in reasons[ids[2]]


def test_fingerprint_mismatch_is_refused(clean_cache, dataset):
    with pytest.raises(StarError, match="input_size"):
        config = small_config(dataset, clean_cache, size=96)
        refresh_index(config)
        plan(config)


def test_new_samples_are_extracted_incrementally(tmp_path):
    root = tmp_path / "ntu"
    generate_ntu_dataset(root, samples_per_class=2, actions=ACTIONS[:2], subjects=(1,), cameras=(1,))
    out = tmp_path / "cache.zarr"
    assert extract(small_config(root, out)).done == 4
    before = read_all(out)
    generate_ntu_dataset(root, samples_per_class=2, actions=ACTIONS, subjects=(1,), cameras=(1,))
    summary = extract(small_config(root, out))
    assert summary.clips_done_now == 2 and summary.done == 6
    after = read_all(out)
    assert np.array_equal(after["local"][:4], before["local"][:4])


def test_real_ntu_video_goes_through_decode_to_features():
    from model.backbone import MC3_18Backbone

    frames = 103  # the real clip: 1920x1080 H.264 in AVI
    skeleton = np.zeros((frames, 1, 25, 3), np.float32)
    skeleton[..., 0], skeleton[..., 1], skeleton[..., 2] = 960 + np.arange(25) * 4, 540 + np.arange(25) * 6, 1.0
    clip = load_clip(
        video=REAL_NTU_VIDEO,
        skeleton=skeleton,
        usable_frames=frames,
        frame_size=(1920, 1080),
        spec=ClipSpec(frames=4, size=112, crop="person"),
    )
    assert clip.frames.shape == (4, 112, 112, 3) and clip.frames.std() > 5  # real picture content
    assert list(clip.frame_indices) == [12, 38, 64, 90]
    assert (clip.joints[..., 2] == 1).all()
    with pytest.warns(UserWarning):
        backbone = MC3_18Backbone(weights=None)
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None]  # (1, T, 3, S, S)
    with torch.inference_mode():
        local, global_ = backbone(video)
    assert local.shape == (1, 4, 256, 14, 14) and global_.shape == (1, 4, 512, 7, 7)
    assert torch.isfinite(local).all() and local.abs().sum() > 0


def test_prefect_flow_runs_on_the_embedded_server(dataset, clean_cache, tmp_path):
    """`star extract` as a user runs it with no Prefect server: the flow starts Prefect's temporary one (the rest of
    the suite reports to the session's server, see conftest.py)."""
    out = tmp_path / "flow.zarr"
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    options = ["--frames", "4", "--size", "64", "--weights", "random", "--unit-size", "4", "--batch-size", "2"]
    command = [sys.executable, "-m", "cli", "extract", "--dataset", "ntu120", "--root", str(dataset), "--out", str(out)]
    result = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "12 done, 0 failed" in result.stdout
    flowed, clean = read_all(out), read_all(clean_cache)
    assert all(np.array_equal(flowed[k], clean[k]) for k in flowed)


def test_cli_extract_and_cache_info(dataset, clean_cache, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "info", str(clean_cache), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["done"] == 12
    result = runner.invoke(
        app,
        [
            "extract",
            "--dataset",
            "ntu120",
            "--root",
            str(dataset),
            "--out",
            str(tmp_path / "x.zarr"),
            "--frames",
            "5",
            "--weights",
            "random",
        ],
    )
    assert result.exit_code == 1 and "--frames must be even" in result.output
    result = runner.invoke(
        app, ["extract", "--dataset", "kinetics", "--root", str(dataset), "--out", str(tmp_path / "x.zarr")]
    )
    assert result.exit_code == 1 and "Unknown dataset" in result.output
    result = runner.invoke(
        app, ["extract", "--dataset", "ntu120", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.zarr")]
    )
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["cache", "info", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
