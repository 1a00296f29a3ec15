"""`star explain`: attention rollout per frame for one video + pose file, as JSON and the Fig. 6 PNG.

The JSON must be the model's own output: the test recomputes the scores with `attention_rollout` called directly on
inputs it builds itself from the checkpoint, the video and the skeleton file.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from model.rollout import attention_rollout
from pipeline.inference.explain import drawing_bones
from pipeline.inference.plots import box_aspect, frame_importance_size, skeleton_box
from pipeline.inference.predict import read_pose
from pipeline.sources.clips import ClipSpec, load_clip, usable_frames
from pipeline.sources.index import AnnotationIndex
from pipeline.sources.layouts import NTU25, layout_from_spec
from pipeline.sources.video import probe_video
from pipeline.training.checkpoints import load_trained_model, read_checkpoint
from pipeline.training.config import resolve_config
from pipeline.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"dim": 32, "depth": 1, "heads": 2}


def sharpened(checkpoint: Path, out: Path, *, seed: int) -> Path:
    """A copy of a checkpoint with large QKV weights: attention far from uniform, so the frame scores differ."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in state["model"].items():
        if "qkv.weight" in name:
            state["model"][name] = torch.randn(tensor.shape, generator=generator) * 0.5
    torch.save(state, out)
    return out


@pytest.fixture(scope="module")
def trained(video_cache, tmp_path_factory):
    """The real video cache (T = 4, 32 x 32), a 1-epoch STAR (FZ/FB) and a 1-epoch FAttn-only (FF/FF) checkpoint."""
    folder = tmp_path_factory.mktemp("explain")
    cache, extracted = video_cache, Path(video_cache).parent
    checkpoints = {}
    for name, encoder, decoder in (("star", "FZ", "FB"), ("fattn", "FF", "FF")):
        cfg = resolve_config(
            overrides={
                "cache": cache,
                "out": str(folder / name),
                "epochs": 1,
                "batch_size": 4,
                "workers": 0,
                "benchmark": "ntu120-xsub",
                "device": "cpu",
                "model": {**TINY, "encoder": encoder, "decoder": decoder},
            }
        )
        train(cfg, show_progress=False)
        checkpoints[name] = sharpened(folder / name / "last.pt", folder / f"{name}-sharp.pt", seed=len(checkpoints))
    index = AnnotationIndex(extracted / "ntu120-index.h5")
    row = 0
    video = Path(index.video_paths[row])
    pose = extracted / "ntu" / "nturgb+d_skeletons" / f"{index.sample_ids[row]}.skeleton"
    return {"folder": folder, "video": video, "pose": pose, **checkpoints}


def strip_aspect(video: Path, pose: Path, frame_indices) -> float:
    """Height / width of the frame strip: the box around the clip's skeletons."""
    info = probe_video(video)
    joints = read_pose(pose, layout=NTU25, persons=2, frame_size=(info.width, info.height))[np.asarray(frame_indices)]
    return box_aspect(skeleton_box(joints, width=info.width, height=info.height))


