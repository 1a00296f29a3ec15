"""Pose estimation for videos that come without skeletons: `estimate_pose(video, layout=..., persons=...)`.

`blazepose.py` runs the estimator, `tracking.py` keeps person slots on the same person, `mapping.py` turns
BlazePose-33 into the other joint layouts, `estimate.py` ties them together and writes pose files.
"""

from pipeline.sources.pose.estimate import (
    EstimatedPose,
    PoseFileResult,
    PoseStore,
    estimate_pose,
    estimate_to_files,
    pose_outputs,
    write_pose_file,
)

__all__ = [
    "EstimatedPose",
    "PoseStore",
    "estimate_pose",
    "PoseFileResult",
    "estimate_to_files",
    "pose_outputs",
    "write_pose_file",
]
