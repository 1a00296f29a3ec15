"""NTU RGB+D: the `.skeleton` parser on hand-written edge cases, body selection, names, splits, classes,
and the official missing-skeleton list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import StarError
from pipeline.sources.datasets.ntu import (
    NTU_CLASS_NAMES,
    NtuReader,
    missing_skeleton_list,
    ntu_splits,
    parse_ntu_name,
)
from pipeline.sources.datasets.ntu_skeleton import (
    KINECT_COLOR_SIZE,
    parse_skeleton,
    read_ntu_skeleton,
    select_bodies,
)
from pipeline.sources.index import AnnotationIndex, build_index
from tests.fixtures.ntu_skeleton_text import joint_lines, skeleton_text

BIG_ID = 72057594037931101  # a real NTU bodyID: float64 would round it


def write(tmp_path: Path, text: str, name: str = "S001C001P001R001A001.skeleton") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="ascii", newline="")
    return path


def test_single_body_fields_confidence_and_64bit_id(tmp_path):
    joints = joint_lines(100, 50)
    joints[3] = joints[3][:-1] + "1"  # inferred
    joints[4] = joints[4][:-1] + "0"  # not tracked
    path = write(tmp_path, skeleton_text([[(BIG_ID, joints)]] * 3))
    parsed = parse_skeleton(path)
    assert parsed.num_frames == 3 and len(parsed.bodies) == 1
    assert parsed.bodies[0].body_id == BIG_ID and float(BIG_ID) != BIG_ID
    array = read_ntu_skeleton(path, frame_size=KINECT_COLOR_SIZE)
    assert array.shape == (3, 2, 25, 3) and array.dtype == np.float32
    assert array[0, 0, 0].tolist() == [100.0, 50.0, 1.0]  # colorX, colorY, tracked
    assert array[0, 0, 3, 2] == 0.5 and array[0, 0, 4, 2] == 0.0
    assert not array[:, 1].any()  # second person slot empty


def test_frames_without_bodies_have_zero_confidence(tmp_path):
    body = (1, joint_lines(100, 50))
    path = write(tmp_path, skeleton_text([[], [body], [], [body]]))
    array = read_ntu_skeleton(path, frame_size=KINECT_COLOR_SIZE)
    assert array.shape[0] == 4  # no frame dropped: skeleton frame i stays video frame i
    assert not array[[0, 2]].any() and (array[[1, 3], 0, :, 2] == 1).all()


def test_zero_bodies_in_every_frame_is_an_empty_but_valid_file(tmp_path):
    array = read_ntu_skeleton(write(tmp_path, skeleton_text([[], [], []])), frame_size=KINECT_COLOR_SIZE)
    assert array.shape == (3, 2, 25, 3) and not array.any()


def test_two_bodies_ranked_by_motion(tmp_path):
    frames = [
        [(11, joint_lines(100, 50, frame=t)), (22, joint_lines(400 + 30 * np.sin(t), 50, wobble=8, frame=t))]
        for t in range(20)
    ]
    array = read_ntu_skeleton(write(tmp_path, skeleton_text(frames)), frame_size=KINECT_COLOR_SIZE)
    assert array[:, 0, 0, 0].min() > 300  # slot 0: the body that moves
    assert np.allclose(array[:, 1, 0, 0], 100.0)  # slot 1: the still one


def test_three_bodies_short_one_dropped_and_only_two_kept(tmp_path):
    frames = []
    for t in range(30):
        bodies = [(1, joint_lines(100, 50, wobble=1, frame=t)), (2, joint_lines(300 + 20 * np.sin(t), 50, frame=t))]
        if t < 5:  # a spurious body seen in 5 frames: dropped by the length rule even though it moves most
            bodies.append((3, joint_lines(600 + 200 * t, 50, frame=t)))
        frames.append(bodies)
    path = write(tmp_path, skeleton_text(frames))
    assert len(parse_skeleton(path).bodies) == 3
    array = read_ntu_skeleton(path, frame_size=KINECT_COLOR_SIZE)
    assert array[:, 0, 0, 0].max() < 400 and array[:, 1, 0, 0].max() < 200
    assert (array[..., 2] > 0).all()  # both kept tracks present in every frame


def test_three_long_bodies_least_active_discarded(tmp_path):
    frames = [
        [
            (1, joint_lines(100, 50, frame=t)),
            (2, joint_lines(300 + 40 * np.sin(t), 50, frame=t)),
            (3, joint_lines(600 + 10 * np.sin(t), 50, frame=t)),
        ]
        for t in range(15)
    ]
    array = read_ntu_skeleton(write(tmp_path, skeleton_text(frames)), frame_size=KINECT_COLOR_SIZE)
    assert 250 < array[:, 0, 0, 0].mean() < 350 and 590 < array[:, 1, 0, 0].mean() < 620


def test_id_switch_is_stitched_into_one_track(tmp_path):
    # Kinect loses the person at frame 20 and re-detects them under a new ID: one actor, not two.
    frames = [[(1 if t < 20 else 2, joint_lines(100 + t, 50, frame=t))] for t in range(40)]
    parsed = parse_skeleton(write(tmp_path, skeleton_text(frames)))
    assert [b.body_id for b in parsed.bodies] == [1, 2]
    array = select_bodies(parsed)
    assert (array[:, 0, :, 2] == 1).all() and not array[:, 1].any()
    assert np.allclose(array[:, 0, 0, 0], 100 + np.arange(40))


def test_implausibly_wide_body_is_noise(tmp_path):
    wide = [f"0 0 3 250 200 {200 + 30 * j:.1f} {300 + (j % 2):.1f} 0 0 0 0 2" for j in range(25)]
    frames = [[(1, joint_lines(100, 50, frame=t)), (2, wide)] for t in range(20)]
    array = read_ntu_skeleton(write(tmp_path, skeleton_text(frames)), frame_size=KINECT_COLOR_SIZE)
    assert np.allclose(array[:, 0, 0, 0], 100.0) and not array[:, 1].any()


def test_extra_whitespace_crlf_tabs_and_blank_lines(tmp_path):
    clean = skeleton_text([[(BIG_ID, joint_lines(100, 50))], [(BIG_ID, joint_lines(101, 51))]])
    messy = "  " + clean.replace("\n", " \r\n").replace(" 0.2 ", "\t0.2   ").replace("25 \r\n", "25\r\n\r\n")
    a = read_ntu_skeleton(write(tmp_path, clean, "clean.skeleton"), frame_size=KINECT_COLOR_SIZE)
    b = read_ntu_skeleton(write(tmp_path, messy, "messy.skeleton"), frame_size=KINECT_COLOR_SIZE)
    assert np.array_equal(a, b)


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def test_truncated_file_names_file_and_line(tmp_path):
    text = skeleton_text([[(1, joint_lines(100, 50))]] * 3)
    lines = lines_of(text)
    cut = "\n".join(lines[:40]) + "\n"  # frame 2's body stops after 8 of its 25 joints (line 40)
    path = write(tmp_path, cut)
    with pytest.raises(StarError, match=r"S001C001P001R001A001\.skeleton, line 40: file ends inside a body of frame 2"):
        parse_skeleton(path)
    half_line = text[: text.index(lines[70]) + 12]  # cut in the middle of a joint line
    with pytest.raises(StarError, match="truncated"):
        parse_skeleton(write(tmp_path, half_line))


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (lambda ls: ls.__setitem__(4, ls[4].replace("100.0000", "abc")), 5, "b'abc' is not a number"),
        (lambda ls: ls.__setitem__(3, "24"), 4, "joint count 24, expected 25"),
        (lambda ls: ls.__setitem__(9, ls[9][:-1] + "3"), 10, "trackingState b'3' is not 0, 1 or 2"),
        (lambda ls: ls.__setitem__(1, "9"), 2, r"claims 9 bodies"),
        (lambda ls: ls.__setitem__(0, "2.5"), 1, "frame count must be an integer"),
        (lambda ls: ls.__setitem__(2, "x" + ls[2][1:]), 3, "bodyID must be an integer"),
        # one token missing from a joint line shifts everything after it: caught, never a silent array
        (lambda ls: ls.__setitem__(12, ls[12].rsplit(" ", 2)[0] + " 2"), 57, "line 13 has 11 values where 12 belong"),
        (lambda ls: ls.__setitem__(12, ls[12] + " 5"), 31, "line 13 has 13 values where 12 belong"),
        (lambda ls: ls.insert(len(ls) - 1, "7"), 58, "unexpected data after the last of 2 frames"),
    ],
)
def test_malformed_files_raise_with_line(tmp_path, edit, line, message):
    lines = lines_of(skeleton_text([[(1, joint_lines(100, 50))]] * 2))
    edit(lines)
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(StarError, match=message) as err:
        parse_skeleton(path)
    assert str(path) in str(err.value) and f"line {line}:" in str(err.value)


def test_empty_and_unreadable_files(tmp_path):
    with pytest.raises(StarError, match="empty"):
        parse_skeleton(write(tmp_path, ""))
    with pytest.raises(StarError, match="Cannot read"):
        parse_skeleton(tmp_path / "absent.skeleton")


def test_sample_name_fields_and_errors():
    name = parse_ntu_name("S001C002P003R002A013")
    assert (name.setup, name.camera, name.subject, name.replication, name.action) == (1, 2, 3, 2, 13)
    assert name.label == 12 and name.sample_id == "S001C002P003R002A013" and name.in_ntu60
    assert not parse_ntu_name("S018C001P045R001A061").in_ntu60
    for bad in ("S001C002P003R002A13", "s001C002P003R002A013", "S001C004P003R002A013", "S001C001P001R001A121"):
        with pytest.raises(StarError):
            parse_ntu_name(bad)


def test_split_membership_of_known_names():
    first = ntu_splits(parse_ntu_name("S001C001P001R001A001"), version="ntu120")
    assert first == {"ntu60-xsub": "train", "ntu60-xview": "test", "ntu120-xsub": "train", "ntu120-xset": "test"}
    assert ntu_splits(parse_ntu_name("S002C002P003R001A010"), version="ntu60") == {
        "ntu60-xsub": "test",
        "ntu60-xview": "train",
    }
    later = ntu_splits(parse_ntu_name("S018C003P045R002A061"), version="ntu120")
    assert later == {"ntu120-xsub": "train", "ntu120-xset": "train"}  # not an NTU60 sample
    assert ntu_splits(parse_ntu_name("S019C001P041R001A100"), version="ntu120")["ntu120-xsub"] == "test"


def test_official_class_names():
    assert len(NTU_CLASS_NAMES) == 120
    assert NTU_CLASS_NAMES[0] == "drink water" and NTU_CLASS_NAMES[22] == "hand waving"
    assert NTU_CLASS_NAMES[59] == "walking apart from each other" and NTU_CLASS_NAMES[66] == "hush (quite)"
    assert NTU_CLASS_NAMES[56] == "touch other person's pocket"  # straight apostrophe
    assert NTU_CLASS_NAMES[108] == "grab other person\u2019s stuff"  # typographic one
    assert NTU_CLASS_NAMES[119] == "finger-guessing game (playing rock-paper-scissors)"


def test_missing_skeleton_lists_ship_as_package_data():
    ntu60, ntu120 = missing_skeleton_list("ntu60"), missing_skeleton_list("ntu120")
    assert len(ntu60) == 302 and len(ntu120) == 535 and ntu60 <= ntu120
    assert "S001C002P005R002A008" in ntu60


def test_listed_sample_is_skipped_and_counted(synthetic_ntu_root, tmp_path):
    root = tmp_path / "ntu"
    (root / "nturgb+d_rgb").mkdir(parents=True)
    (root / "nturgb+d_skeletons").mkdir()
    source = "S001C001P001R001A010"
    for listed in ("S001C002P005R002A008", source):
        (root / "nturgb+d_rgb" / f"{listed}_rgb.avi").write_bytes(
            (synthetic_ntu_root / "nturgb+d_rgb" / f"{source}_rgb.avi").read_bytes()
        )
        (root / "nturgb+d_skeletons" / f"{listed}.skeleton").write_bytes(
            (synthetic_ntu_root / "nturgb+d_skeletons" / f"{source}.skeleton").read_bytes()
        )
    report = build_index("ntu60", root, tmp_path / "index.h5")
    assert report.status_counts == {"ok": 1, "listed_missing_skeleton": 1}
    index = AnnotationIndex(tmp_path / "index.h5")
    row = index.index_of("S001C002P005R002A008")
    assert index.status[row] == "listed_missing_skeleton" and "NTU_RGBD_samples" in index.details[row]
    assert index.skeleton(row).shape[0] == 0 and index.num_frames[row] > 0  # video still probed
    assert index.labels[row] == 7 and index.class_names[7] == "sitting down"


def test_ntu60_reads_only_its_part_and_ignores_foreign_files(synthetic_ntu_root):
    reader60 = NtuReader(synthetic_ntu_root, version="ntu60")
    reader120 = NtuReader(synthetic_ntu_root, version="ntu120")
    ids60 = [s.sample_id for s in reader60.scan().sources]
    ids120 = [s.sample_id for s in reader120.scan().sources]
    assert ids60 and all(parse_ntu_name(i).in_ntu60 for i in ids60)
    assert set(ids60) < set(ids120) and len(reader60.class_names) == 60
    assert reader60.benchmarks == ("ntu60-xsub", "ntu60-xview") and len(reader120.benchmarks) == 4


def test_not_an_ntu_root(tmp_path):
    with pytest.raises(StarError, match="nturgb"):
        NtuReader(tmp_path, version="ntu120")
