"""Skeleton-only data end to end, on real Penn Action label files: the skeleton cache, the sampling, normalisation,
augmentation and features of pose training, multi-clip evaluation, and bad label files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
import torch
from typer.testing import CliRunner

from cli import app
from model.star import ModelConfig, build_model
from pipeline.core.errors import StarError
from pipeline.extraction.extract import ExtractConfig, extract
from pipeline.extraction.skeleton_store import SkeletonCache
from pipeline.sources.datasets.penn import read_penn_labels
from pipeline.sources.layouts import NTU25, PENN13
from pipeline.training.classifier import ClipClassifier
from pipeline.training.loop import run_training
from pipeline.training.skeletons import (
    SkeletonAugment,
    SkeletonSpec,
    SkeletonTransform,
    augment_skeleton,
    bone_parents,
    normalise,
    skeleton_features,
)
from tests.fixtures.data_files import REAL_PENN_LABELS

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_STREAMS = ("joint", "bone", "joint_motion", "bone_motion")


def _extract(root, out):
    return extract(ExtractConfig(dataset="penn", root=root, out=str(out), modality="pose"))


def test_labels_alone_make_a_skeleton_cache_with_every_real_sample_and_its_full_rate_skeleton(real_penn, tmp_path):
    summary = _extract(real_penn, tmp_path / "skeletons.zarr")
    assert (summary.samples, summary.done, summary.failed, summary.exit_code) == (47, 46, 1, 3)
    assert summary.failures[0][0] == "1516" and "no joint is marked visible" in summary.failures[0][1]
    assert [sample_id for sample_id, _ in summary.pose_warnings] == ["1024"]  # kept, with its share inside
    assert 0.3 < dict(summary.pose_warnings)["1024"] < 0.45
    cache = SkeletonCache.open(tmp_path / "skeletons.zarr")
    row = int(np.flatnonzero(cache.sample_ids == "1024")[0])
    labels = read_penn_labels(REAL_PENN_LABELS / "1024.mat")
    assert cache.done[row] and cache.skeleton(row).shape == labels.skeleton.shape  # every annotated frame
    np.testing.assert_array_equal(cache.skeleton(row)[..., :2], labels.skeleton[..., :2])
    assert tuple(cache.frame_sizes[row]) == labels.frame_size
    assert cache.split("penn-test").sum() == 15 and cache.split("penn-train").sum() == 32
    again = _extract(real_penn, tmp_path / "skeletons.zarr")
    assert again.clips_done_now == 0 and again.done == 46  # nothing changed: nothing written


def test_extract_refuses_a_feature_cache_folder_and_skeleton_caches_refuse_rgb_training(real_penn, tmp_path):
    (tmp_path / "features.zarr").mkdir()
    (tmp_path / "features.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(StarError, match="something other than a skeleton cache"):
        _extract(real_penn, tmp_path / "features.zarr")
    _extract(real_penn, tmp_path / "skeletons.zarr")
    with pytest.raises(StarError, match="holds skeletons only"):
        run_training(
            overrides={
                "cache": str(tmp_path / "skeletons.zarr"),
                "out": str(tmp_path / "run"),
                "epochs": 1,
                "workers": 0,
                "model": {"modality": "rgb", "dim": 16, "depth": 1, "heads": 2},
            }
        )


def test_bad_label_files_are_recorded_with_their_reason_and_the_build_goes_on(tmp_path):
    root = tmp_path / "Penn_Action"
    shutil.copytree(REAL_PENN_LABELS, root / "labels")
    ids = sorted(path.stem for path in (root / "labels").glob("*.mat") if path.stem not in ("1024", "1516"))

    def rewrite(sample_id, **changes):
        mat = {
            k: v for k, v in scipy.io.loadmat(root / "labels" / f"{sample_id}.mat").items() if not k.startswith("__")
        }
        for key, value in changes.items():
            if value is None:
                mat.pop(key)
            else:
                mat[key] = value
        scipy.io.savemat(root / "labels" / f"{sample_id}.mat", mat)

    x = scipy.io.loadmat(root / "labels" / f"{ids[1]}.mat")["x"]
    x[3, 4], x[5, 6] = np.nan, np.inf
    rewrite(ids[0], visibility=None)
    rewrite(ids[1], x=x)
    rewrite(
        ids[2],
        x=np.zeros((0, 13)),
        y=np.zeros((0, 13)),
        visibility=np.zeros((0, 13)),
        nframes=[[0]],
        bbox=np.zeros((0, 4)),
    )
    rewrite(ids[3], action="breakdance")
    result = CliRunner().invoke(
        app,
        [
            "extract",
            "--dataset",
            "penn",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "skeletons.zarr"),
            "--modality",
            "pose",
        ],
    )  # a real Prefect flow run
    assert result.exit_code == 3, result.output
    assert "skeleton cache" in result.output and "42 done, 5 failed" in result.output
    failures = dict(SkeletonCache.open(tmp_path / "skeletons.zarr").failed())
    assert "lacks the fields ['visibility']" in failures[ids[0]]
    assert "'x' holds 2 NaN or infinite" in failures[ids[1]]
    assert failures[ids[2]].startswith("empty_skeleton") and failures["1516"].startswith("empty_skeleton")
    assert failures[ids[3]].startswith("unknown_label") and "breakdance" in failures[ids[3]]


def _skeleton(frames=40, seed=0):
    rng = np.random.default_rng(seed)
    skeleton = np.zeros((frames, 1, 13, 3), np.float32)
    skeleton[..., 0] = 200 + 40 * rng.random((frames, 1, 13)) + np.arange(frames)[:, None, None]  # walks right
    skeleton[..., 1] = 100 + 80 * rng.random((frames, 1, 13))
    skeleton[..., 2] = 1.0
    return skeleton


def test_normalisation_does_not_depend_on_frame_size_or_where_the_person_stands():
    skeleton = _skeleton()
    moved = skeleton.copy()
    moved[..., :2] = skeleton[..., :2] * 2.5 + np.array([700.0, -50.0], np.float32)  # a larger frame, elsewhere
    np.testing.assert_allclose(normalise(skeleton), normalise(moved), atol=1e-5)
    xy = normalise(skeleton)[..., :2]
    assert np.isclose(np.abs(xy).max(), 1.0) and np.isclose(xy[..., 0].max(), -xy[..., 0].min())
    transform = SkeletonTransform(spec=SkeletonSpec(frames=8, streams=ALL_STREAMS), layout=PENN13)
    np.testing.assert_allclose(transform(skeleton, rng=None), transform(moved, rng=None), atol=1e-5)


def test_features_of_each_stream():
    joints = normalise(_skeleton(frames=4))
    parents = bone_parents(PENN13)
    assert parents[0] == 0 and parents[3] == 1 and parents[12] == 10  # head is the root; elbow <- shoulder
    features = skeleton_features(joints, streams=ALL_STREAMS, parents=parents).reshape(4, 13, 9)
    xy = joints[..., :2][:, 0]  # (T, 13, 2)
    np.testing.assert_allclose(features[..., 0:2], xy)
    np.testing.assert_allclose(features[..., 2:4], xy - xy[:, parents])
    np.testing.assert_allclose(features[:-1, :, 4:6], xy[1:] - xy[:-1], atol=1e-6)
    assert (features[-1, :, 4:8] == 0).all() and (features[:, 0, 2:4] == 0).all() and (features[..., 8] == 1).all()
    assert bone_parents(NTU25)[0] == 0  # NTU's bone list is a tree too


def test_flip_mirrors_and_swaps_left_and_right_and_dropout_hides_joints():
    joints = normalise(_skeleton(frames=6))
    perm = PENN13.flip_permutation()
    flipped = augment_skeleton(
        joints, augment=SkeletonAugment(hflip=1.0), flip_permutation=perm, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(flipped[:, :, 1, 0], -joints[:, :, 2, 0])  # left shoulder <- mirrored right one
    np.testing.assert_allclose(flipped[:, :, 1, 1], joints[:, :, 2, 1])
    hidden = augment_skeleton(
        joints, augment=SkeletonAugment(joint_dropout=0.5), flip_permutation=perm, rng=np.random.default_rng(0)
    )
    gone = hidden[..., 2] == 0
    assert 0.3 < gone.mean() < 0.7 and (hidden[..., :2][gone] == 0).all()
    turned = augment_skeleton(
        joints,
        augment=SkeletonAugment(rotate=90, scale=0.2, shift=0.3),
        flip_permutation=perm,
        rng=np.random.default_rng(1),
    )
    # a similarity-like map: distances between joints change by at most the scale range
    before = np.linalg.norm(joints[0, 0, 1, :2] - joints[0, 0, 12, :2])
    after = np.linalg.norm(turned[0, 0, 1, :2] - turned[0, 0, 12, :2])
    assert 0.8 * before - 1e-6 <= after <= 1.2 * before + 1e-6 and not np.allclose(turned[..., :2], joints[..., :2])


def test_training_draws_new_frames_each_epoch_and_evaluation_is_fixed():
    skeleton = _skeleton(frames=64)
    transform = SkeletonTransform(spec=SkeletonSpec(frames=8), layout=PENN13)
    epoch0 = transform(skeleton, rng=np.random.default_rng((0, 0, 5)))
    epoch1 = transform(skeleton, rng=np.random.default_rng((0, 1, 5)))
    assert not np.allclose(epoch0, epoch1)
    clips = transform.test_clips(skeleton, clips=4)
    assert clips.shape == (4, 8, 13, 3)
    np.testing.assert_array_equal(clips[0], transform(skeleton, rng=None))  # the segment centres first
    np.testing.assert_array_equal(clips, transform.test_clips(skeleton, clips=4))


def test_multi_clip_logits_are_the_log_of_the_mean_probabilities():
    torch.manual_seed(0)
    star = build_model(
        ModelConfig(
            num_classes=5,
            persons=1,
            num_joints=13,
            dim=16,
            depth=1,
            heads=2,
            modality="pose",
            frames=4,
            joint_channels=9,
        )
    ).eval()
    classifier = ClipClassifier(star=star)
    joints = torch.randn(2, 3, 4, 13, 9)
    joints[..., -1] = 1.0
    with torch.no_grad():
        per_clip = torch.stack([star.forward_skeleton(joints[:, k]).softmax(-1) for k in range(3)], dim=1)
        np.testing.assert_allclose(classifier({"joints": joints}).exp(), per_clip.mean(dim=1), rtol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        star.forward_skeleton(torch.zeros(1, 4, 13, 3))


def test_pose_training_and_evaluation_on_real_penn_skeletons(real_penn, tmp_path):
    _extract(real_penn, tmp_path / "skeletons.zarr")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--from-cache",
            str(tmp_path / "skeletons.zarr"),
            "--config",
            "penn-skeleton",
            "--out",
            str(run),
            "--epochs",
            "2",
            "--dim",
            "16",
            "--heads",
            "2",
            "--val-split",
            "",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "last.pt"),
            "--cache",
            str(tmp_path / "skeletons.zarr"),
            "--split",
            "test",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scored 15/15 clips of the split" in result.output and "10 samplings per clip" in result.output


def test_every_recipe_in_configs_loads_by_name_and_by_path():
    from pipeline.training.config import CONFIGS, resolve_config

    recipes = sorted(CONFIGS.glob("*.toml"))
    assert recipes
    for path in recipes:
        by_name, by_path = (
            resolve_config(overrides={}, config_file=path.stem),
            resolve_config(overrides={}, config_file=path),
        )
        assert by_name == by_path
    penn = resolve_config(overrides={}, config_file="penn-skeleton")
    assert penn.streams == ALL_STREAMS and penn.test_clips == 10 and penn.model["depth"] == 1


def test_ntu_skeletons_without_their_videos_make_a_skeleton_cache(synthetic_ntu_copy, tmp_path):
    shutil.rmtree(synthetic_ntu_copy / "nturgb+d_rgb")
    summary = extract(
        ExtractConfig(dataset="ntu120", root=synthetic_ntu_copy, out=str(tmp_path / "ntu.zarr"), modality="pose")
    )
    assert (summary.done, summary.failed, summary.exit_code) == (60, 0, 0)
    cache = SkeletonCache.open(tmp_path / "ntu.zarr")
    assert (cache.persons, cache.num_joints) == (2, 25) and "ntu120-xsub-train" in cache.split_names
    assert all(len(cache.skeleton(row)) > 0 for row in range(len(cache)))
