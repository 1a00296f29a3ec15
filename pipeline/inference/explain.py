"""Relative frame importance of one clip by attention rollout (paper §4.3, Fig. 6): `star explain`.

decode → extract → run → roll out: the clip goes through the path of `star predict`
(`pipeline.extraction.extract.load_clip` with the checkpoint's frames, size and crop; the backbone that made the
training features, rebuilt from the checkpoint's fingerprint; `STAR.inputs_from_video`), then
`model.rollout.attention_rollout` gives T scores that sum to 1. The same inputs give the class probabilities, so
the JSON says what the model predicted beside why.

The rollout also says where the evidence comes from: its share on the grid (GG) tokens against the joint (JM)
tokens, and the joints with the largest shares (for a hand-held object, the hand's joint tokens).

`compare` adds a second checkpoint, typically the FAttn-only model (Table 4's FF/FF), to draw the two side by side
as in Fig. 6 (a) vs. (b)/(c). Both models must have been trained on features of the same extraction settings
(fingerprint): they then see exactly the same T frames, decoded once, and one backbone pass serves both.

Outputs in `out_dir`: `explain.json` (scores per model, top classes, frame indices) and `frame_importance.png`
(the frames with their skeletons drawn, and one bar chart per model). The strip shows the original frames at the
sampled indices with the pose file's joints, zoomed to the skeletons (`pipeline.inference.plots.skeleton_box`), not
the S x S network input, so proportions are the video's own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.rollout import token_rollout
from pipeline.core.devices import resolve_device
from pipeline.core.differences import differing_keys
from pipeline.core.errors import StarError
from pipeline.core.files import write_atomically
from pipeline.inference.plots import ImportanceSeries, plot_frame_importance, skeleton_box
from pipeline.inference.predict import ClassScore, clip_of_video, describe_pose
from pipeline.inference.runtime import is_export
from pipeline.sources.clips import ClipSpec
from pipeline.sources.layouts import BUILTIN_LAYOUTS, JointLayout, layout_from_spec
from pipeline.sources.video import read_frames
from pipeline.training.checkpoints import is_skeleton_checkpoint, load_trained_model, read_checkpoint

JSON_NAME = "explain.json"
PNG_NAME = "frame_importance.png"


@dataclass(frozen=True)
class ModelImportance:
    """One checkpoint's view of the clip: the rollout scores per input frame and its top classes."""

    checkpoint: str
    attention: str  # "encoder/decoder" layer kinds, e.g. "FZ/FB" (STAR) or "FF/FF" (FAttn only)
    label: str  # how the figure names the model
    scores: list[float]  # (T,), sum 1
    top: list[ClassScore]  # best first
    grid_share: float  # share of the rollout on the grid (GG) tokens, all frames
    joint_share: float  # share on the joint (JM) tokens; grid_share + joint_share = 1
    top_joints: list[tuple[str, float]]  # joints with the largest shares, persons and frames summed


