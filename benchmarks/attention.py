"""Benchmark (not a timed test): ZAttn and BAttn time relative to FAttn, measured side by side.

    python -m benchmarks.attention                  # paper scale and small scale, 5 repetitions
    python -m benchmarks.attention --scale paper --reps 7
    python -m benchmarks.attention --threads 1      # steadier figures on a machine shared with other jobs
    python -m benchmarks.attention --sweep --reps 3 # and T in {8, 16} x S in {52, 249} x B in {1, 4, 16}

Paper scale: batch 4, T = 16 frames, 224 x 224 input -> P = 196 grid tokens, N = 25 joints, 3 class
tokens: S = 224 tokens per frame, T*S = 3584. Small scale: batch 2, T = 8, 112 x 112 input -> S = 77.
Width and heads are `ModelConfig`'s defaults. The three modules are timed back to back inside every
repetition (so load changes on a shared machine hit all three alike); times are medians over the
repetitions, ratios the median of the per-repetition ratios to FAttn; a call shorter than 0.1 s is repeated
within its timing until the timing lasts 0.1 s (the count is fixed by the warm-up).
Target: ZAttn/BAttn <= 0.55 x FAttn at paper scale (theory for the attention product alone: 0.5;
the QKV/output projections cost the same in all three and pull the ratio up: with them, the arithmetic floor
is 0.563 at paper scale and 0.727 at small scale). The rows `product` time the attention product alone, one
SDPA call on q, k, v shaped as the modules shape them (FAttn: B sequences of T*S tokens; ZAttn and BAttn
share theirs: 2B sequences of T*S/2 queries against the other group's T*S/2 keys), which is the paper's claim.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.attention import (
    BinaryAttention,
    FullAttention,
    ZigzagAttention,
    attention_flops,
)
from model.star import ModelConfig

MIN_TIMING = 0.1  # seconds: a millisecond call is repeated inside one timing, or timer and scheduler noise dominate
MODULES = {"FAttn": (FullAttention, "F"), "ZAttn": (ZigzagAttention, "Z"), "BAttn": (BinaryAttention, "B")}


@dataclass(frozen=True)
class Scale:
    name: str
    batch: int
    frames: int
    tokens: int  # S per frame


SCALES = {
    "paper": Scale("paper", batch=4, frames=16, tokens=196 + 25 + 3),
    "small": Scale("small", batch=2, frames=8, tokens=49 + 25 + 3),
}


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    scale: Scale, *, dim: int, heads: int, reps: int, device: torch.device, products: bool = True
) -> dict[tuple[str, str], list[float]]:
    """Seconds per repetition of each module (and, with `products`, of the attention products alone), forward
    ("fwd") and forward + backward ("fwdbwd")."""
    torch.manual_seed(0)
    shape = (scale.batch, scale.frames, scale.tokens, dim)
    x = torch.randn(shape, device=device)
    x_grad = x.clone().requires_grad_()
    modules = {name: cls(dim, heads).to(device) for name, (cls, _) in MODULES.items()}
    if products:  # the attention product alone, on q, k, v as FAttn and as ZAttn/BAttn shape them (module docstring)
        heads_dim = dim // heads
        full, half = scale.frames * scale.tokens, scale.frames * scale.tokens // 2
        modules["FAttn product"] = _Product(scale.batch, heads, full, heads_dim, device=device)
        modules["ZAttn/BAttn product"] = _Product(2 * scale.batch, heads, half, heads_dim, device=device)
    # One output gradient per module, of its own output's shape, made before any timing.
    grad_outs = {
        name: torch.randn(getattr(module, "out_shape", shape), device=device) for name, module in modules.items()
    }

    def forward(name: str) -> None:
        with torch.no_grad():
            modules[name](x)

    def forward_backward(name: str) -> None:
        modules[name].zero_grad(set_to_none=True)
        x_grad.grad = None
        modules[name](x_grad).backward(grad_outs[name])

    times: dict[tuple[str, str], list[float]] = {(name, mode): [] for name in modules for mode in ("fwd", "fwdbwd")}
    calls: dict[tuple[str, str], int] = {}  # calls per timing, so that a timing lasts at least MIN_TIMING seconds
    for rep in range(reps + 1):  # repetition 0 is the warm-up
        for mode, fn in (("fwd", forward), ("fwdbwd", forward_backward)):
            # The modules back to back, order reversed every other repetition, so slow drifts in the machine's
            # load hit them alike; ratios are taken within a repetition.
            order = list(modules) if rep % 2 else list(reversed(modules))
            for name in order:
                count = calls.get((name, mode), 1)
                elapsed = _timed(lambda fn=fn, name=name, count=count: [fn(name) for _ in range(count)], device) / count
                if rep == 0:
                    calls[(name, mode)] = max(1, math.ceil(MIN_TIMING / elapsed))
                else:
                    times[(name, mode)].append(elapsed)
    return times


class _Product(torch.nn.Module):
    """The attention product of fixed random q, k, v (leaf tensors, so backward reaches them), timed like a module."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, *, device: torch.device) -> None:
        super().__init__()
        self.out_shape = (batch, heads, length, head_dim)
        self.qkv = [torch.randn(self.out_shape, device=device, requires_grad=True) for _ in range(3)]

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(*self.qkv)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for tensor in self.qkv:
            tensor.grad = None


