"""NTU RGB+D `.skeleton` files: a strict, fast parser and the choice of at most two persons.

Format: frame count; per frame a body count; per body a 10-field info line (bodyID first, a 64-bit
integer), a joint count (always 25) and 25 joint lines of 12 fields, of which STAR keeps colorX,
colorY (fields 5, 6) and trackingState (field 11: 0 not tracked, 1 inferred, 2 tracked -> confidence
0.0 / 0.5 / 1.0).

colorX/colorY are pixels of the Kinect v2 colour camera, whose frame is always 1920x1080, whatever
size the video file on disk has (NTU RGB+D is often stored re-encoded at a lower resolution).
`read_ntu_skeleton` therefore maps them to the video's own frame size, u = colorX * W / 1920 and
v = colorY * H / 1080; it is the one place where this happens, used by the annotation index (and
through it extraction and end-to-end training) and by `star predict` / `star explain`.

Parsing: the file is read whole and split once into tokens; an integer cursor walks the structure,
checking every count (frames, bodies <= 6 per frame as Kinect v2 tracks at most six, 25 joints, no
trailing data) and reading bodyID with `int` (float64 would round real IDs such as 72057594037931101).
The colorX/colorY tokens of all joints are then converted in one numpy call and the trackingState
tokens looked up in a table that accepts only 0, 1 and 2. A missing or extra token anywhere shifts
the structure, which these checks catch, so a truncated or malformed file raises `StarError` naming
the file and the 1-based line (and the first line with the wrong number of values), never a silently
wrong array. The nine fields STAR does not use (3D position, depth pixel, orientation) are
counted but not converted. A joint whose colorX/colorY is not finite gets confidence 0 and (0, 0).

Choosing persons (`select_bodies`), modelled on CTR-GCN's denoising and adapted to
2D RGB use:
1. Bodies are grouped by bodyID; a body's frames are the frames it actually appears in (CTR-GCN
   assumes one contiguous interval per ID; an ID that vanishes and returns is not mangled here).
2. Files with one bodyID keep it as is. Otherwise:
3. Length: bodies seen in <= 11 frames are dropped (CTR-GCN `noise_len_thres`).
4. Spread: a frame of a body is "noisy" when the x-extent of its confident joints exceeds 0.8 x their
   y-extent (CTR-GCN `noise_spr_thres1`), measured on colorX/colorY pixels instead of 3D metres (the
   test is a ratio, and a person's image extents are proportional to their 3D extents at one depth);
   a frame with fewer than two confident joints is noisy too. A body with >= 69.754 % noisy frames is
   dropped (`noise_spr_thres2`); otherwise its motion is min(motion, motion over its clean frames).
5. Motion = var(x) + var(y) over all its confident joints in all its frames (pixels^2; CTR-GCN uses
   the 3D variance; it only ranks bodies, CTR-GCN's absolute motion thresholds are disabled there).
   A rule that would drop every remaining body is skipped, so a short or unusual real recording keeps
   its people instead of becoming empty.
6. Assignment: bodies by motion, descending (ties: earlier first frame). Each goes into the first
   person slot where none of its frames is taken yet, so slot 0 is the most active actor, stitched
   from non-overlapping IDs after an ID switch; a body that fits no slot is discarded (CTR-GCN's rule).
7. Unlike CTR-GCN, no frame is dropped (frames with no body keep zero confidence, so skeleton frame i
   stays video frame i), coordinates are not re-centred and nothing is padded to 300 frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import StarError

NUM_JOINTS = 25
BODY_FIELDS = 10
JOINT_FIELDS = 12
MAX_BODIES_PER_FRAME = 6  # Kinect v2 tracks at most six bodies
KINECT_COLOR_SIZE = (1920, 1080)  # (width, height) of the frame colorX/colorY are measured in
BLOCK = BODY_FIELDS + 1 + NUM_JOINTS * JOINT_FIELDS  # tokens per body: info line, joint count, joints
COLOR_X, COLOR_Y, TRACKING = 5, 6, 11  # fields of a joint line that STAR keeps
CONFIDENCE_OF_STATE = {b"0": 0.0, b"1": 0.5, b"2": 1.0}  # trackingState token: not tracked, inferred, tracked

NOISE_LENGTH = 11  # CTR-GCN noise_len_thres: bodies in <= 11 frames are noise
NOISE_SPREAD = 0.8  # CTR-GCN noise_spr_thres1: x-extent / y-extent above this is implausible
NOISE_SPREAD_FRACTION = 0.69754  # CTR-GCN noise_spr_thres2: drop a body with this share of noisy frames


@dataclass(frozen=True, eq=False)
class SkeletonBody:
    """One bodyID of a file: the frames it appears in and its joints there."""

    body_id: int
    frames: np.ndarray  # (n,) int64 frame indices, ascending
    joints: np.ndarray  # (n, 25, 3) float32 (colorX, colorY, confidence)


@dataclass(frozen=True, eq=False)
class SkeletonFile:
    num_frames: int
    bodies: tuple[SkeletonBody, ...]  # in order of first appearance


def read_ntu_skeleton(path: Path, *, frame_size: tuple[int, int], persons: int = 2) -> np.ndarray:
    """(frames, persons, 25, 3) float32 (x, y, confidence) for one `.skeleton` file, in pixels of a video
    frame of `frame_size` (width, height): the file's 1920x1080 colour coordinates scaled to it."""
    return color_to_frame(select_bodies(parse_skeleton(path), persons=persons), frame_size=frame_size)


