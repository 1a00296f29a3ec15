"""Every file a command reads, broken in every common way: exit code 1, one line naming the file, nothing changed.

Each case replaces one input of an otherwise working command line (a checkpoint, a pose file, a video, a cache,
an index, a config file, a weights file, a custom dataset's manifest / layout / class list) with a broken
version of it, runs the real command through Typer, and checks the whole outcome: exit code 1, a single line
on stderr that starts with "Error:" and names the file, and every file under the test's folders exactly as it
was (contents and modification times). The broken versions: empty, truncated, random bytes, a folder, a zarr
store, an image, and wrong content (another model's checkpoint, a pose of another joint layout, ...).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli import app
from pipeline.core.errors import StarError
from pipeline.sources.datasets.folder import read_pose_file
from pipeline.sources.datasets.ntu_skeleton import parse_skeleton_bytes
from pipeline.sources.index import AnnotationIndex, build_index
from pipeline.sources.layouts import COCO17

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = "S001C002P003R001A023"
KINDS = ("empty", "truncated", "random", "folder", "zarr", "image")


def _digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under `root`: content hash (files) and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        content = hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (content, stat.st_mtime_ns)
    return state


def _break(good: Path, bad: Path, kind: str) -> Path:
    """Write the `kind` breakage of the file or store `good` at `bad` (which keeps good's name)."""
    bad.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        bad.mkdir() if good.is_dir() else bad.write_bytes(b"")
    elif kind == "truncated":
        if good.is_dir():  # a store whose metadata was cut short
            shutil.copytree(good, bad)
            meta = bad / "zarr.json"
            meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
        else:
            data = good.read_bytes()
            bad.write_bytes(data[: max(1, len(data) // 2 - 7)])  # an odd cut: mid-token, mid-record
    elif kind == "random":
        bad.write_bytes(np.random.default_rng(len(bad.name)).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "folder":
        bad.mkdir()
        (bad / "notes.txt").write_text("not what the command wants\n")
    elif kind == "zarr":
        group = zarr.open_group(str(bad), mode="w", zarr_format=3)
        group.create_array("values", shape=(4,), dtype=np.float32)[:] = 1.0
    elif kind == "image":
        cv2.imwrite(str(bad.with_name("frame.png")), np.full((24, 32, 3), 127, np.uint8))
        bad.with_name("frame.png").rename(bad)
    else:
        raise ValueError(kind)
    return bad


@pytest.fixture(scope="module")
def world(video_cache, video_checkpoint, tmp_path_factory):
    """The session's generated NTU dataset, its cache, index and trained checkpoint; pose files and a config file.
    `watched`: every folder of the world, which a refused command must leave as it was."""
    folder = tmp_path_factory.mktemp("world")
    cache, checkpoint = video_cache, video_checkpoint
    extracted = Path(cache).parent
    root = extracted / "ntu"
    skeleton = root / "nturgb+d_skeletons" / f"{SAMPLE}.skeleton"
    config = folder / "config.toml"
    config.write_text(
        'preset = "small"\nbenchmark = "ntu120-xsub"\nepochs = 1\nbatch_size = 2\nworkers = 0\n\n'
        "[model]\ndim = 32\ndepth = 1\nheads = 2\n"
    )
    state = torch.load(checkpoint, weights_only=True)
    other = folder / "other.pt"  # another model config: the weights no longer fit it
    torch.save({**state, "model_config": {**state["model_config"], "dim": 64}}, other)
    penn_pose = folder / "penn_layout.npz"  # a pose of another joint layout (13 joints)
    np.savez(penn_pose, keypoints=np.ones((40, 1, 13, 3), np.float32))
    return {
        "folder": folder,
        "watched": [folder, extracted, checkpoint.parent],
        "root": root,
        "cache": Path(cache),
        "index": extracted / "ntu120-index.h5",
        "checkpoint": checkpoint,
        "other_checkpoint": other,
        "video": root / "nturgb+d_rgb" / f"{SAMPLE}_rgb.avi",
        "skeleton": skeleton,
        "config": config,
        "penn_pose": penn_pose,
    }


def _run(args: list) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the test shows it whole
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def _check_refused(args: list, *, names: Path, watched: list[Path]) -> str:
    before = [_digest(p) for p in watched]
    code, lines = _run(args)
    assert code == 1, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert str(names) in lines[0] or names.name in lines[0], (names, lines[0])
    assert [_digest(p) for p in watched] == before, "a refused command changed files on disk"
    return lines[0]


# Each slot: which input is broken and the command line that reads it (w: the world, bad: the broken input).
SLOTS = {
    "predict --checkpoint": (
        "checkpoint",
        lambda w, bad: ["predict", w["video"], "--pose", w["skeleton"], "--checkpoint", bad, "--device", "cpu"],
    ),
    "predict --pose .skeleton": (
        "skeleton",
        lambda w, bad: ["predict", w["video"], "--pose", bad, "--checkpoint", w["checkpoint"], "--device", "cpu"],
    ),
    "predict --pose .npz": (
        "pose.npz",
        lambda w, bad: ["predict", w["video"], "--pose", bad, "--checkpoint", w["checkpoint"], "--device", "cpu"],
    ),
    "predict --pose .json": (
        "pose.json",
        lambda w, bad: ["predict", w["video"], "--pose", bad, "--checkpoint", w["checkpoint"], "--device", "cpu"],
    ),
    "pose VIDEO": ("video", lambda w, bad: ["pose", bad, "-o", w["folder"] / "posed.json", "--no-progress"]),
    "predict VIDEO": (
        "video",
        lambda w, bad: ["predict", bad, "--pose", w["skeleton"], "--checkpoint", w["checkpoint"], "--device", "cpu"],
    ),
    "explain --checkpoint": (
        "checkpoint",
        lambda w, bad: [
            "explain",
            w["video"],
            "--pose",
            w["skeleton"],
            "--checkpoint",
            bad,
            "--out",
            w["folder"] / "explained",
            "--device",
            "cpu",
        ],
    ),
    "explain --compare": (
        "checkpoint",
        lambda w, bad: [
            "explain",
            w["video"],
            "--pose",
            w["skeleton"],
            "--checkpoint",
            w["checkpoint"],
            "--compare",
            bad,
            "--out",
            w["folder"] / "explained",
            "--device",
            "cpu",
        ],
    ),
    "evaluate --checkpoint": (
        "checkpoint",
        lambda w, bad: [
            "evaluate",
            "--checkpoint",
            bad,
            "--cache",
            w["cache"],
            "--out",
            w["folder"] / "evaluated",
            "--workers",
            0,
            "--device",
            "cpu",
        ],
    ),
    "evaluate --cache": (
        "cache",
        lambda w, bad: [
            "evaluate",
            "--checkpoint",
            w["checkpoint"],
            "--cache",
            bad,
            "--out",
            w["folder"] / "evaluated",
            "--workers",
            0,
            "--device",
            "cpu",
        ],
    ),
    "train --from-cache": (
        "cache",
        lambda w, bad: [
            "train",
            "--from-cache",
            bad,
            "--out",
            w["folder"] / "new-run",
            "--config",
            w["config"],
            "--no-progress",
        ],
    ),
    "train --config": (
        "config",
        lambda w, bad: [
            "train",
            "--from-cache",
            w["cache"],
            "--out",
            w["folder"] / "new-run",
            "--config",
            bad,
            "--no-progress",
        ],
    ),
    "train --end-to-end --index": (
        "index",
        lambda w, bad: [
            "train",
            "--from-cache",
            w["cache"],
            "--out",
            w["folder"] / "new-run",
            "--config",
            w["config"],
            "--end-to-end",
            "--index",
            bad,
            "--no-progress",
        ],
    ),
    "train --end-to-end --init": (
        "checkpoint",
        lambda w, bad: [
            "train",
            "--from-cache",
            w["cache"],
            "--out",
            w["folder"] / "new-run",
            "--config",
            w["config"],
            "--end-to-end",
            "--init",
            bad,
            "--no-progress",
        ],
    ),
    "cache info": ("cache", lambda w, bad: ["cache", "info", bad]),
    "extract --out": (
        "cache",
        lambda w, bad: [
            "extract",
            "--dataset",
            "ntu120",
            "--root",
            w["root"],
            "--out",
            bad,
            "--index",
            w["folder"] / "fresh-index.h5",
            "--frames",
            4,
            "--size",
            32,
            "--weights",
            "random",
            "--device",
            "cpu",
        ],
    ),
    "extract --index": (
        "index",
        lambda w, bad: [
            "extract",
            "--dataset",
            "ntu120",
            "--root",
            w["root"],
            "--out",
            w["folder"] / "fresh.zarr",
            "--index",
            bad,
            "--frames",
            4,
            "--size",
            32,
            "--weights",
            "random",
            "--device",
            "cpu",
        ],
    ),
    "extract --root": (
        "root",
        lambda w, bad: [
            "extract",
            "--dataset",
            "ntu120",
            "--root",
            bad,
            "--out",
            w["folder"] / "fresh.zarr",
            "--index",
            w["folder"] / "fresh-index.h5",
            "--frames",
            4,
            "--size",
            32,
            "--weights",
            "random",
            "--device",
            "cpu",
        ],
    ),
    "extract --weights": (
        "weights",
        lambda w, bad: [
            "extract",
            "--dataset",
            "ntu120",
            "--root",
            w["root"],
            "--out",
            w["folder"] / "fresh.zarr",
            "--index",
            w["folder"] / "fresh-index.h5",
            "--frames",
            4,
            "--size",
            32,
            "--weights",
            bad,
            "--device",
            "cpu",
        ],
    ),
}


def _good_input(world: dict, what: str, tmp_path: Path) -> Path:
    """A working version of the input `what` (the breakages are made from it)."""
    if what in ("checkpoint", "skeleton", "video", "config", "cache", "index", "root"):
        return world[what]
    if what == "pose.npz":
        np.savez(tmp_path / "good.npz", keypoints=np.zeros((40, 2, 25, 3), np.float32))
        return tmp_path / "good.npz"
    if what == "pose.json":
        (tmp_path / "good.json").write_text(json.dumps({"keypoints": [[[[10.0, 20.0, 1.0]] * 25]] * 40}))
        return tmp_path / "good.json"
    if what == "weights":
        torch.save({"stem.0.weight": torch.zeros(64, 3, 3, 7, 7)}, tmp_path / "good-weights.pt")
        return tmp_path / "good-weights.pt"
    raise ValueError(what)


# Not breakages: an empty folder is a fine place for a new cache, and a dataset folder has no truncated form (its
# broken files are per-sample failures, tested below).
FINE = {("extract --out", "empty"), ("extract --root", "truncated")}


@pytest.mark.parametrize(
    ("slot", "kind"), [(slot, kind) for slot in sorted(SLOTS) for kind in KINDS if (slot, kind) not in FINE]
)
def test_a_broken_input_is_refused_in_one_line_and_changes_nothing(world, tmp_path, slot, kind):
    what, command = SLOTS[slot]
    good = _good_input(world, what, tmp_path)
    bad = _break(good, tmp_path / "bad" / good.name, kind)
    _check_refused(command(world, bad), names=bad, watched=[*world["watched"], tmp_path])


def test_wrong_content_is_refused_in_one_line(world, tmp_path):
    """Readable files that hold the wrong thing: another model's checkpoint, another layout's pose, a video as pose."""
    w = world
    watched = [*w["watched"], tmp_path]
    line = _check_refused(
        ["predict", w["video"], "--pose", w["skeleton"], "--checkpoint", w["other_checkpoint"]],
        names=w["other_checkpoint"],
        watched=watched,
    )
    assert "dim" in line or "shape" in line
    line = _check_refused(
        ["predict", w["video"], "--pose", w["penn_pose"], "--checkpoint", w["checkpoint"]],
        names=w["penn_pose"],
        watched=watched,
    )
    assert "13" in line and "25" in line
    as_pose = shutil.copy(w["video"], tmp_path / "video.skeleton")  # a video named like a skeleton
    _check_refused(
        ["predict", w["video"], "--pose", as_pose, "--checkpoint", w["checkpoint"]],
        names=Path(as_pose),
        watched=watched,
    )
    config = tmp_path / "typo.toml"
    config.write_text("epochz = 3\n")
    line = _check_refused(
        ["train", "--from-cache", w["cache"], "--out", tmp_path / "run", "--config", config],
        names=config,
        watched=watched,
    )
    assert "epochz" in line
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2, 3]\n")
    _check_refused(
        ["train", "--from-cache", w["cache"], "--out", tmp_path / "run", "--config", listed],
        names=listed,
        watched=watched,
    )
    foreign = tmp_path / "foreign.h5"  # an HDF5 file, but not an annotation index
    with h5py.File(foreign, "w") as h5:
        h5.create_dataset("values", data=np.arange(4))
    extract = [
        "extract",
        "--dataset",
        "ntu120",
        "--root",
        w["root"],
        "--frames",
        4,
        "--size",
        32,
        "--weights",
        "random",
    ]
    _check_refused([*extract, "--out", tmp_path / "new.zarr", "--index", foreign], names=foreign, watched=watched)
    # The existing cache with other settings: refused before the index next to it is touched.
    line = _check_refused(
        [*extract[:-6], "--frames", 4, "--size", 64, "--weights", "random", "--out", w["cache"]],
        names=w["cache"],
        watched=watched,
    )
    assert "input_size" in line
    outside = tmp_path / "outside.npz"  # a pose in the pixels of a 1920x1080 original, for the 96x54 video
    np.savez(outside, keypoints=np.full((40, 1, 25, 3), [900.0, 600.0, 1.0], np.float32))
    line = _check_refused(
        ["predict", w["video"], "--pose", outside, "--checkpoint", w["checkpoint"]], names=outside, watched=watched
    )
    assert "96x54 frame" in line and "x 900..900" in line
    state = torch.load(w["checkpoint"], weights_only=True)  # a checkpoint whose fingerprint lost its layout
    fingerprint = {k: v for k, v in state["fingerprint"].items() if k != "layout"}
    torch.save({**state, "fingerprint": fingerprint}, tmp_path / "no-layout.pt")
    _check_refused(
        ["predict", w["video"], "--pose", w["skeleton"], "--checkpoint", tmp_path / "no-layout.pt"],
        names=tmp_path / "no-layout.pt",
        watched=watched,
    )


def test_resume_from_a_broken_last_checkpoint_is_refused(world, tmp_path):
    run = tmp_path / "run"
    for kind in ("empty", "truncated", "random", "image"):
        shutil.rmtree(run, ignore_errors=True)
        _break(world["checkpoint"], run / "last.pt", kind)
        _check_refused(
            ["train", "--out", run, "--resume", "--no-progress"],
            names=run / "last.pt",
            watched=[*world["watched"], tmp_path],
        )


CUSTOM_FILES = ("manifest.csv", "layout.json", "classes.txt")


# A class list cut after a line is a valid shorter list: the samples of the classes it lost fail as unknown_label.
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (name, kind)
        for name in CUSTOM_FILES
        for kind in ("empty", "truncated", "random", "folder", "image")
        if (name, kind) != ("classes.txt", "truncated")
    ],
)
def test_a_broken_custom_dataset_file_is_refused(tmp_path, name, kind):
    """A custom folder's manifest, layout and class list: refused before anything is indexed or extracted."""
    root = tmp_path / "custom"
    (root / "videos").mkdir(parents=True)
    (root / "manifest.csv").write_text(
        "video,label,split,pose\nvideos/a.avi,wave,train,poses/a.npz\nvideos/b.avi,jump,test,poses/b.npz\n"
    )
    (root / "layout.json").write_text('{"layout": "coco17", "persons": 1}\n')
    (root / "classes.txt").write_text("wave\njump\n")
    good = tmp_path / name
    shutil.move(root / name, good)
    _break(good, root / name, kind)
    _check_refused(
        [
            "extract",
            "--dataset",
            "folder",
            "--root",
            root,
            "--out",
            tmp_path / "out" / "cache.zarr",
            "--weights",
            "random",
        ],
        names=root / name,
        watched=[tmp_path],
    )


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_as_a_skeleton_or_raise_star_error(data):
    try:
        parse_skeleton_bytes(data, source="generated.skeleton")
    except StarError as err:
        assert "generated.skeleton" in str(err)


valid_joint = st.lists(
    st.one_of(st.floats(allow_nan=True), st.integers(-5, 5), st.text(max_size=3), st.none()), min_size=0, max_size=4
)
json_pose = st.recursive(
    st.one_of(valid_joint, st.none(), st.integers(), st.text(max_size=4)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["keypoints", "x"]), inner, max_size=2),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(json_pose)
def test_any_json_reads_as_a_pose_or_raises_star_error(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("pose") / "pose.json"
    path.write_text(json.dumps({"keypoints": value}))
    try:
        pose = read_pose_file(path, layout=COCO17, persons=1)
    except StarError as err:
        assert str(path) in str(err)
    else:
        assert pose.shape[1:] == (1, 17, 3) and np.isfinite(pose).all()


@pytest.mark.parametrize("kind", KINDS)
def test_a_broken_sample_file_fails_its_sample_with_the_file_named(world, tmp_path, kind):
    """Files of one sample inside a dataset (video, skeleton) fail that sample, with a reason naming the file;
    the others are indexed as usual."""
    root = Path(shutil.copytree(world["root"], tmp_path / "ntu"))
    for good in (world["skeleton"], world["video"]):
        broken = root / good.relative_to(world["root"])
        broken.unlink()
        _break(good, broken, kind)
    report = build_index("ntu120", root, tmp_path / "index.h5")
    index = AnnotationIndex(tmp_path / "index.h5")
    row = index.index_of(SAMPLE)
    # The annotation's problem ranks first (a skeleton-only cache needs to know it), the video's comes second.
    assert index.status[row] == "malformed_skeleton" and SAMPLE in index.details[row]
    assert report.status_counts == {"ok": len(index) - 1, "malformed_skeleton": 1}
    assert "_rgb.avi" in index.details[row].split(";", 1)[1]