def ratio(times: dict[tuple[str, str], list[float]], name: str, mode: str) -> float:
    """Median over repetitions of (time / FAttn time in the same repetition); products against FAttn's product."""
    reference = "FAttn product" if name.endswith("product") else "FAttn"
    return statistics.median(t / f for t, f in zip(times[(name, mode)], times[(reference, mode)], strict=True))


def run_scale(scale: Scale, *, dim: int, heads: int, reps: int, device: torch.device) -> None:
    times = measure(scale, dim=dim, heads=heads, reps=reps, device=device)
    print(
        f"\n[{scale.name}] B={scale.batch} T={scale.frames} S={scale.tokens} (T*S={scale.frames * scale.tokens}) "
        f"D={dim} heads={heads}; device={device}, threads={torch.get_num_threads()}, median of {reps} reps"
    )
    print(
        f"{'module':<7} {'params':>8} {'GFLOP attn':>11} {'GFLOP proj':>11} "
        f"{'fwd ms':>9} {'fwd/F':>6} {'fwd+bwd ms':>11} {'fwd+bwd/F':>9}"
    )
    for name, (cls, kind) in MODULES.items():
        flops = attention_flops(kind, frames=scale.frames, tokens=scale.tokens, dim=dim)
        params = sum(p.numel() for p in cls(dim, heads).parameters())
        fwd, fwdbwd = statistics.median(times[(name, "fwd")]), statistics.median(times[(name, "fwdbwd")])
        print(
            f"{name:<7} {params:>8,} {flops['core'] * scale.batch / 1e9:>11.2f} "
            f"{flops['projections'] * scale.batch / 1e9:>11.2f} {fwd * 1e3:>9.1f} {ratio(times, name, 'fwd'):>6.3f} "
            f"{fwdbwd * 1e3:>11.1f} {ratio(times, name, 'fwdbwd'):>9.3f}"
        )
    print("attention product alone, one SDPA call (F-prod: FAttn's; ZB-prod: ZAttn's and BAttn's), ratio to F-prod:")
    for name, kind, row in (("FAttn product", "F", "F-prod"), ("ZAttn/BAttn product", "Z", "ZB-prod")):
        flops = attention_flops(kind, frames=scale.frames, tokens=scale.tokens, dim=dim)
        fwd, fwdbwd = statistics.median(times[(name, "fwd")]), statistics.median(times[(name, "fwdbwd")])
        print(
            f"{row:<7} {0:>8} {flops['core'] * scale.batch / 1e9:>11.2f} {0:>11.2f} {fwd * 1e3:>9.1f} "
            f"{ratio(times, name, 'fwd'):>6.3f} {fwdbwd * 1e3:>11.1f} {ratio(times, name, 'fwdbwd'):>9.3f}"
        )


# The sweep: frames, tokens per frame (49 + 50 joints + 3 class tokens at 112 px; 196 + 50 + 3 at 224 px), batch.
SWEEP_FRAMES, SWEEP_TOKENS, SWEEP_BATCHES = (8, 16), (52, 249), (1, 4, 16)


def run_sweep(*, dim: int, heads: int, reps: int, device: torch.device) -> None:
    """ZAttn/FAttn and BAttn/FAttn for every (T, S, B) cell, with the arithmetic bound of each cell."""
    print(f"\n[sweep] D={dim} heads={heads}; device={device}, threads={torch.get_num_threads()}, median of {reps} reps")
    print(f"{'T':>3} {'S':>4} {'B':>3} {'T*S':>5} {'bound':>6} {'Z fwd':>6} {'B fwd':>6} {'Z f+b':>6} {'B f+b':>6}")
    for frames in SWEEP_FRAMES:
        for tokens in SWEEP_TOKENS:
            for batch in SWEEP_BATCHES:
                times = measure(
                    Scale("sweep", batch=batch, frames=frames, tokens=tokens),
                    dim=dim,
                    heads=heads,
                    reps=reps,
                    device=device,
                    products=False,
                )
                full, half = (attention_flops(kind, frames=frames, tokens=tokens, dim=dim) for kind in ("F", "Z"))
                bound = (half["core"] + half["projections"]) / (full["core"] + full["projections"])
                cells = [ratio(times, name, mode) for mode in ("fwd", "fwdbwd") for name in ("ZAttn", "BAttn")]
                print(
                    f"{frames:>3} {tokens:>4} {batch:>3} {frames * tokens:>5} {bound:>6.3f} "
                    + " ".join(f"{value:>6.3f}" for value in cells),
                    flush=True,
                )


def main() -> None:
    defaults = ModelConfig(num_classes=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["both", *SCALES], default="both")
    parser.add_argument("--sweep", action="store_true", help="also every (T, S, B) of the sweep (minutes)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after one warm-up (median reported)")
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; forward FLOPs per batch (multiply-add = 2), params per module")
    for name in SCALES if args.scale == "both" else [args.scale]:
        run_scale(SCALES[name], dim=args.dim, heads=args.heads, reps=args.reps, device=torch.device(args.device))
    if args.sweep:
        run_sweep(dim=args.dim, heads=args.heads, reps=args.reps, device=torch.device(args.device))


if __name__ == "__main__":
    main()