def rollout_directly(checkpoint: Path, video: Path, pose: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Scores (T,), class probabilities and frame indices, built here from the public pieces, not by explain."""
    state = read_checkpoint(checkpoint)
    fingerprint = state["fingerprint"]
    spec = ClipSpec(
        frames=int(fingerprint["frames"]), size=int(fingerprint["input_size"]), crop=str(fingerprint["crop"])
    )
    info = probe_video(video)
    skeleton = read_pose(
        pose, layout=NTU25, persons=int(state["model_config"]["persons"]), frame_size=(info.width, info.height)
    )
    clip = load_clip(
        video=video,
        skeleton=skeleton,
        usable_frames=usable_frames(info.frames, skeleton.shape[0]),
        frame_size=(info.width, info.height),
        spec=spec,
    )
    model = load_trained_model(state, video=True)
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None]  # (1, T, 3, S, S)
    joints = torch.from_numpy(clip.joints.reshape(spec.frames, -1, 3))[None]  # (1, T, P*J, 3)
    with torch.no_grad():
        inputs = model.star.inputs_from_video(frames, joints, backbone=model.backbone)
        probabilities = model.star(*inputs).softmax(dim=1)[0]
    return attention_rollout(model.star, *inputs)[0], probabilities, clip.frame_indices


def test_explain_cli_json_matches_the_model(trained, tmp_path):
    out = tmp_path / "explain"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(trained["video"]),
            "--pose",
            str(trained["pose"]),
            "--checkpoint",
            str(trained["star"]),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "explain.json").read_text())
    (model,) = report["models"]
    assert model["attention"] == "FZ/FB" and model["label"] == "STAR (FZ/FB)"

    scores, probabilities, frame_indices = rollout_directly(trained["star"], trained["video"], trained["pose"])
    assert report["frame_indices"] == frame_indices.tolist()
    np.testing.assert_allclose(model["scores"], scores.numpy(), rtol=1e-5, atol=1e-7)
    assert abs(sum(model["scores"]) - 1) < 1e-5
    assert np.std(model["scores"]) > 1e-3  # sharpened attention: not the uniform 1/T any model would give
    assert abs(model["grid_share"] + model["joint_share"] - 1) < 1e-5 and 0 < model["grid_share"] < 1
    shares = [share for _, share in model["top_joints"]]
    assert len(shares) == 3 and shares == sorted(shares, reverse=True) and sum(shares) <= model["joint_share"] + 1e-6
    assert all(name in NTU25.joint_names for name, _ in model["top_joints"])
    assert (
        "evidence: grid tokens"
        in CliRunner()
        .invoke(
            app,
            [
                "explain",
                str(trained["video"]),
                "--pose",
                str(trained["pose"]),
                "--checkpoint",
                str(trained["star"]),
                "--out",
                str(tmp_path / "text"),
                "--device",
                "cpu",
            ],
        )
        .output
    )
    top = probabilities.topk(len(model["top"]))
    assert [c["class_id"] for c in model["top"]] == top.indices.tolist()
    np.testing.assert_allclose([c["probability"] for c in model["top"]], top.values.numpy(), rtol=1e-5)

    image = matplotlib.image.imread(out / "frame_importance.png")
    aspect = strip_aspect(trained["video"], trained["pose"], frame_indices)
    width, height = frame_importance_size(frames=len(frame_indices), series=1, aspect=aspect)
    assert image.shape == (height, width, 4)
    assert image[..., :3].std() > 0.05


def test_explain_side_by_side_with_the_fattn_only_model(trained, tmp_path):
    out = tmp_path / "both"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(trained["video"]),
            "--pose",
            str(trained["pose"]),
            "--checkpoint",
            str(trained["star"]),
            "--compare",
            str(trained["fattn"]),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "FAttn only (FF/FF)" in result.output and "STAR (FZ/FB)" in result.output
    report = json.loads((out / "explain.json").read_text())
    assert [m["attention"] for m in report["models"]] == ["FF/FF", "FZ/FB"]  # FAttn first, as in Fig. 6 (a)
    for model, checkpoint in zip(report["models"], (trained["fattn"], trained["star"]), strict=True):
        scores, _, _ = rollout_directly(checkpoint, trained["video"], trained["pose"])
        np.testing.assert_allclose(model["scores"], scores.numpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(report["models"][0]["scores"], report["models"][1]["scores"])
    aspect = strip_aspect(trained["video"], trained["pose"], report["frame_indices"])
    width, height = frame_importance_size(frames=len(report["frame_indices"]), series=2, aspect=aspect)
    assert matplotlib.image.imread(out / "frame_importance.png").shape == (height, width, 4)


def test_skeletons_are_drawn_with_their_bones(trained):
    # A cache fingerprint stores the layout without bones; the built-in layout of that name supplies them.
    fingerprint_layout = read_checkpoint(trained["star"])["fingerprint"]["layout"]
    assert "bones" not in fingerprint_layout or not fingerprint_layout["bones"]
    assert drawing_bones(layout_from_spec(fingerprint_layout, where="test")) == NTU25.bones
    renamed = layout_from_spec({**fingerprint_layout, "name": "custom"}, where="test")
    assert drawing_bones(renamed) == ()


def test_explain_refuses_models_of_other_features(trained, tmp_path):
    state = torch.load(trained["fattn"], map_location="cpu", weights_only=True)
    state["fingerprint"] = {**state["fingerprint"], "input_size": 64}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(trained["video"]),
            "--pose",
            str(trained["pose"]),
            "--checkpoint",
            str(trained["star"]),
            "--compare",
            str(other),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 1
    assert "extracted differently" in result.output and "input_size" in result.output
    result = CliRunner().invoke(
        app,
        [
            "explain",
            str(trained["video"]),
            "--pose",
            str(tmp_path / "missing.skeleton"),
            "--checkpoint",
            str(trained["star"]),
        ],
    )
    assert result.exit_code == 1 and "does not exist" in result.output
