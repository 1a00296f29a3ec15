"""The shared CNN of STAR (paper section 3.1): torchvision's MC3-18 cut into local and global feature maps.

The paper extracts, per frame, a *local* feature map from a middle layer of ResNet MC18 (for the joint
map tokens) and a *global* map from its last layer (for the global grid tokens). We read "ResNet MC18
pre-trained with Kinetics-400" as torchvision's `mc3_18` with `MC3_18_Weights.KINETICS400_V1`, and
take layer3 as the middle layer and layer4 as the last one; the pooling/fc head is dropped.

Facts this module relies on (torchvision `VideoResNet`): the stem and layers 2-4 downsample space by 2
each and never time, so a (B, T, 3, H, W) clip gives layer3 maps of H/8 x W/8 (256 channels) and layer4
maps of H/16 x W/16 (512 channels) for every one of the T frames; a 224 x 224 input gives 28 x 28 local
and 14 x 14 global maps (P = 196 grid tokens). H and W must be multiples of 16 so these are exact.

Deviations / choices:
- Normalisation with the Kinetics mean/std happens inside the module; the input is uint8 or float in [0, 1].
  The torchvision preset's resize/crop is not applied: resizing is the data pipeline's job.
- Weights are only ever read from disk: the Kinetics checkpoint must already be in the torch hub cache
  (nothing is downloaded; a missing file raises `FileNotFoundError` saying where to put it).
- A frozen backbone (`trainable=False`) stays in eval mode (BatchNorm running statistics) even when a
  parent module calls `.train()`, and runs without autograd.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # the trunk, input to output: one attribute each

# torchvision is imported where a backbone is built, not with this module: importing it loads all of its models and
# torch._dynamo, which commands that never build a backbone (training and evaluating from a cache) need not pay for.


def _mc3_18() -> nn.Module:
    """torchvision's mc3_18, randomly initialised (weights are loaded from disk by the caller)."""
    from torchvision.models.video import mc3_18

    return mc3_18(weights=None)


def kinetics_weights():
    """torchvision's `MC3_18_Weights.KINETICS400_V1`: its URL names the checkpoint, its transforms hold mean and std."""
    from torchvision.models.video import MC3_18_Weights

    return MC3_18_Weights.KINETICS400_V1


def kinetics_url() -> str:
    return kinetics_weights().url  # https://download.pytorch.org/models/mc3_18-a90a0ba3.pth


def kinetics_filename() -> str:
    return kinetics_url().rsplit("/", 1)[-1]  # mc3_18-a90a0ba3.pth


def kinetics_checkpoint_path() -> Path:
    """Where torch.hub keeps the Kinetics-400 MC3-18 checkpoint (moved by TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / kinetics_filename()


def weights_id(weights: str | Path | None) -> str:
    """The id of a weights choice recorded in cache fingerprints: a file is named by its checksum, not its name."""
    if weights is None or weights == "random":
        return "random"
    if weights == "kinetics400":
        return f"kinetics400:{kinetics_filename().removesuffix('.pth')}"
    return f"file:{_sha256_prefix(Path(weights))}"


def _sha256_prefix(path: Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt file fails anywhere in the weights-only unpickler, with many types
        problem = "it is empty" if path.stat().st_size == 0 else f"not a complete PyTorch file ({type(err).__name__})"
        raise ValueError(
            f"could not read MC3-18 weights from {path}: {problem}. Pass a state dict saved with "
            "torch.save(model.state_dict(), path) from torchvision's mc3_18."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors) of torchvision's mc3_18.")
    return state


def _resolve_weights(weights: str | Path | None) -> tuple[dict[str, Tensor] | None, str]:
    """The state dict to load (None: random init) and the id recorded in cache fingerprints."""
    if weights is None or weights == "random":
        warnings.warn(
            "MC3_18Backbone uses RANDOM weights (weights=None/'random'): features are not Kinetics-400 features; "
            "use this only for tests and smoke runs.",
            UserWarning,
            stacklevel=3,
        )
        return None, weights_id(None)
    if weights == "kinetics400":
        path = kinetics_checkpoint_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"MC3-18 Kinetics-400 weights not found: expected {path.name} in {path.parent} "
                "(torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it). Nothing is downloaded automatically: "
                f"fetch {kinetics_url()} and put it in that folder, or pass a state-dict path or 'random'."
            )
        return _read_state_dict(path), weights_id("kinetics400")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"MC3-18 weights file not found: {path}. Use 'kinetics400' (torch hub cache), 'random', "
            "or the path of a state dict saved from torchvision's mc3_18."
        )
    return _read_state_dict(path), weights_id(path)


class MC3_18Backbone(nn.Module):
    """MC3-18 trunk: video (B, T, 3, H, W) -> local (B, T, 256, H/8, W/8), global (B, T, 512, H/16, W/16)."""

    local_channels = 256
    global_channels = 512
    local_stride = 8
    global_stride = 16

    def __init__(self, *, weights: str | Path | None = "kinetics400", trainable: bool = False) -> None:
        super().__init__()
        state, self.weights_id = _resolve_weights(weights)
        net = _mc3_18()
        if state is not None:
            # The classifier (fc.*) is not part of the trunk; everything else must match exactly.
            trunk_state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            try:
                missing, unexpected = net.load_state_dict(trunk_state, strict=False)
            except RuntimeError as err:  # shape mismatches
                raise ValueError(f"MC3-18 weights ({self.weights_id}) do not fit mc3_18: {err}") from err
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"MC3-18 weights ({self.weights_id}) are not a torchvision mc3_18 state dict: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]} (first 5 of each shown)."
                )
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (getattr(net, name) for name in STAGES)
        # Not persistent: they are constants of the preset, not learned state.
        preset = kinetics_weights().transforms()
        mean = torch.tensor(preset.mean).view(1, 1, 3, 1, 1)
        std = torch.tensor(preset.std).view(1, 1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.trainable = trainable
        if not trainable:
            self.requires_grad_(False)
        self.train(trainable)

    def train(self, mode: bool = True) -> MC3_18Backbone:
        # A frozen backbone is a fixed feature extractor: BatchNorm keeps its running statistics even
        # when a parent module (the trainer's model) is switched to training mode.
        return super().train(mode and self.trainable)

    @staticmethod
    def parameter_count() -> int:
        """Parameters of the trunk (stem + layer1-4), without building a backbone or touching weights."""
        net = _mc3_18()
        return sum(p.numel() for name, p in net.named_parameters() if name.split(".")[0] in STAGES)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"MC3_18Backbone expects video as (B, T, 3, H, W), got shape {tuple(video.shape)}.")
        height, width = video.shape[-2:]
        if height % self.global_stride or width % self.global_stride:
            raise ValueError(
                f"MC3_18Backbone needs H and W divisible by {self.global_stride} so the feature maps are exactly "
                f"H/{self.local_stride} and H/{self.global_stride}; got {height}x{width}. Resize to e.g. 112 or 224."
            )
        x = video.float().div(255.0) if video.dtype == torch.uint8 else video
        x = ((x - self.mean) / self.std).transpose(1, 2)  # (B, 3, T, H, W): channels-first for Conv3d
        grad = torch.is_grad_enabled() and self.trainable
        with contextlib.nullcontext() if grad else torch.no_grad():
            local = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, 256, T, H/8, W/8)
            global_ = self.layer4(local)  # (B, 512, T, H/16, W/16)
        # Time is never downsampled in MC3-18, so the frame axis still has T entries.
        return local.transpose(1, 2).contiguous(), global_.transpose(1, 2).contiguous()  # (B, T, C, h, w)
