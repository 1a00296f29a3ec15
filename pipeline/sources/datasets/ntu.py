"""NTU RGB+D 60 and 120: sample names, the 120 official class names, the four benchmarks, the
official missing-skeleton lists, and the reader the annotation index uses.

Layout on disk: `<root>/nturgb+d_rgb/<id>_rgb.avi` and
`<root>/nturgb+d_skeletons/<id>.skeleton`; other folders named `nturgb+d_rgb*` / `nturgb+d_skeletons*`
(CTR-GCN keeps NTU120's extra part in `nturgb+d_skeletons120/`) are read too. A sample found in
either folder is indexed; the missing half becomes its status. Files whose names are not
`SsssCcccPpppRrrrAaaa` are reported as ignored, not read.

"ntu60" is the S001-S017 / A001-A060 part of NTU120 with benchmarks ntu60-xsub and
ntu60-xview; "ntu120" holds every sample and exposes all four benchmarks, ntu60-* limited to that
part. Labels are A - 1. Samples on the official missing-skeleton list (package data; the NTU120 list
is a superset of the NTU60 one) get the status `listed_missing_skeleton` and their skeleton is not
read. The skeleton parser and the choice of two persons: `pipeline/sources/datasets/ntu_skeleton.py`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from pipeline.core.errors import StarError
from pipeline.sources.datasets.ntu_skeleton import KINECT_COLOR_SIZE, read_ntu_skeleton
from pipeline.sources.datasets.records import (
    LISTED_MISSING_SKELETON,
    MALFORMED_SKELETON,
    MISSING_SKELETON,
    DatasetScan,
    SampleRecord,
    SampleSource,
    assemble_record,
    probe_for_record,
)
from pipeline.sources.layouts import NTU25

SAMPLE_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
VIDEO_SUFFIX = "_rgb.avi"
SKELETON_SUFFIX = ".skeleton"
VIDEO_FOLDER_PREFIX = "nturgb+d_rgb"
SKELETON_FOLDER_PREFIX = "nturgb+d_skeletons"
PERSONS = 2

NTU60_LAST_SETUP = 17
NTU60_LAST_ACTION = 60

# The official splits (CTR-GCN, mmaction2, pyskl and deephar agree on every list).
NTU60_TRAIN_SUBJECTS = frozenset((1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
NTU60_TRAIN_CAMERAS = frozenset((2, 3))
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82,
     83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
)  # fmt: skip
# NTU120 cross-setup: even setup numbers train, odd ones test.

NTU60_BENCHMARKS = ("ntu60-xsub", "ntu60-xview")
NTU120_BENCHMARKS = NTU60_BENCHMARKS + ("ntu120-xsub", "ntu120-xset")
MISSING_LISTS = {
    "ntu60": "NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": "NTU_RGBD120_samples_with_missing_skeletons.txt",
}

# The official README names, A001..A120, trailing period dropped, quirks kept:
# "quite" in A067, typographic apostrophes in A109 and A117, a straight one in A057.
NTU_CLASS_NAMES = (
    "drink water",  # A001
    "eat meal/snack",  # A002
    "brushing teeth",  # A003
    "brushing hair",  # A004
    "drop",  # A005
    "pickup",  # A006
    "throw",  # A007
    "sitting down",  # A008
    "standing up (from sitting position)",  # A009
    "clapping",  # A010
    "reading",  # A011
    "writing",  # A012
    "tear up paper",  # A013
    "wear jacket",  # A014
    "take off jacket",  # A015
    "wear a shoe",  # A016
    "take off a shoe",  # A017
    "wear on glasses",  # A018
    "take off glasses",  # A019
    "put on a hat/cap",  # A020
    "take off a hat/cap",  # A021
    "cheer up",  # A022
    "hand waving",  # A023
    "kicking something",  # A024
    "reach into pocket",  # A025
    "hopping (one foot jumping)",  # A026
    "jump up",  # A027
    "make a phone call/answer phone",  # A028
    "playing with phone/tablet",  # A029
    "typing on a keyboard",  # A030
    "pointing to something with finger",  # A031
    "taking a selfie",  # A032
    "check time (from watch)",  # A033
    "rub two hands together",  # A034
    "nod head/bow",  # A035
    "shake head",  # A036
    "wipe face",  # A037
    "salute",  # A038
    "put the palms together",  # A039
    "cross hands in front (say stop)",  # A040
    "sneeze/cough",  # A041
    "staggering",  # A042
    "falling",  # A043
    "touch head (headache)",  # A044
    "touch chest (stomachache/heart pain)",  # A045
    "touch back (backache)",  # A046
    "touch neck (neckache)",  # A047
    "nausea or vomiting condition",  # A048
    "use a fan (with hand or paper)/feeling warm",  # A049
    "punching/slapping other person",  # A050
    "kicking other person",  # A051
    "pushing other person",  # A052
    "pat on back of other person",  # A053
    "point finger at the other person",  # A054
    "hugging other person",  # A055
    "giving something to other person",  # A056
    "touch other person's pocket",  # A057
    "handshaking",  # A058
    "walking towards each other",  # A059
    "walking apart from each other",  # A060
    "put on headphone",  # A061
    "take off headphone",  # A062
    "shoot at the basket",  # A063
    "bounce ball",  # A064
    "tennis bat swing",  # A065
    "juggling table tennis balls",  # A066
    "hush (quite)",  # A067
    "flick hair",  # A068
    "thumb up",  # A069
    "thumb down",  # A070
    "make ok sign",  # A071
    "make victory sign",  # A072
    "staple book",  # A073
    "counting money",  # A074
    "cutting nails",  # A075
    "cutting paper (using scissors)",  # A076
    "snapping fingers",  # A077
    "open bottle",  # A078
    "sniff (smell)",  # A079
    "squat down",  # A080
    "toss a coin",  # A081
    "fold paper",  # A082
    "ball up paper",  # A083
    "play magic cube",  # A084
    "apply cream on face",  # A085
    "apply cream on hand back",  # A086
    "put on bag",  # A087
    "take off bag",  # A088
    "put something into a bag",  # A089
    "take something out of a bag",  # A090
    "open a box",  # A091
    "move heavy objects",  # A092
    "shake fist",  # A093
    "throw up cap/hat",  # A094
    "hands up (both hands)",  # A095
    "cross arms",  # A096
    "arm circles",  # A097
    "arm swings",  # A098
    "running on the spot",  # A099
    "butt kicks (kick backward)",  # A100
    "cross toe touch",  # A101
    "side kick",  # A102
    "yawn",  # A103
    "stretch oneself",  # A104
    "blow nose",  # A105
    "hit other person with something",  # A106
    "wield knife towards other person",  # A107
    "knock over other person (hit with body)",  # A108
    "grab other person’s stuff",  # A109
    "shoot at other person with a gun",  # A110
    "step on foot",  # A111
    "high-five",  # A112
    "cheers and drink",  # A113
    "carry something with other person",  # A114
    "take a photo of other person",  # A115
    "follow other person",  # A116
    "whisper in other person’s ear",  # A117
    "exchange things with other person",  # A118
    "support somebody with hand",  # A119
    "finger-guessing game (playing rock-paper-scissors)",  # A120
)


@dataclass(frozen=True)
class NtuName:
    """The five numbers of a sample name `SsssCcccPpppRrrrAaaa`."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def sample_id(self) -> str:
        return f"S{self.setup:03d}C{self.camera:03d}P{self.subject:03d}R{self.replication:03d}A{self.action:03d}"

    @property
    def label(self) -> int:
        return self.action - 1

    @property
    def in_ntu60(self) -> bool:
        return self.setup <= NTU60_LAST_SETUP and self.action <= NTU60_LAST_ACTION


