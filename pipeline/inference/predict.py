"""Single-video prediction (`star predict VIDEO [--pose FILE] --checkpoint CKPT`).

decode → extract → run: the clip goes through exactly the path extraction uses (`pipeline.extraction.extract.load_clip`:
uniform segment centres, the cache's crop/resize, joints mapped through the same transform), then the
backbone that produced the training features (or the fine-tuned one of an end-to-end checkpoint) and
STAR, all read from the checkpoint: class names, joint layout, clip geometry and backbone weights id.

Pose files: an NTU `.skeleton` file (colour coordinates of the 1920x1080 Kinect frame, mapped to the
video's size), a Penn Action `.mat` label file, or the custom `.npz`/`.json` pose format of
`pipeline/sources/datasets/folder.py` (both in pixel coordinates of the video's frames). A pose with fewer
persons than the model is padded with missing persons, one with more keeps the first ones (the
readers already order persons by relevance). A pose that mostly misses the video's frame is refused
with the same rule the annotation index applies (`pipeline.sources.datasets.records.pose_in_frame`).
Without a pose file the pose is estimated (`pipeline.sources.pose`, BlazePose) in the checkpoint's joint layout.

A checkpoint trained on a skeleton cache sees the skeleton alone, through the transform of its training config
(`pipeline.training.skeletons`: normalisation, feature streams, the `test_clips` samplings averaged, as `star evaluate`
does): VIDEO may then be the pose file itself (a Penn Action `.mat`, say), and no frame is decoded.

CKPT may also be an export of `star export` (its folder or model file): the inputs are prepared here the same way and
the export's runtime scores them (`pipeline.inference.scorers`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import StarError
from pipeline.inference.scorers import Scorer, open_scorer
from pipeline.sources.clips import Clip, ClipSpec, clip_indices, load_clip, usable_frames
from pipeline.sources.datasets.folder import read_pose_file
from pipeline.sources.datasets.ntu_skeleton import KINECT_COLOR_SIZE, read_ntu_skeleton
from pipeline.sources.datasets.penn import read_penn_labels
from pipeline.sources.datasets.records import pose_outside_frame_reason
from pipeline.sources.layouts import JointLayout, layout_from_spec
from pipeline.sources.pose import estimate_pose
from pipeline.sources.pose.blazepose import NAME as ESTIMATOR
from pipeline.sources.video import VideoInfo, probe_video
from pipeline.training.checkpoints import is_skeleton_checkpoint
from pipeline.training.classifier import mean_probabilities
from pipeline.training.skeletons import SkeletonTransform, skeleton_spec

POSE_SUFFIXES = (".skeleton", ".mat", ".npz", ".json")


@dataclass(frozen=True)
class ClassScore:
    class_id: int
    class_name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    video: str
    pose: str
    checkpoint: str
    frame_indices: list[int]  # the T frames of the video the model saw
    top: list[ClassScore]  # best first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [f"{self.video} (frames {', '.join(map(str, self.frame_indices))})"]
        lines += [
            f"  {rank}. {score.class_name:<40} {score.probability:7.2%}" for rank, score in enumerate(self.top, start=1)
        ]
        return "\n".join(lines)


def describe_pose(pose: str | os.PathLike | None) -> str:
    """The pose file, or which estimator made the pose."""
    return str(pose) if pose is not None else f"estimated by {ESTIMATOR}"


def read_pose(
    path: str | os.PathLike, *, layout: JointLayout, persons: int, frame_size: tuple[int, int] | None
) -> np.ndarray:
    """(frames, persons, joints, 3) in pixels of the video's frames of `frame_size` (width, height) from any
    supported pose file, fitted to the model's persons; StarError when the pose mostly misses that frame.
    `frame_size` None: no video to land on (NTU colour coordinates stay in the Kinect frame)."""
    path = Path(path)
    if not path.is_file():
        raise StarError(f"pose file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    suffix = path.suffix.lower()
    if suffix == ".skeleton":
        skeleton = read_ntu_skeleton(path, frame_size=frame_size or KINECT_COLOR_SIZE, persons=persons)
    elif suffix == ".mat":
        skeleton = read_penn_labels(path).skeleton
    elif suffix in (".npz", ".json"):
        skeleton = read_pose_file(path, layout=layout, persons=persons)
    else:
        raise StarError(f"pose file {path}: use an NTU .skeleton, a Penn Action .mat or a .npz/.json pose file")
    if skeleton.shape[2] != layout.num_joints:
        raise StarError(
            f"pose file {path} has {skeleton.shape[2]} joints per person, but the model was trained on the "
            f"{layout.num_joints}-joint layout {layout.name!r}"
        )
    on_own_frames = suffix == ".mat"  # Penn Action's joints are defined on its frames, past the border included
    if (
        frame_size is not None
        and not on_own_frames
        and (reason := pose_outside_frame_reason(skeleton, width=frame_size[0], height=frame_size[1]))
    ):
        raise StarError(f"pose file {path}: {reason}")
    fitted = np.zeros(
        (skeleton.shape[0], persons, layout.num_joints, 3), dtype=np.float32
    )  # missing persons: confidence 0
    kept = min(persons, skeleton.shape[1])
    fitted[:, :kept] = skeleton[:, :kept]
    return fitted


def estimated_pose(video: str | os.PathLike, *, layout: JointLayout, persons: int) -> np.ndarray:
    """(frames, persons, joints, 3) estimated for a video that has no pose file; StarError when nobody is found."""
    pose = estimate_pose(Path(video), layout=layout, persons=persons)
    if not pose.found:
        raise StarError(
            f"the pose estimator found nobody in the {pose.keypoints.shape[0]} frames of {video}; "
            "give its pose with --pose"
        )
    return pose.keypoints


def clip_of_video(
    *, video: str | os.PathLike, pose: str | os.PathLike | None, layout: JointLayout, persons: int, spec: ClipSpec
) -> tuple[Clip, np.ndarray, VideoInfo]:
    """The clip extraction would cache for this video and pose (None: estimated), its skeleton in video pixels,
    and the video's info."""
    info = probe_video(Path(video))
    skeleton = estimated_pose(video, layout=layout, persons=persons) if pose is None else \
        read_pose(pose, layout=layout, persons=persons, frame_size=(info.width, info.height))  # fmt: skip
    clip = load_clip(
        video=Path(video),
        skeleton=skeleton,
        usable_frames=usable_frames(info.frames, skeleton.shape[0]),
        frame_size=(info.width, info.height),
        spec=spec,
    )
    return clip, skeleton, info