def color_to_frame(joints: np.ndarray, *, frame_size: tuple[int, int]) -> np.ndarray:
    """Kinect colour pixels (..., 3) -> pixels of a frame of `frame_size` (width, height); confidence kept."""
    width, height = frame_size
    if width < 1 or height < 1:
        raise StarError(f"Cannot map NTU colour coordinates to a {width}x{height} frame.")
    scale = np.array([width / KINECT_COLOR_SIZE[0], height / KINECT_COLOR_SIZE[1], 1.0], np.float32)
    return joints * scale


def parse_skeleton(path: Path) -> SkeletonFile:
    """Parse one `.skeleton` file strictly; StarError names the file and line of any defect."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StarError(f"Cannot read the skeleton file {path}: {err.strerror}.") from err
    return parse_skeleton_bytes(data, source=str(path))


def parse_skeleton_bytes(data: bytes, *, source: str) -> SkeletonFile:
    """Parse the bytes of a `.skeleton` file; `source` names it in error messages."""
    tokens = data.split()
    count = len(tokens)

    def fail(token_index: int, what: str) -> StarError:
        line = _line_of_token(data, token_index)
        message = f"Malformed skeleton file {source}, line {line}: {what}"
        # A missing or extra value is only noticed where the shifted structure breaks; name its origin.
        origin = _first_misshapen_line(data)
        if origin is not None and origin[0] < line:
            message += f" (line {origin[0]} has {origin[1]} values where {origin[2]} belong)"
        return StarError(message + ".")

    def integer(token_index: int, what: str) -> int:
        if token_index >= count:
            raise fail(count, f"file ends where {what} was expected (truncated)")
        try:
            return int(tokens[token_index])
        except ValueError:
            raise fail(token_index, f"{what} must be an integer, found {tokens[token_index][:30]!r}") from None

    if count == 0:
        raise StarError(f"Malformed skeleton file {source}: the file is empty.")
    num_frames = integer(0, "the frame count")
    if num_frames < 0:
        raise fail(0, f"negative frame count {num_frames}")
    cursor = 1
    starts: list[int] = []  # token index of each body block's info line
    block_frames: list[int] = []
    block_ids: list[int] = []
    for frame in range(num_frames):
        bodies = integer(cursor, f"the body count of frame {frame + 1} of {num_frames}")
        if not 0 <= bodies <= MAX_BODIES_PER_FRAME:
            raise fail(cursor, f"frame {frame + 1} claims {bodies} bodies (0..{MAX_BODIES_PER_FRAME} possible)")
        cursor += 1
        first_block = len(starts)
        for _ in range(bodies):
            if cursor + BLOCK > count:
                raise fail(count, f"file ends inside a body of frame {frame + 1} of {num_frames} (truncated)")
            body_id = integer(cursor, "bodyID")
            joints = integer(cursor + BODY_FIELDS, "the joint count")
            if joints != NUM_JOINTS:
                raise fail(cursor + BODY_FIELDS, f"joint count {joints}, expected {NUM_JOINTS}")
            if body_id in block_ids[first_block:]:
                raise fail(cursor, f"bodyID {body_id} appears twice in frame {frame + 1}")
            starts.append(cursor)
            block_frames.append(frame)
            block_ids.append(body_id)
            cursor += BLOCK
    if cursor != count:
        raise fail(cursor, f"unexpected data after the last of {num_frames} frames")

    coordinates: list[bytes] = []
    states: list[bytes] = []
    first_joint = BODY_FIELDS + 1
    for start in starts:  # per block: 25 colorX then 25 colorY tokens; 25 trackingState tokens
        joint_tokens = tokens[start + first_joint : start + BLOCK]
        coordinates += joint_tokens[COLOR_X::JOINT_FIELDS]
        coordinates += joint_tokens[COLOR_Y::JOINT_FIELDS]
        states += joint_tokens[TRACKING::JOINT_FIELDS]
    try:
        xy = np.array(coordinates, dtype=np.float64).reshape(len(starts), 2, NUM_JOINTS)  # (blocks, xy, joint)
    except ValueError:
        bad = _first_non_number(coordinates)
        block, within = divmod(bad, 2 * NUM_JOINTS)
        field, joint = divmod(within, NUM_JOINTS)
        token = starts[block] + first_joint + joint * JOINT_FIELDS + (COLOR_X, COLOR_Y)[field]
        raise fail(token, f"{tokens[token][:30]!r} is not a number") from None
    try:
        # A dict lookup is cheaper than parsing a float and rejects anything but 0, 1, 2.
        confidence = np.array(list(map(CONFIDENCE_OF_STATE.__getitem__, states)), np.float32)
    except KeyError:
        bad = next(i for i, t in enumerate(states) if t not in CONFIDENCE_OF_STATE)
        block, joint = divmod(bad, NUM_JOINTS)
        token = starts[block] + first_joint + joint * JOINT_FIELDS + TRACKING
        raise fail(token, f"trackingState {tokens[token][:30]!r} is not 0, 1 or 2") from None
    joints = np.empty((len(starts), NUM_JOINTS, 3), np.float32)  # (blocks, 25, xyc)
    joints[..., 0] = xy[:, 0]
    joints[..., 1] = xy[:, 1]
    joints[..., 2] = confidence.reshape(len(starts), NUM_JOINTS)
    unprojected = ~np.isfinite(xy).all(axis=1)  # (blocks, 25)
    joints[unprojected] = 0.0
    return SkeletonFile(num_frames=num_frames, bodies=_group_by_body(block_ids, block_frames, joints))


def _group_by_body(ids: list[int], frames: list[int], joints: np.ndarray) -> tuple[SkeletonBody, ...]:
    if not ids:
        return ()
    id_array = np.array(ids, dtype=object)  # 64-bit IDs may not fit int64's sign; object keeps them exact
    frame_array = np.asarray(frames, np.int64)
    order: dict[int, None] = dict.fromkeys(ids)  # first-appearance order
    if len(order) == 1:
        return (SkeletonBody(body_id=ids[0], frames=frame_array, joints=joints),)
    bodies = []
    for body_id in order:
        mask = id_array == body_id
        bodies.append(SkeletonBody(body_id=body_id, frames=frame_array[mask], joints=joints[mask]))
    return tuple(bodies)


def select_bodies(skeleton: SkeletonFile, *, persons: int = 2) -> np.ndarray:
    """Pick and order at most `persons` tracks by the rules in the module docstring.

    Returns (num_frames, persons, 25, 3) float32; empty slots and frames are zeros.
    """
    out = np.zeros((skeleton.num_frames, persons, NUM_JOINTS, 3), np.float32)
    bodies = list(skeleton.bodies)
    motion = {id(b): 0.0 for b in bodies}
    if len(bodies) > 1:
        long_enough = [b for b in bodies if len(b.frames) > NOISE_LENGTH]
        bodies = long_enough or bodies
    if len(bodies) > 1:
        plausible = []
        for body in bodies:
            noisy = _noisy_frames(body.joints)
            motion[id(body)] = _motion(body.joints)
            if noisy.mean() >= NOISE_SPREAD_FRACTION:
                continue
            if noisy.any():
                motion[id(body)] = min(motion[id(body)], _motion(body.joints[~noisy]))
            plausible.append(body)
        bodies = plausible or bodies
    bodies.sort(key=lambda b: (-motion[id(b)], int(b.frames[0])))
    taken = np.zeros((persons, skeleton.num_frames), bool)
    for body in bodies:
        for slot in range(persons):
            if not taken[slot, body.frames].any():
                taken[slot, body.frames] = True
                out[body.frames, slot] = body.joints
                break
    return out


def _noisy_frames(joints: np.ndarray) -> np.ndarray:
    """(n,) bool: frames whose confident joints are spread implausibly wide (or too few to judge)."""
    confident = joints[..., 2] > 0  # (n, 25)
    x, y = joints[..., 0], joints[..., 1]
    x_extent = np.where(confident, x, -np.inf).max(1) - np.where(confident, x, np.inf).min(1)
    y_extent = np.where(confident, y, -np.inf).max(1) - np.where(confident, y, np.inf).min(1)
    few = confident.sum(1) < 2
    with np.errstate(invalid="ignore"):  # rows without confident joints give inf - inf; `few` covers them
        return few | (x_extent > NOISE_SPREAD * y_extent)


def _motion(joints: np.ndarray) -> float:
    confident = joints[..., 2] > 0
    if confident.sum() < 2:
        return 0.0
    points = joints[confident][:, :2].astype(np.float64)  # (k, 2)
    return float(points.var(axis=0).sum())


def _first_non_number(fields: list[bytes]) -> int:
    for i, token in enumerate(fields):
        try:
            float(token)
        except ValueError:
            return i
    return 0


def _first_misshapen_line(data: bytes) -> tuple[int, int, int] | None:
    """(line, values found, values expected) of the first non-blank line that breaks the layout, or None.

    Only called on the error path: it walks the file line by line, which the fast parser never does.
    """
    lines = [(n, line.split()) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]
    position = 0

    def take(count: int) -> tuple[int, int, int] | None:
        """Consume one line; return it as a defect if it does not hold `count` values."""
        nonlocal position
        number, values = lines[position]
        position += 1
        return None if len(values) == count else (number, len(values), count)

    try:
        if defect := take(1):
            return defect
        for _ in range(int(lines[0][1][0])):
            if defect := take(1):
                return defect
            for _ in range(int(lines[position - 1][1][0])):
                for count in (BODY_FIELDS, 1) + (JOINT_FIELDS,) * NUM_JOINTS:
                    if defect := take(count):
                        return defect
    except (IndexError, ValueError):  # ran out of lines or a count is not a number: nothing more to say
        return None
    return None


def _line_of_token(data: bytes, token_index: int) -> int:
    """1-based line holding token `token_index` (the last line when the index is past the end)."""
    seen = 0
    lines = data.splitlines()
    for number, line in enumerate(lines, start=1):
        seen += len(line.split())
        if seen > token_index:
            return number
    return max(1, len(lines))
