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
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.devices import resolve_device
from pipeline.core.errors import StarError
from pipeline.sources.clips import Clip, ClipSpec, clip_indices, load_clip, usable_frames
from pipeline.sources.datasets.folder import read_pose_file
from pipeline.sources.datasets.ntu_skeleton import KINECT_COLOR_SIZE, read_ntu_skeleton
from pipeline.sources.datasets.penn import read_penn_labels
from pipeline.sources.datasets.records import pose_outside_frame_reason
from pipeline.sources.layouts import JointLayout, layout_from_spec
from pipeline.sources.pose import estimate_pose
from pipeline.sources.pose.blazepose import NAME as ESTIMATOR
from pipeline.sources.video import VideoInfo, probe_video
from pipeline.training.checkpoints import is_skeleton_checkpoint, load_trained_model, read_checkpoint
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
            f"pose file {path} has {skeleton.shape[2]} joints per person, but the model was trained on the {layout.num_joints}-joint layout {layout.name!r}"
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


@torch.no_grad()
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
    state = read_checkpoint(checkpoint)
    fingerprint = state["fingerprint"]
    model_cfg = state["model_config"]
    layout = layout_from_spec(fingerprint["layout"], where=f"joint layout of {checkpoint}")
    torch_device = resolve_device(device)
    if is_skeleton_checkpoint(state):
        skeleton = skeleton_of(video=video, pose=pose, layout=layout, persons=int(model_cfg["persons"]))
        transform = SkeletonTransform(spec=skeleton_spec(state["config"]), layout=layout)
        clips = transform.test_clips(skeleton, clips=int(state["config"].get("test_clips", 1)))  # (K, T, N, C)
        model = load_trained_model(state, video=False).to(torch_device)
        probabilities = model({"joints": torch.from_numpy(clips)[None].to(torch_device)}).float().exp()[0].cpu()
        indices = np.asarray(clip_indices(len(skeleton), transform.spec.frames))
        return _prediction(
            state,
            video=video,
            pose=pose,
            checkpoint=checkpoint,
            top_k=top_k,
            frame_indices=indices,
            probabilities=probabilities,
        )
    spec = ClipSpec(
        frames=int(fingerprint["frames"]), size=int(fingerprint["input_size"]), crop=str(fingerprint["crop"])
    )
    clip, _, _ = clip_of_video(video=video, pose=pose, layout=layout, persons=int(model_cfg["persons"]), spec=spec)
    model = load_trained_model(state, video=True, weights=weights).to(torch_device)
    batch = {
        "video": torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None].to(torch_device),  # (1, T, 3, S, S)
        "joints": torch.from_numpy(clip.joints.reshape(spec.frames, -1, 3))[None].to(torch_device),  # (1, T, P*J, 3)
    }
    probabilities = model(batch).float().softmax(dim=1)[0].cpu()
    return _prediction(
        state,
        video=video,
        pose=pose,
        checkpoint=checkpoint,
        top_k=top_k,
        frame_indices=clip.frame_indices,
        probabilities=probabilities,
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


def _prediction(
    state: dict[str, Any],
    *,
    video: str | os.PathLike,
    pose: str | os.PathLike | None,
    checkpoint: str | os.PathLike,
    top_k: int,
    frame_indices: np.ndarray,
    probabilities: torch.Tensor,
) -> Prediction:
    values, indices = probabilities.topk(min(top_k, probabilities.numel()))
    class_names = list(state["class_names"])
    return Prediction(
        video=str(video),
        pose=describe_pose(pose),
        checkpoint=str(checkpoint),
        frame_indices=[int(i) for i in frame_indices],
        top=[
            ClassScore(class_id=int(i), class_name=class_names[int(i)], probability=float(p))
            for p, i in zip(values, indices, strict=True)
        ],
    )
