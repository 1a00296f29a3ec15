"""MediaPipe BlazePose as STAR's pose estimator: 33 landmarks per person, models shipped inside the package.

Why this estimator: mediapipe 0.10.14 (the `pose` extra) carries its detector and full landmark model in the
wheel, so nothing is downloaded at run time; it finds the person of NTU's real 1080p clip and runs on CPU
far faster than torchvision's Keypoint R-CNN, which would add no dependency but needs a 226 MB weights
download (`python -m benchmarks.pose`; figures in benchmarks/RESULTS.md).

BlazePose follows one person: detection on the first frame, then each frame's landmarks set the next frame's
region. For `persons` > 1 there is one such tracker per person slot, each looking at the frame with the people
found by the trackers before it painted over (a grey box), so each settles on a different person. Landmarks
come back in original-frame pixels with MediaPipe's visibility as the score; a landmark outside the frame
gets score 0 (it cannot be located in the video).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError
from pipeline.sources.pose.tracking import Detection, box_iou

MEDIAPIPE_VERSION = "0.10.14"
MODEL_FILE = "modules/pose_landmark/pose_landmark_full.tflite"  # model_complexity=1, shipped in the wheel
NAME = f"blazepose-full (mediapipe {MEDIAPIPE_VERSION})"
MASK_MARGIN = 0.15  # the painted box around a found person grows by this share of its size on each side
DUPLICATE_IOU = 0.6  # two trackers on one person: keep the first


def mediapipe_pose():
    """MediaPipe's pose solution module, or a StarError that says what to install."""
    try:
        import mediapipe
        from mediapipe.python.solutions import pose
    except ImportError as err:
        raise StarError(
            f"Pose estimation needs MediaPipe {MEDIAPIPE_VERSION} (BlazePose), which is not installed ({err}): "
            f"pip install 'star-action[pose]' (Python <= 3.12), or give a pose file made by any estimator."
        ) from None
    if not (Path(mediapipe.__file__).parent / MODEL_FILE).is_file():
        raise StarError(
            f"mediapipe {getattr(mediapipe, '__version__', '?')} ships no BlazePose model ({MODEL_FILE}); "
            f"STAR never downloads models: pip install mediapipe=={MEDIAPIPE_VERSION}."
        )
    return pose


class BlazePose:
    """Callable on RGB frames of one video, in order: the people in each frame as `Detection`s (BlazePose-33).

    Frames go in at their own size: MediaPipe scales them to its 224/256 px model inputs itself, and shrinking
    a 1080p frame first is no faster (docs/design.md, "Figures behind the code"). A context manager.
    """

    def __init__(self, *, persons: int, min_confidence: float = 0.5) -> None:
        if persons < 1:
            raise StarError(f"persons must be at least 1, got {persons}.")
        self._pose = mediapipe_pose()
        self.persons, self.min_confidence = persons, min_confidence
        self._trackers: list = []
        self._quiet = contextlib.ExitStack()

    def __enter__(self) -> BlazePose:
        self._quiet.enter_context(_native_stderr_muted())
        self._trackers = [
            self._pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                            min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence)
            for _ in range(self.persons)
        ]  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        try:
            for tracker in self._trackers:
                tracker.close()
        finally:
            self._quiet.close()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        height, width = rgb.shape[:2]
        image = rgb
        detections: list[Detection] = []
        for slot, tracker in enumerate(self._trackers):
            result = tracker.process(image)
            if result.pose_landmarks is None:
                continue
            marks = result.pose_landmarks.landmark
            keypoints = np.array([(m.x * width, m.y * height, m.visibility) for m in marks], np.float32)  # (33, 3)
            outside = (keypoints[:, 0] < 0) | (keypoints[:, 0] >= width) | (keypoints[:, 1] < 0) | \
                (keypoints[:, 1] >= height)  # fmt: skip
            keypoints[outside, 2] = 0.0
            keypoints[:, 2] = np.clip(keypoints[:, 2], 0.0, 1.0)
            detection = Detection(keypoints)
            if detections and box_iou(detection.box[None], np.stack([d.box for d in detections])).max() > DUPLICATE_IOU:
                continue
            detections.append(detection)
            if slot + 1 < len(self._trackers):
                image = _painted_over(image, detection.box)
        return detections


@contextlib.contextmanager
def _native_stderr_muted():
    """Send what MediaPipe's C++ threads print to file descriptor 2 (TFLite and absl lines on every run, at
    moments of their choosing) to /dev/null, while Python's own stderr (progress bars, errors) still reaches
    the user through a copy of the original descriptor. Also hides protobuf's deprecation warning for
    MediaPipe's generated code."""
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        with open(saved, "w", buffering=1, closefd=False) as python_side:
            sys.stderr = python_side
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
                    yield
            finally:
                ctypes.CDLL(None).fflush(None)  # C stdio buffers out before stderr comes back
                python_side.flush()
                sys.stderr = python_stderr
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _painted_over(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of `image` with `box` (x0, y0, x1, y1), grown by MASK_MARGIN, filled with mid grey."""
    grow = (box[2:] - box[:2]) * MASK_MARGIN
    x0, y0 = np.floor(np.maximum(box[:2] - grow, 0)).astype(int)
    x1, y1 = np.ceil(box[2:] + grow).astype(int)
    out = image.copy()
    out[y0:y1, x0:x1] = 128
    return out