def parse_ntu_name(name: str) -> NtuName:
    """Parse `SsssCcccPpppRrrrAaaa`; StarError when the name does not have that form or range."""
    match = SAMPLE_NAME.fullmatch(name)
    if match is None:
        raise StarError(f"{name!r} is not an NTU sample name (SsssCcccPpppRrrrAaaa, e.g. S001C002P003R002A013).")
    parsed = NtuName(*(int(g) for g in match.groups()))
    if not (1 <= parsed.action <= len(NTU_CLASS_NAMES) and 1 <= parsed.camera <= 3 and parsed.setup >= 1):
        raise StarError(f"{name!r}: action must be A001-A120, camera C001-C003 and setup S001 or later.")
    return parsed


def ntu_splits(name: NtuName, *, version: str) -> dict[str, str]:
    """benchmark -> "train"/"test" for every benchmark of `version` ("ntu60"/"ntu120") that holds the sample."""
    splits: dict[str, str] = {}
    if name.in_ntu60:
        splits["ntu60-xsub"] = "train" if name.subject in NTU60_TRAIN_SUBJECTS else "test"
        splits["ntu60-xview"] = "train" if name.camera in NTU60_TRAIN_CAMERAS else "test"
    if version == "ntu120":
        splits["ntu120-xsub"] = "train" if name.subject in NTU120_TRAIN_SUBJECTS else "test"
        splits["ntu120-xset"] = "train" if name.setup % 2 == 0 else "test"
    return splits


@cache
def missing_skeleton_list(version: str) -> frozenset[str]:
    """The official list of samples with missing or incomplete skeletons (302 for ntu60, 535 for ntu120)."""
    text = resources.files("pipeline.sources.datasets").joinpath("data", MISSING_LISTS[version]).read_text("utf-8")
    # Upstream copies open with a header; only lines that are sample names count.
    return frozenset(line.strip() for line in text.splitlines() if SAMPLE_NAME.fullmatch(line.strip()))