@dataclass(frozen=True)
class Recogniser:
    """A checkpoint (or export) ready to classify: its scorer, and how frames and a pose become its input.

    One home for the steps `star predict` and `star watch` share, so a live window and an offline clip of the same
    frames and pose get the same probabilities. Video checkpoints have `clip_spec` (T frames, S px, crop); skeleton
    checkpoints have `skeleton_transform` (T frames, normalisation, feature streams, `test_clips` samplings averaged).
    """

    state: dict[str, Any]
    layout: JointLayout
    persons: int
    scorer: Scorer  # the checkpoint in PyTorch or an export in its runtime: same inputs, same logits
    clip_spec: ClipSpec | None
    skeleton_transform: SkeletonTransform | None

    @property
    def frames(self) -> int:
        """T, the frames the model sees per clip."""
        return self.clip_spec.frames if self.clip_spec is not None else self.skeleton_transform.spec.frames

    @property
    def class_names(self) -> list[str]:
        return list(self.state["class_names"])

    @property
    def reads_pose(self) -> bool:
        """Whether the pose changes the answer: joint tokens, a skeleton model, or a crop around the person."""
        modality = self.state["model_config"].get("modality", "both")
        return self.clip_spec is None or modality != "rgb" or self.clip_spec.crop == "person"

    def clip_probabilities(self, clip: Clip) -> torch.Tensor:
        """(classes,) softmax probabilities of a video checkpoint for one clip (`make_clip` / `load_clip`)."""
        inputs = {
            "video": np.ascontiguousarray(clip.frames.transpose(0, 3, 1, 2))[None],  # (1, T, 3, S, S) uint8
            "joints": clip.joints.reshape(len(clip.frames), -1, 3)[None],  # (1, T, P*J, 3) in input pixels
        }
        return torch.from_numpy(self.scorer.logits(inputs)).softmax(dim=1)[0]

    def skeleton_probabilities(self, skeleton: np.ndarray) -> torch.Tensor:
        """(classes,) probabilities of a skeleton checkpoint for a full-rate skeleton (frames, P, J, 3) in pixels:
        the mean of the softmax over the `test_clips` samplings, as `star evaluate` scores a clip."""
        clips = self.skeleton_transform.test_clips(skeleton, clips=int(self.state["config"].get("test_clips", 1)))
        logits = self.scorer.logits({"joints": clips})  # (K, classes): the K samplings as one batch
        return mean_probabilities(torch.from_numpy(logits), clips=len(clips))[0]

    def top(self, probabilities: torch.Tensor, k: int) -> list[ClassScore]:
        values, indices = probabilities.topk(min(k, probabilities.numel()))
        names = self.class_names
        return [
            ClassScore(class_id=int(i), class_name=names[int(i)], probability=float(p))
            for p, i in zip(values, indices, strict=True)
        ]


