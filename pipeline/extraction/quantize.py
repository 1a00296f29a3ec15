"""8-bit feature maps: the opt-in storage of `FeatureCache(quantize=True)`.

MC3-18 maps are ReLU outputs (>= 0) and heatmaps lie in [0, 1], so each
(sample, frame, channel) map is stored as uint8 = round(x / s) with s = max(x) / 255; the error per value is at most
s / 2. Size and error: benchmarks/cache_size.py.
"""

from __future__ import annotations

import numpy as np


def quantize_map(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, C, h, w) values >= 0 -> uint8 codes and (T, C) float32 scales, |x - codes * scale| <= scale / 2."""
    scale = values.max(axis=(2, 3)).astype(np.float32) / np.float32(255)  # (T, C); float32 even for float16 maps
    divisor = np.where(scale > 0, scale, np.float32(1))[:, :, None, None]  # all-zero maps stay 0
    codes = np.clip(np.rint(values / divisor), 0, 255).astype(np.uint8)
    return codes, scale


def dequantize_map(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of `quantize_map`: (..., T, C, h, w) uint8 and (..., T, C) scales -> float32."""
    return codes.astype(np.float32) * scale[..., None, None]
