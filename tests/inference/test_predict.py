"""`star predict`: one video + its pose file → top-5 classes, through the extraction path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.inference.predict import predict
from pipeline.sources.datasets.ntu_skeleton import read_ntu_skeleton
from pipeline.sources.synthetic import generate_penn_dataset
from pipeline.sources.video import probe_video
from pipeline.training.checkpoints import load_trained_model
from pipeline.training.data import CachedClips
from tests.fixtures.feature_caches import train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _star(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_predict_ntu_skeleton_equals_the_model_on_the_cached_clip(video_run):
    root, cache, checkpoint = video_run
    sample = "S001C002P003R001A023"  # subject 3: xsub test
    video = root / "nturgb+d_rgb" / f"{sample}_rgb.avi"
    skeleton = root / "nturgb+d_skeletons" / f"{sample}.skeleton"
    result = _star("predict", video, "--pose", skeleton, "--checkpoint", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.output)
    probabilities = [score["probability"] for score in prediction["top"]]
    assert (
        len(probabilities) == 5
        and probabilities == sorted(probabilities, reverse=True)
        and 0 < sum(probabilities) <= 1 + 1e-6
    )
    assert len(prediction["frame_indices"]) == 4

    # The same clip read from the cache through the same weights gives the same distribution.
    test = CachedClips(path=cache, split_name="ntu120-xsub-test")
    i = list(test.sample_ids).index(sample)
    model = load_trained_model(torch.load(checkpoint, weights_only=True), video=False)
    with torch.no_grad():
        expected = model({k: v[None] for k, v in test[i].items()}).softmax(1)[0]
    top = expected.topk(5)
    assert [score["class_id"] for score in prediction["top"]] == top.indices.tolist()
    np.testing.assert_allclose(probabilities, top.values.numpy(), atol=1e-4)
    assert (
        prediction["top"][0]["class_name"] == torch.load(checkpoint, weights_only=True)["class_names"][top.indices[0]]
    )

    text = _star("predict", video, "--pose", skeleton, "--checkpoint", checkpoint, "--top", 3)
    assert text.exit_code == 0 and len(text.output.strip().splitlines()) == 4 and "1. " in text.output


def test_predict_custom_npz_pose_and_pose_errors(video_run, tmp_path):
    root, _, checkpoint = video_run
    sample = "S001C002P003R001A023"
    video = root / "nturgb+d_rgb" / f"{sample}_rgb.avi"
    info = probe_video(video)
    skeleton = read_ntu_skeleton(
        root / "nturgb+d_skeletons" / f"{sample}.skeleton", frame_size=(info.width, info.height), persons=1
    )  # one person in the file; the .npz holds video pixels
    npz = tmp_path / "pose.npz"
    np.savez(npz, keypoints=skeleton)
    from_npz = predict(video=video, pose=npz, checkpoint=checkpoint)
    from_ntu = predict(video=video, pose=root / "nturgb+d_skeletons" / f"{sample}.skeleton", checkpoint=checkpoint)
    assert [s.class_id for s in from_npz.top] == [s.class_id for s in from_ntu.top]
    np.testing.assert_allclose([s.probability for s in from_npz.top], [s.probability for s in from_ntu.top], atol=1e-5)

    with pytest.raises(StarError, match="does not exist"):
        predict(video=video, pose=tmp_path / "missing.skeleton", checkpoint=checkpoint)
    wrong = tmp_path / "pose.txt"
    wrong.write_text("1 2 3")
    with pytest.raises(StarError, match="use an NTU .skeleton"):
        predict(video=video, pose=wrong, checkpoint=checkpoint)
    thirteen = tmp_path / "penn_like.npz"
    np.savez(thirteen, keypoints=np.ones((10, 1, 13, 3), dtype=np.float32))
    with pytest.raises(StarError, match="expected \\(frames, persons, 25, 3\\) for the layout 'ntu25'"):
        predict(video=video, pose=thirteen, checkpoint=checkpoint)


def test_predict_penn_frames_and_mat(video_run, tmp_path):
    root = tmp_path / "Penn_Action"
    generate_penn_dataset(root, videos_per_class=2, frame_size=(96, 72), seed=0)
    cache = tmp_path / "penn.zarr"
    summary = extract(
        ExtractConfig(
            dataset="penn", root=root, out=str(cache), frames=4, size=32, weights="random", unit_size=4, workers=1
        )
    )
    assert summary.exit_code == 0
    checkpoint = train_tiny(str(cache), tmp_path / "run")
    prediction = predict(
        video=root / "frames" / "0002", pose=root / "labels" / "0002.mat", checkpoint=checkpoint, top_k=3
    )
    names = torch.load(checkpoint, weights_only=True)["class_names"]
    assert len(names) == 15 and len(prediction.top) == 3
    assert all(score.class_name == names[score.class_id] for score in prediction.top)
    assert prediction.top[0].probability >= prediction.top[-1].probability
    ntu_root = video_run[0]
    with pytest.raises(
        StarError, match="has 25 joints per person, but the model was trained on the 13-joint layout 'penn13'"
    ):
        predict(
            video=root / "frames" / "0002",
            pose=next((ntu_root / "nturgb+d_skeletons").iterdir()),
            checkpoint=checkpoint,
        )


def test_predict_maps_ntu_colour_coordinates_to_a_downscaled_video(video_run, tmp_path):
    """The same .skeleton next to a half-size copy of the video: the joints land on the same body parts."""
    from pipeline.sources.synthetic import write_video
    from pipeline.sources.video import read_frames

    root, _, checkpoint = video_run
    sample = "S001C002P003R001A023"
    video = root / "nturgb+d_rgb" / f"{sample}_rgb.avi"
    skeleton = root / "nturgb+d_skeletons" / f"{sample}.skeleton"
    info = probe_video(video)
    frames = read_frames(video, list(range(info.frames)))[..., ::-1]  # BGR for the writer
    write_video(tmp_path / "half.avi", np.ascontiguousarray(frames[:, ::2, ::2]))  # 48x27 -> MJPG keeps even sizes
    full = predict(video=video, pose=skeleton, checkpoint=checkpoint, device="cpu")
    half = predict(video=tmp_path / "half.avi", pose=skeleton, checkpoint=checkpoint, device="cpu")
    assert full.frame_indices == half.frame_indices
    assert full.top[0].class_id == half.top[0].class_id

    outside = tmp_path / "pixels-of-1080p.npz"  # a pose file in another pixel space than its video
    np.savez(outside, keypoints=read_ntu_skeleton(skeleton, frame_size=(1920, 1080), persons=1))
    with pytest.raises(
        StarError,
        match=r"pose file .*pixels-of-1080p.npz: only \d+% of the \d+ visible joints fall inside the 96x54 frame",
    ):
        predict(video=video, pose=outside, checkpoint=checkpoint, device="cpu")
