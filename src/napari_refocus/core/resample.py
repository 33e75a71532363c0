"""Resampling an image to another pixel size (anti-aliased), and back."""

from __future__ import annotations

import numpy as np


def resized_shape(shape, factor: float) -> tuple[int, int]:
    """``(h, w)`` of a 2-D image of ``shape`` resampled by ``factor`` (>= 1 px each)."""
    return tuple(max(1, int(round(n * factor))) for n in shape[-2:])


def resample(image, *, shape) -> np.ndarray:
    """A 2-D image resampled to ``shape`` (float32), anti-aliased when shrinking.

    Bilinear interpolation on pixel centres (torch ``interpolate`` with ``antialias=True``,
    whose low-pass when shrinking keeps the result free of aliasing); returns the image itself
    (as float32) when the shape does not change.
    """
    import torch

    a = np.asarray(image, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    if a.shape == shape:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    out = torch.nn.functional.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()
