"""CachedClips, VideoClips and the cache-valid augmentations, on the toy cache and the extracted video cache."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.models.video import mc3_18

from model.star import ModelConfig, build_model
from model.tokens import joint_heatmaps
from pipeline.core.errors import StarError
from pipeline.extraction.weights import backbone_from_fingerprint, weights_id
from pipeline.sources.index import default_index_path
from pipeline.sources.layouts import layout_from_spec
from pipeline.training.augment import ClipAugment, augment_maps, augment_video, flip_maps
from pipeline.training.classifier import ClipClassifier
from pipeline.training.data import CachedClips, VideoClips
from pipeline.training.splits import cache_split_name, read_cache_meta
from tests.fixtures.feature_caches import TOY_BENCHMARK, TOY_CLASSES, TOY_LAYOUT, write_toy_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def toy_cache(tmp_path):
    return write_toy_cache(tmp_path / "toy.zarr", failed=(2,), pending=(5, 7))


def test_cached_clips_reads_only_done_samples_of_the_split(toy_cache):
    train = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-train")
    test = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-test")
    assert 2 not in train.rows and 5 not in train.rows and 7 not in test.rows
    assert sorted(train.rows.tolist() + test.rows.tolist()) == [r for r in range(24) if r not in (2, 5, 7)]
    assert all(row // 4 % 4 == 3 for row in test.rows)
    item = train[0]
    assert item["local"].shape == (4, 256, 4, 4) and item["global"].shape == (4, 512, 2, 2)
    assert item["heatmaps"].shape == (4, 5, 4, 4) and item["joints"].shape == (4, 5, 3)
    assert (
        item["local"].dtype == torch.float16
        and item["joints"].dtype == torch.float32
        and item["label"].dtype == torch.int64
    )
    stored = toy_cache.read(int(train.rows[0]))  # float32, the same values
    assert torch.equal(item["global"].float(), torch.from_numpy(stored["global"]))
    assert int(item["label"]) == stored["label"]


def test_preloaded_and_subset_clips_equal_the_read_ones(toy_cache, monkeypatch):
    split = f"{TOY_BENCHMARK}-train"
    read = CachedClips(path=toy_cache.path, split_name=split, augment=ClipAugment(joint_dropout=0.3))
    wanted = read.sample_ids[::3]
    subset = CachedClips(
        path=toy_cache.path, split_name=split, sample_ids=wanted, preload=True, augment=ClipAugment(joint_dropout=0.3)
    )
    assert subset.sample_ids.tolist() == wanted.tolist() and subset._cache is not None
    for epoch in (0, 1):  # augmentation of a preloaded sample works on a copy: the next epoch starts clean
        read.set_epoch(epoch)
        subset.set_epoch(epoch)
        for i, row in enumerate(subset.rows):
            a, b = subset[i], read[int(np.flatnonzero(read.rows == row)[0])]
            assert all(torch.equal(a[key], b[key]) for key in a)
    monkeypatch.setattr(
        os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 64}[name]
    )  # a 256 KiB machine
    with pytest.raises(
        StarError,
        match="preloading 17 cached samples needs 1 MiB, more than half of this machine.s 0 MiB: "
        "train with --set preload=false",
    ):
        CachedClips(path=toy_cache.path, split_name=split, preload=True)


def test_cached_clips_pickles_without_a_store_and_loads_in_worker_processes(toy_cache):
    dataset = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-train")
    dataset[0]  # opens the store in this process
    copy = pickle.loads(pickle.dumps(dataset))
    assert dataset._cache is not None and copy._cache is None  # the store handle stays behind, the path travels
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    labels = torch.cat([batch["label"] for batch in loader])
    assert labels.tolist() == dataset.labels.tolist()


def test_split_names_and_errors(toy_cache, tmp_path):
    assert cache_split_name(toy_cache, benchmark="", split="train") == f"{TOY_BENCHMARK}-train"
    assert cache_split_name(toy_cache, benchmark=TOY_BENCHMARK, split="test") == f"{TOY_BENCHMARK}-test"
    with pytest.raises(StarError, match="no split 'val'"):
        cache_split_name(toy_cache, benchmark="", split="val")
    with pytest.raises(StarError, match="No feature cache"):
        read_cache_meta(tmp_path / "nowhere.zarr")
    meta = read_cache_meta(toy_cache.path)
    assert meta.class_names == TOY_CLASSES and meta.layout.name == "toy5" and (meta.persons, meta.num_joints) == (1, 5)
    assert (meta.clip_spec.frames, meta.clip_spec.size, meta.clip_spec.crop) == (4, 32, "full")


def test_flip_keeps_joints_on_their_heatmap_peaks_and_swaps_sides(toy_cache):
    layout = layout_from_spec(TOY_LAYOUT, where="test")
    sample = toy_cache.read(0)
    flipped = flip_maps(sample, flip_permutation=layout.flip_permutation())
    # The heatmaps of the flipped joints, drawn from scratch, equal the mirrored cached heatmaps.
    joints = torch.from_numpy(flipped["joints"].reshape(4, 5, 3))[None]
    redrawn = joint_heatmaps(joints, size=(4, 4), sigma=1.0)[0].numpy()
    np.testing.assert_allclose(flipped["heatmaps"], redrawn, atol=2e-3)  # float16 storage
    # Left hand of the flipped clip is the mirrored right hand of the original.
    original_right = sample["joints"][:, 0, 2]
    assert np.allclose(flipped["joints"][:, 0, 1, 0], 4 - original_right[:, 0])
    assert np.array_equal(flipped["local"], sample["local"][..., ::-1])
    assert np.array_equal(flipped["global"][..., 0], sample["global"][..., -1])
    # A missing joint stays missing, untouched.
    assert flipped["joints"][0, 0, 0, 2] == 0 and flipped["joints"][0, 0, 0, 0] == sample["joints"][0, 0, 0, 0]
    twice = flip_maps(flipped, flip_permutation=layout.flip_permutation())
    for key in ("local", "global", "heatmaps", "joints"):
        np.testing.assert_allclose(twice[key], sample[key], atol=1e-6)


def test_joint_dropout_hides_joints_and_their_heatmaps(toy_cache):
    sample = toy_cache.read(0)
    augmented = augment_maps(
        sample, augment=ClipAugment(joint_dropout=0.5), flip_permutation=None, rng=np.random.default_rng(3)
    )
    hidden = augmented["joints"][..., 2] == 0  # (T, P, J)
    newly_hidden = hidden & (sample["joints"][..., 2] > 0)
    assert 0 < newly_hidden.sum() < hidden.size
    channels = hidden.reshape(4, 5)
    assert np.all(augmented["heatmaps"][channels] == 0)
    visible = ~channels
    assert np.array_equal(augmented["heatmaps"][visible], sample["heatmaps"][visible])
    assert np.array_equal(augmented["local"], sample["local"])


def test_augmentation_depends_only_on_seed_epoch_and_row(toy_cache):
    layout = layout_from_spec(TOY_LAYOUT, where="test")
    augment = ClipAugment(hflip=0.5, joint_dropout=0.2)
    a = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-train", augment=augment, layout=layout, seed=7)
    b = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-train", augment=augment, layout=layout, seed=7)
    plain = CachedClips(path=toy_cache.path, split_name=f"{TOY_BENCHMARK}-train")
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in (0, 3):
            assert torch.equal(a[i]["joints"], b[i]["joints"]) and torch.equal(a[i]["global"], b[i]["global"])
    changed = sum(not torch.equal(a[i]["joints"], plain[i]["joints"]) for i in range(len(a)))
    assert changed == len(a)  # joint dropout at 0.2 over 20 joints touches every clip
    a.set_epoch(0)
    first = [a[i]["global"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(x, a[i]["global"]) for i, x in enumerate(first))  # flips differ between epochs
    with pytest.raises(StarError, match="hflip needs the joint layout"):
        augment_maps(
            toy_cache.read(0), augment=ClipAugment(hflip=1.0), flip_permutation=None, rng=np.random.default_rng(0)
        )


def test_video_flip_mirrors_pixels_and_joints():
    layout = layout_from_spec(TOY_LAYOUT, where="test")
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    frames[:, 10, 3] = 255  # a bright pixel at x = 3, y = 10
    joints = np.zeros((2, 1, 5, 3), dtype=np.float32)
    joints[:, 0, 1] = (3.0, 10.0, 1.0)  # left hand on the bright pixel
    out_frames, out_joints = augment_video(
        frames,
        joints,
        augment=ClipAugment(hflip=1.0),
        flip_permutation=layout.flip_permutation(),
        rng=np.random.default_rng(0),
    )
    assert out_frames[0, 10, 28].max() == 255  # 32 - 1 - 3
    assert tuple(out_joints[0, 0, 2]) == (28.0, 10.0, 1.0)  # now the right hand, on the mirrored pixel
    assert out_joints[0, 0, 1, 2] == 0  # the (missing) right hand became the missing left hand


def test_video_clips_reproduce_the_cached_clip(video_cache):
    """Without jitter, decoding + the rebuilt extraction backbone give the cached maps (float16 storage aside)
    and the same logits: the two data paths agree."""
    meta = read_cache_meta(video_cache)
    cached = CachedClips(path=meta.path, split_name="ntu120-xsub-train")
    index = default_index_path(cache_path=meta.path, dataset="ntu120")
    video = VideoClips(index_path=index, sample_ids=cached.sample_ids, spec=meta.clip_spec)
    assert len(video) == len(cached) == 4 and video.labels.tolist() == cached.labels.tolist()
    backbone = backbone_from_fingerprint(meta.fingerprint)
    star = build_model(
        ModelConfig(
            num_classes=len(meta.class_names),
            persons=meta.persons,
            num_joints=meta.num_joints,
            dim=32,
            depth=1,
            heads=2,
            frames=meta.clip_spec.frames,
        )
    )
    model = ClipClassifier(star=star, backbone=backbone).eval()
    for i in range(len(video)):
        from_cache, from_video = cached[i], video[i]
        assert from_video["video"].shape == (4, 3, 32, 32) and from_video["video"].dtype == torch.uint8
        with torch.no_grad():
            local, global_, heatmaps, joints = star.inputs_from_video(
                from_video["video"][None], from_video["joints"][None], backbone=backbone
            )
            logits_cache = model({k: v[None] for k, v in from_cache.items()})
            logits_video = model({k: v[None] for k, v in from_video.items()})
        torch.testing.assert_close(local[0], from_cache["local"].float(), atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(global_[0], from_cache["global"].float(), atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(heatmaps[0], from_cache["heatmaps"].float(), atol=1e-3, rtol=0)
        torch.testing.assert_close(joints[0], from_cache["joints"])
        torch.testing.assert_close(logits_video, logits_cache, atol=1e-4, rtol=1e-4)

    jittered = VideoClips(index_path=index, sample_ids=cached.sample_ids, spec=meta.clip_spec, jitter=True, seed=1)
    draws = set()
    for epoch in range(4):
        jittered.set_epoch(epoch)
        draws.add(tuple(jittered[0]["video"].float().mean(dim=(1, 2, 3)).tolist()))  # one brightness per frame
    assert len(draws) > 1  # temporal jitter picks other frames in other epochs
    with pytest.raises(StarError, match="not in the annotation index"):
        VideoClips(index_path=index, sample_ids=["S999C001P001R001A001"], spec=meta.clip_spec)


def test_backbone_from_a_weights_file_needs_that_file(tmp_path):
    path = tmp_path / "mc3_18.pth"
    torch.manual_seed(5)
    torch.save(mc3_18().state_dict(), path)
    fingerprint = {"weights": weights_id(str(path))}
    with pytest.raises(StarError, match="pass that state-dict file with --weights"):
        backbone_from_fingerprint(fingerprint)
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the same file")
    with pytest.raises(StarError, match="is not the backbone weights file of the cache"):
        backbone_from_fingerprint(fingerprint, weights=str(other))
    backbone = backbone_from_fingerprint(fingerprint, weights=str(path))
    assert torch.equal(
        backbone.layer4[0].conv1[0].weight, torch.load(path, weights_only=True)["layer4.0.conv1.0.weight"]
    )
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
