"""A generated action dataset in the real NTU RGB+D (and Penn Action) on-disk formats.

Tests, the demo and the benchmarks need data that no one has to download. `generate_ntu_dataset` (`ntu.py`)
writes `root/nturgb+d_rgb/<id>_rgb.avi` (MJPG in AVI, OpenCV) and `root/nturgb+d_skeletons/<id>.skeleton`
(the official text format) under proper `SsssCcccPpppRrrrAaaa` names, so that
`build_index("ntu120", root, ...)` reads it exactly like the real dataset and the official
xsub/xview/xset lists apply.

What is rendered: an articulated 25-joint figure in the NTU joint layout, posed in 3D by joint angles
(forward kinematics, feet kept on the floor), seen by a pinhole camera and drawn as thick
anti-aliased limbs, a torso polygon and a round head, over a mildly textured room. Each class is a
real NTU action whose official name matches the motion (`SYNTHETIC_ACTIONS`). Variation:
- subject (`P`): body size and proportions, shirt / trousers / skin / hair colours, position in the room;
- camera (`C`): C001 frontal, C002 / C003 from +45 / -45 degrees (the NTU rig's angles), with focal
  length, principal point and distance varying per setup (`S`);
- sample: duration, speed, amplitude and phase of the motion, a slow sway, joint jitter and image noise.
NTU60 classes use setups S001/S002 and NTU120-only classes S018/S019, as in the real dataset, so the
ntu60 benchmarks see only A001-A060 and ntu120-xset has even (train) and odd (test) setups.

Skeleton files: x, y, z are the 3D joint positions in camera space (metres, z 2-4 m), depthX/depthY
their projection into a 512x424 depth image, colorX/colorY the pixel positions at which the joints
were drawn in the written video, expressed in the 1920x1080 Kinect colour frame as in the real files
(colorX = x * 1920 / W, colorY = y * 1080 / H for a W x H video), so that every reader of the
generated data goes through the same mapping as real NTU videos stored at a lower resolution. The
orientation is the shortest-arc rotation from +y to the bone (zeros on leaf joints, as Kinect writes them),
trackingState 2, or 1 for a few extremities and for joints outside the image. bodyID is a large
64-bit integer. Everything is deterministic for a seed: each sample draws from its own generator
seeded with (seed, S, C, P, R, A), so a sample does not change when others are added.

`generate_penn_dataset` renders the same figure into the Penn Action layout (JPEG frames and `.mat`
labels with the fields and shapes of the real ones) for three Penn classes with matching motions.

Modules: `body` (figure and kinematics), `motions` (one per class), `render` (camera, room, drawing, video
files), `ntu` and `penn` (the two dataset writers).
"""

from pipeline.sources.synthetic.motions import NTU_MOTIONS, SYNTHETIC_ACTIONS, TIME_REVERSED_PAIRS
from pipeline.sources.synthetic.ntu import generate_ntu_dataset, synthetic_sample_names
from pipeline.sources.synthetic.penn import generate_penn_dataset
from pipeline.sources.synthetic.render import write_video

__all__ = [
    "NTU_MOTIONS", "SYNTHETIC_ACTIONS", "TIME_REVERSED_PAIRS", "generate_ntu_dataset", "generate_penn_dataset",
    "synthetic_sample_names", "write_video",
]  # fmt: skip
