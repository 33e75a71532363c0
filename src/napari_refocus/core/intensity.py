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
    if _countable(sample):  # a camera's 8- or 16-bit counts: from their histogram, the same numbers
        flat = sample.reshape(-1)
        lo, hi = _percentiles_of_counts(histogram(flat[i:i + HISTOGRAM_CHUNK]
                                                  for i in range(0, flat.size, HISTOGRAM_CHUNK)), percentiles)
    else:
        lo, hi = np.percentile(sample.astype(np.float64, copy=False), percentiles)
    return float(lo), float(hi)


#: values :func:`robust_range` counts at once (``np.bincount`` casts its input to int64: a whole
#: image's copy was 8 bytes per pixel, 4x a uint16 image)
HISTOGRAM_CHUNK = 1 << 18


def histogram(parts) -> np.ndarray:
    """``np.bincount`` of all the non-negative integers in the arrays ``parts``, summed part by
    part (the same counts as one bincount of them all, without its whole int64 copy; at least
    one bin)."""
    counts = np.zeros(1, np.int64)
    for part in parts:
        c = np.bincount(np.asarray(part).reshape(-1))
        if c.size > counts.size:
            counts = np.pad(counts, (0, c.size - counts.size))
        counts[:c.size] += c
    return counts


def _countable(a) -> bool:
    """Unsigned integers of at most 16 bits: a histogram holds them whole, and is ~3x faster to
    make than the partial sort of a percentile (a 696x520 field: 0.6 vs 2.2 ms)."""
    return a.dtype.kind in "ub" and a.dtype.itemsize <= 2 and a.size > 0


def _order_statistics(counts, ranks) -> np.ndarray:
    """The values of ranks ``ranks`` (0-based) of the sorted sample whose histogram is ``counts``."""
    return np.searchsorted(np.cumsum(counts), np.asarray(ranks), side="right").astype(np.float64)


def _percentiles_of_counts(counts, percentiles) -> np.ndarray:
    """``np.percentile`` (linear interpolation, float64) of the sample whose histogram is
    ``counts``, with numpy's own index and interpolation arithmetic, so the same numbers
    (tests/test_intensity_sampling.py compares them)."""
    n = int(np.sum(counts))
    q = np.true_divide(np.asarray(percentiles, dtype=np.float64), 100)
    virtual = (n - 1) * q  # numpy's virtual index of its 'linear' method
    prev = np.floor(virtual)
    gamma = virtual - prev
    prev_i = np.clip(prev, 0, n - 1).astype(np.int64)
    next_i = np.clip(prev + 1, 0, n - 1).astype(np.int64)
    above = virtual >= n - 1
    prev_i[above] = next_i[above] = n - 1
    a, b = _order_statistics(counts, prev_i), _order_statistics(counts, next_i)
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def noise_sigma(image, *, band: int = 512) -> float:
    """Robust standard deviation of pixel noise (Immerkaer 1996, with a median instead of a mean).

    The 3x3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels every linear intensity ramp, so what is
    left is mostly noise (its gain on white noise is 6); the scaled median of absolute values
    ignores the few pixels on sharp edges. A 2-D image is filtered ``band`` rows at a time into
    one float32 buffer whose median is taken in place (4 bytes per pixel, not the five or six
    whole-image temporaries of the formula at once); 8- and 16-bit counts into a histogram (the
    same number).
    """
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 3:
        a = a.astype(np.float32)
        c = a[1:-1, 1:-1]
        d = (4 * c - 2 * (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
             + a[:-2, :-2] + a[:-2, 2:] + a[2:, :-2] + a[2:, 2:])
        return float(1.4826 * np.median(np.abs(d)) / 6.0)
    h, w = a.shape
    if _countable(a):
        # exact integers: the kernel is the outer product of [1, -2, 1] with itself, so two
        # passes in int32 give the float32 formula's values exactly (|d| <= 16 x 65535 < 2^24);
        # their median comes from a histogram summed band by band (1.3 vs 3.7 ms on a 696x520 field)
        def band_values(r0):
            s = np.asarray(a[r0 - 1:min(h, r0 + band + 1)]).astype(np.int32)
            r = s[:, :-2] - 2 * s[:, 1:-1] + s[:, 2:]
            return np.abs(r[:-2] - 2 * r[1:-1] + r[2:])

        counts = histogram(band_values(r0) for r0 in range(1, h - 1, band))
        n = (h - 2) * (w - 2)
        lo, hi = _order_statistics(counts, [(n - 1) // 2, n // 2])
        return float(1.4826 * ((np.float32(lo) + np.float32(hi)) / np.float32(2)) / 6.0)
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
