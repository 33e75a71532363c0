"""Intensity statistics that make a result independent of exposure, bit depth and float scale.

A camera image is ``counts = gain * photons + offset``; the same field at another exposure,
as 8-bit export or as floats in 0..1, differs by an affine map of intensities (and by its
shot-noise level). Steps that read absolute intensities (DelpNet, the background rule) first
map the image onto a canonical scale with :func:`to_canonical`, so their answers depend on the
picture, not on how it was stored.
"""

from __future__ import annotations

import numpy as np

#: robust low/high percentiles of an image's intensities (background / bright structure)
PERCENTILES = (1.0, 99.8)


def robust_range(image, percentiles=PERCENTILES, *, max_samples: int = 4_000_000) -> tuple[float, float]:
    """``(lo, hi)`` percentiles of the intensities (a regular subsample above ``max_samples``)."""
    a = np.asarray(image)
    step = max(1, int(np.ceil(np.sqrt(a.size / max_samples))))
    sample = a[::step, ::step] if a.ndim == 2 else a.ravel()[::step * step]
    lo, hi = np.percentile(sample.astype(np.float64, copy=False), percentiles)
    return float(lo), float(hi)


def noise_sigma(image, *, band: int = 512) -> float:
    """Robust standard deviation of pixel noise (Immerkaer 1996, with a median instead of a mean).

    The 3x3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels every linear intensity ramp, so what is
    left is mostly noise (its gain on white noise is 6); the scaled median of absolute values
    ignores the few pixels on sharp edges. A 2-D image is filtered ``band`` rows at a time into
    one float32 buffer whose median is taken in place (4 bytes per pixel, not the five or six
    whole-image temporaries of the formula at once).
    """
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 3:
        a = a.astype(np.float32)
        c = a[1:-1, 1:-1]
        d = (4 * c - 2 * (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
             + a[:-2, :-2] + a[:-2, 2:] + a[2:, :-2] + a[2:, 2:])
        return float(1.4826 * np.median(np.abs(d)) / 6.0)
    h, w = a.shape
    out = np.empty((h - 2, w - 2), np.float32)
    for r0 in range(1, h - 1, band):
        r1 = min(h - 1, r0 + band)
        s = np.asarray(a[r0 - 1:r1 + 1], dtype=np.float32)
        c = s[1:-1, 1:-1]
        d = (4 * c - 2 * (s[:-2, 1:-1] + s[2:, 1:-1] + s[1:-1, :-2] + s[1:-1, 2:])
             + s[:-2, :-2] + s[:-2, 2:] + s[2:, :-2] + s[2:, 2:])
        np.abs(d, out=out[r0 - 1:r1 - 1])
    return float(1.4826 * np.median(out, overwrite_input=True) / 6.0)


def to_canonical(image, *, span: float, offset: float, stats=None, out=None) -> np.ndarray:
    """``(image - lo) / (hi - lo) * span + offset`` as float32, clipped at 0.

    ``stats=(lo, hi)`` (default: :func:`robust_range` of ``image``). A flat image (hi == lo)
    maps to ``offset``. Any affine change of the input's intensities (exposure, bit depth,
    float scaling) gives the same output, up to the input's own rounding.
    ``out``: a float32 array of ``image``'s shape (``image`` itself, or a view into a bigger
    buffer) the result is written into, with no other image-sized temporary; the same numbers.
    """
    lo, hi = stats if stats is not None else robust_range(image)
    scale = span / (hi - lo) if hi > lo else 0.0
    if out is None:
        out = np.asarray(image, dtype=np.float32) - np.float32(lo)
    else:
        if out is not image:
            out[...] = image  # cast while copying
        out -= np.float32(lo)
    out *= np.float32(scale)
    out += np.float32(offset)
    return np.clip(out, 0.0, None, out=out)