@dataclass(frozen=True)
class Explanation:
    video: str
    pose: str
    frame_indices: list[int]  # the T frames of the video the models saw
    models: list[ModelImportance]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"{self.video}: relative frame importance over the {len(self.frame_indices)} input frames "
            f"(video frames {', '.join(map(str, self.frame_indices))})"
        ]
        for model in self.models:
            order = np.argsort(-np.asarray(model.scores), kind="stable")[:3]
            best = model.top[0]
            lines.append(
                f"  {model.label}: predicts {best.class_name} ({best.probability:.1%}); top-3 frames "
                + ", ".join(f"{t + 1} (#{self.frame_indices[t]}, {model.scores[t]:.3f})" for t in order)
            )
            lines.append("    scores " + " ".join(f"{score:.3f}" for score in model.scores))
            joints = ", ".join(f"{name} {share:.0%}" for name, share in model.top_joints)
            lines.append(
                f"    evidence: grid tokens {model.grid_share:.0%}, joint tokens {model.joint_share:.0%}"
                + (f" (most: {joints})" if joints else "")
            )
        lines += [f"  {name}: {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def drawing_bones(layout: JointLayout) -> tuple[tuple[int, int], ...]:
    """The layout's bones; cache fingerprints keep only names and flip pairs, so built-in layouts supply theirs."""
    if layout.bones:
        return layout.bones
    builtin = BUILTIN_LAYOUTS.get(layout.name)
    return builtin.bones if builtin is not None and builtin.joint_names == layout.joint_names else ()


def model_label(model_config: dict[str, Any]) -> tuple[str, str]:
    """("FZ/FB", "STAR (FZ/FB)") or ("FF/FF", "FAttn only (FF/FF)") from a checkpoint's model config."""
    attention = f"{model_config['encoder']}/{model_config['decoder']}"
    inputs = {"rgb": ", frames only", "pose": ", skeleton only"}.get(model_config.get("modality", "both"), "")
    if attention == "FF/FF":
        return attention, f"FAttn only (FF/FF{inputs})"
    return attention, f"STAR ({attention}{inputs})"


@torch.no_grad()
def explain(
    *,
    video: str | os.PathLike,
    pose: str | os.PathLike | None,
    checkpoint: str | os.PathLike,
    compare: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    top_k: int = 5,
    weights: str = "",
    device: str = "auto",
    title: str = "",
) -> Explanation:
    """Attention rollout per frame for one video and its pose file (None: estimated); writes explain.json and
    frame_importance.png.

    out_dir defaults to <checkpoint folder>/explain-<video name>. With `compare`, the compared checkpoint is drawn
    first (as FAttn in Fig. 6 (a)) and `checkpoint` below it.
    """
    for path in (checkpoint, compare):
        if path is not None and is_export(path):  # an exported graph gives logits, not the attention weights
            raise StarError(
                f"{path} is an export of `star export`: attention rollout needs the attention weights, so explain "
                "stays on PyTorch; give the checkpoint it was exported from"
            )
    states = [read_checkpoint(checkpoint)]
    if is_skeleton_checkpoint(states[0]):
        raise StarError(
            f"{checkpoint} was trained on a skeleton cache: explain draws the rollout over decoded frames "
            "and map tokens, which a skeleton-only model has not seen; use `star predict` for its classes"
        )
    paths = [str(checkpoint)]
    if compare is not None:
        other = read_checkpoint(compare)
        differing = differing_keys(states[0]["fingerprint"], other["fingerprint"])
        if differing:
            raise StarError(
                f"--compare {compare} was trained on features extracted differently from {checkpoint} "
                f"({', '.join(differing)} differ): compare models trained on the same feature cache"
            )
        states.insert(0, other)
        paths.insert(0, str(compare))
    fingerprint, model_cfg = states[-1]["fingerprint"], states[-1]["model_config"]
    layout = layout_from_spec(fingerprint["layout"], where=f"joint layout of {checkpoint}")
    spec = ClipSpec(
        frames=int(fingerprint["frames"]), size=int(fingerprint["input_size"]), crop=str(fingerprint["crop"])
    )
    clip, skeleton, info = clip_of_video(
        video=video, pose=pose, layout=layout, persons=int(model_cfg["persons"]), spec=spec
    )  # skeleton: (frames, P, J, 3) video pixels
    torch_device = resolve_device(device)
    video_batch = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None].to(torch_device)  # (1, T, 3, S, S)
    joints_batch = torch.from_numpy(clip.joints.reshape(spec.frames, -1, 3))[None].to(torch_device)  # (1, T, P*J, 3)

    models = []
    inputs = None
    for state, path in zip(states, paths, strict=True):
        classifier = load_trained_model(state, video=True, weights=weights).to(torch_device)
        if inputs is None or state.get("stage") == "end_to_end":
            # A frozen backbone is the same for every model of this fingerprint; a fine-tuned one is the model's own.
            inputs = classifier.star.inputs_from_video(video_batch, joints_batch, backbone=classifier.backbone)
        relevance = token_rollout(classifier.star, *inputs)[0].cpu()  # (T, S)
        scores = relevance.sum(dim=-1)  # (T,)
        grid, joint = classifier.star.aggregator.content_slices(
            grid_tokens=classifier.star.aggregator.grid_tokens(inputs[1].shape[-2:])
        )
        per_joint = relevance[:, joint].sum(dim=0)  # (N,) = persons x joints, person-major
        per_joint = per_joint.view(-1, len(layout.joint_names)).sum(dim=0) if per_joint.numel() else per_joint  # (J,)
        strongest = per_joint.argsort(descending=True)[:3].tolist()
        probabilities = classifier.star(*inputs).float().softmax(dim=1)[0].cpu()
        values, indices = probabilities.topk(min(top_k, probabilities.numel()))
        names = list(state["class_names"])
        attention, label = model_label(state["model_config"])
        models.append(
            ModelImportance(
                checkpoint=path,
                attention=attention,
                label=label,
                scores=[float(s) for s in scores],
                top=[
                    ClassScore(class_id=int(i), class_name=names[int(i)], probability=float(p))
                    for p, i in zip(values, indices, strict=True)
                ],
                grid_share=float(relevance[:, grid].sum()),
                joint_share=float(relevance[:, joint].sum()),
                top_joints=[(layout.joint_names[j], float(per_joint[j])) for j in strongest],
            )
        )

    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent / f"explain-{Path(video).stem}"
    out.mkdir(parents=True, exist_ok=True)
    original = read_frames(Path(video), clip.frame_indices)  # (T, H, W, 3) RGB, for the strip
    joints_px = skeleton[clip.frame_indices]  # (T, P, J, 3) original pixels
    png = plot_frame_importance(
        frames=original,
        joints=joints_px,
        bones=drawing_bones(layout),
        frame_indices=clip.frame_indices.tolist(),
        box=skeleton_box(joints_px, width=info.width, height=info.height),
        series=[
            ImportanceSeries(
                label=m.label, scores=m.scores, note=f"predicts {m.top[0].class_name} ({m.top[0].probability:.0%})"
            )
            for m in models
        ],
        out=out / PNG_NAME,
        title=title or f"relative frame importance (attention rollout): {Path(video).name}",
    )
    explanation = Explanation(
        video=str(video),
        pose=describe_pose(pose),
        frame_indices=[int(i) for i in clip.frame_indices],
        models=models,
        files={"json": str(out / JSON_NAME), "png": str(png)},
    )
    text = json.dumps(explanation.to_dict(), indent=2) + "\n"
    write_atomically(out / JSON_NAME, lambda handle: handle.write(text.encode()))
    return explanation