class NtuReader:
    """NTU RGB+D 60 or 120 under `root` (the folder that holds nturgb+d_rgb/ and nturgb+d_skeletons/)."""

    layout = NTU25
    persons = PERSONS
    class_names = NTU_CLASS_NAMES
    poses_estimated = 0  # NTU ships a skeleton per video

    def __init__(self, root: Path, *, version: str) -> None:
        if version not in MISSING_LISTS:
            raise StarError(f"Unknown NTU version {version!r}; use 'ntu60' or 'ntu120'.")
        self.name = version
        self.root = Path(root).resolve()
        self.benchmarks = NTU60_BENCHMARKS if version == "ntu60" else NTU120_BENCHMARKS
        if version == "ntu60":
            self.class_names = NTU_CLASS_NAMES[:NTU60_LAST_ACTION]
        if not self.root.is_dir():
            raise StarError(f"NTU root {self.root} is not a folder.")
        children = sorted(p for p in self.root.iterdir() if p.is_dir())
        self.video_folders = [p for p in children if p.name.startswith(VIDEO_FOLDER_PREFIX)]
        self.skeleton_folders = [p for p in children if p.name.startswith(SKELETON_FOLDER_PREFIX)]
        if not self.video_folders and not self.skeleton_folders:
            raise StarError(
                f"{self.root} holds neither {VIDEO_FOLDER_PREFIX}/ nor {SKELETON_FOLDER_PREFIX}/: "
                "point at the folder that contains the NTU RGB+D video and skeleton folders."
            )

    def scan(self) -> DatasetScan:
        videos, ignored_videos = self._find(self.video_folders, VIDEO_SUFFIX)
        skeletons, ignored_skeletons = self._find(self.skeleton_folders, SKELETON_SUFFIX)
        default_video = self.video_folders[0] if self.video_folders else self.root / VIDEO_FOLDER_PREFIX
        default_skeleton = self.skeleton_folders[0] if self.skeleton_folders else self.root / SKELETON_FOLDER_PREFIX
        sources = [
            SampleSource(
                sample_id=sample_id,
                video_path=videos.get(sample_id, default_video / f"{sample_id}{VIDEO_SUFFIX}"),
                annotation_path=skeletons.get(sample_id, default_skeleton / f"{sample_id}{SKELETON_SUFFIX}"),
            )
            for sample_id in sorted(videos.keys() | skeletons.keys())
        ]
        return DatasetScan(sources=sources, ignored=tuple(ignored_videos + ignored_skeletons))

    def _find(self, folders: list[Path], suffix: str) -> tuple[dict[str, Path], list[Path]]:
        found: dict[str, Path] = {}
        ignored: list[Path] = []
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.endswith(suffix):
                        if not entry.name.startswith("."):
                            ignored.append(Path(entry.path))
                        continue
                    sample_id = entry.name[: -len(suffix)]
                    try:
                        name = parse_ntu_name(sample_id)
                    except StarError:
                        ignored.append(Path(entry.path))  # counted in the index report, never read
                        continue
                    if self.name == "ntu60" and not name.in_ntu60:
                        continue  # an NTU120 sample: outside ntu60, not junk
                    if sample_id in found:
                        raise StarError(
                            f"NTU sample {sample_id} is present twice: {found[sample_id]} and {entry.path}. "
                            "Keep one copy."
                        )
                    found[sample_id] = Path(entry.path)
        return found, sorted(ignored)

    def load(self, source: SampleSource) -> SampleRecord:
        name = parse_ntu_name(source.sample_id)  # scan() yields valid names only
        problems: list[tuple[str, str]] = []
        listed = source.sample_id in missing_skeleton_list(self.name)
        if listed:
            problems.append((LISTED_MISSING_SKELETON, f"on the official list {MISSING_LISTS[self.name]}"))
        video = probe_for_record(source.video_path, problems)
        skeleton = None
        if not listed:
            if source.annotation_path is None or not source.annotation_path.exists():
                problems.append((MISSING_SKELETON, f"skeleton file not found: {source.annotation_path}"))
            else:
                # Without a readable video (the sample fails anyway) the coordinates stay in the Kinect frame.
                frame_size = (video.width, video.height) if video is not None else KINECT_COLOR_SIZE
                try:
                    skeleton = read_ntu_skeleton(source.annotation_path, frame_size=frame_size, persons=self.persons)
                except StarError as err:
                    problems.append((MALFORMED_SKELETON, str(err)))
        return assemble_record(
            sample_id=source.sample_id,
            label=name.label,
            class_name=NTU_CLASS_NAMES[name.label],
            splits=ntu_splits(name, version=self.name),
            video_path=source.video_path,
            video=video,
            skeleton=skeleton,
            layout=self.layout,
            persons=self.persons,
            problems=problems,
        )