def load_recogniser(checkpoint: str | os.PathLike, *, weights: str = "", device: str = "auto") -> Recogniser:
    """Read and check a checkpoint of `star train` (with the backbone a video checkpoint needs) or an export of
    `star export` (its folder or model file, run by onnxruntime or TorchScript), ready to classify."""
    scorer = open_scorer(checkpoint, weights=weights, device=device)
    state = scorer.state
    fingerprint = state["fingerprint"]
    layout = layout_from_spec(fingerprint["layout"], where=f"joint layout of {checkpoint}")
    skeletons = is_skeleton_checkpoint(state)
    clip_spec = None if skeletons else ClipSpec(
        frames=int(fingerprint["frames"]), size=int(fingerprint["input_size"]), crop=str(fingerprint["crop"])
    )  # fmt: skip
    transform = SkeletonTransform(spec=skeleton_spec(state["config"]), layout=layout) if skeletons else None
    return Recogniser(
        state=state, layout=layout, persons=int(state["model_config"]["persons"]), scorer=scorer,
        clip_spec=clip_spec, skeleton_transform=transform,
    )  # fmt: skip


def predict(
    *,
    video: str | os.PathLike,
    pose: str | os.PathLike | None,
    checkpoint: str | os.PathLike,
    top_k: int = 5,
    weights: str = "",
    device: str = "auto",
) -> Prediction:
    """Top-k classes with softmax probabilities for one video and its pose file (None: estimated)."""
    recogniser = load_recogniser(checkpoint, weights=weights, device=device)
    layout, persons = recogniser.layout, recogniser.persons
    if recogniser.clip_spec is None:
        skeleton = skeleton_of(video=video, pose=pose, layout=layout, persons=persons)
        probabilities = recogniser.skeleton_probabilities(skeleton)
        indices = clip_indices(len(skeleton), recogniser.frames)
    else:
        clip, _, _ = clip_of_video(video=video, pose=pose, layout=layout, persons=persons, spec=recogniser.clip_spec)
        probabilities = recogniser.clip_probabilities(clip)
        indices = clip.frame_indices
    return Prediction(
        video=str(video),
        pose=describe_pose(pose),
        checkpoint=str(checkpoint),
        frame_indices=[int(i) for i in indices],
        top=recogniser.top(probabilities, top_k),
    )


def skeleton_of(
    *, video: str | os.PathLike, pose: str | os.PathLike | None, layout: JointLayout, persons: int
) -> np.ndarray:
    """The full-rate skeleton a skeleton-only model reads: the pose file (or VIDEO when it is one), else estimated."""
    if pose is None and Path(video).suffix.lower() in POSE_SUFFIXES:
        pose = video
    if pose is None:
        return estimated_pose(video, layout=layout, persons=persons)
    frame_size = None
    if Path(video).exists() and Path(video) != Path(pose):  # a video beside the pose: the pose must land on it
        info = probe_video(Path(video))
        frame_size = (info.width, info.height)
    return read_pose(pose, layout=layout, persons=persons, frame_size=frame_size)
