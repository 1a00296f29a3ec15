"""Clip sampling: uniform segment centres, temporal jitter, short videos, the skeleton/video common range."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sources.clips import clip_indices, frames_agree, usable_frames


def test_segment_centres_are_deterministic():
    assert clip_indices(160, 16).tolist() == list(range(5, 160, 10))
    assert clip_indices(16, 16).tolist() == list(range(16))
    assert clip_indices(103, 16).tolist() == clip_indices(103, 16).tolist()
    indices = clip_indices(103, 16)
    assert indices[0] == 3 and indices[-1] == 99 and np.all(np.diff(indices) > 0)


@pytest.mark.parametrize("frames", [1, 5, 15])
def test_short_videos_repeat_frames(frames):
    indices = clip_indices(frames, 16)
    assert len(indices) == 16 and indices.min() >= 0 and indices.max() == frames - 1
    assert np.all(np.diff(indices) >= 0)
    assert set(indices.tolist()) == set(range(frames))  # every frame used, some twice


def test_jitter_stays_inside_each_segment():
    rng = np.random.default_rng(0)
    for frames in (7, 16, 64, 301):
        for _ in range(50):
            indices = clip_indices(frames, 16, rng=rng)
            bounds = np.arange(17) * frames / 16
            assert np.all(indices >= np.floor(bounds[:-1])) and np.all(indices < np.ceil(bounds[1:]))
            assert np.all(np.diff(indices) >= 0) and indices.max() < frames


def test_jitter_is_reproducible_and_varies():
    a = clip_indices(300, 16, rng=np.random.default_rng(1))
    b = clip_indices(300, 16, rng=np.random.default_rng(1))
    c = clip_indices(300, 16, rng=np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_arguments():
    with pytest.raises(ValueError):
        clip_indices(0, 16)
    with pytest.raises(ValueError):
        clip_indices(10, 0)


def test_common_range_of_skeleton_and_video():
    assert usable_frames(103, 100) == 100 and usable_frames(90, 103) == 90 and usable_frames(0, 50) == 0
    assert frames_agree(103, 100) and frames_agree(100, 103)
    assert frames_agree(300, 272) and not frames_agree(300, 260)  # 10 % slack
    assert frames_agree(10, 7) and not frames_agree(10, 6)  # at least 3 frames slack
