"""Resampling an image to another pixel size (anti-aliased), and back, in memory or by windows.

One separable triangle-filter (anti-aliased bilinear) resampler on pixel centres, the filter of
torch's ``interpolate(mode="bilinear", antialias=True, align_corners=False)``: when shrinking by
``s`` (input pixels per output pixel) the triangle is ``s`` input pixels wide on each side, so
the result is free of aliasing; when enlarging it is plain bilinear interpolation.

Every output pixel is computed from its *global* output index only: per axis a fixed number of
taps, their input indices and weights from the global index, summed in float32 in the same tap
order. So any window of the output (:func:`resample_window`, from a region of the input that
covers :func:`input_window`) is bit-identical to the same pixels of :func:`resample` of the
whole image, which is what lets a big image be resampled block by block. (torch's own kernel
computes its weights differently and differs from this by up to ~6e-6 of the image's range.)
"""

from __future__ import annotations

import math

import numpy as np


def repeat_pixels(a, factor: int, *, rows=None) -> np.ndarray:
    """``a`` (2-D, or more with Y, X first) with each pixel repeated ``factor`` x ``factor``: an
    input-sized mask, alpha or plane on an x2 method's output grid (``a`` itself when ``factor``
    is 1). ``rows=(r0, r1)``: only those output rows (not the whole repeated image)."""
    a = np.asarray(a)
    factor = int(factor)
    if rows is not None:
        return np.repeat(a[np.arange(rows[0], rows[1]) // factor], factor, axis=1)
    return a if factor == 1 else np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)


def resized_shape(shape, factor: float) -> tuple[int, int]:
    """``(h, w)`` of a 2-D image of ``shape`` resampled by ``factor`` (>= 1 px each)."""
    return tuple(max(1, int(round(n * factor))) for n in shape[-2:])


def _taps(n_in: int, n_out: int, start: int, stop: int):
    """Input indices ``(m, K)`` and float32 weights ``(m, K)`` of output pixels ``start..stop``
    of one axis resampled from ``n_in`` to ``n_out`` pixels (K fixed by the two sizes).

    Taps past a pixel's support get weight 0 and repeat its last index (inside its window)."""
    s = n_in / n_out  # input pixels per output pixel
    support = max(s, 1.0)  # triangle half-width in input pixels (1: plain bilinear)
    k_taps = int(math.ceil(2.0 * support)) + 1
    centre = s * (np.arange(start, stop, dtype=np.float64) + 0.5)
    lo = np.maximum(np.floor(centre - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.floor(centre + support + 0.5).astype(np.int64), n_in)
    j = lo[:, None] + np.arange(k_taps)[None, :]
    valid = j < hi[:, None]
    w = np.where(valid, np.clip(1.0 - np.abs((j - centre[:, None] + 0.5) / support), 0.0, None), 0.0)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-300)
    return np.minimum(j, (hi - 1)[:, None]), w.astype(np.float32)


def _axis_window(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, int]:
    """Input range ``[a, b)`` that output pixels ``start..stop`` of one axis read."""
    if n_in == n_out:
        return start, stop
    idx, _ = _taps(n_in, n_out, start, stop)
    return int(idx.min()), int(idx.max()) + 1


def input_window(*, full_shape, out_shape, out_box) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the input pixels (inside the image) that output pixels
    ``out_box = (oy0, oy1, ox0, ox1)`` of :func:`resample` (``full_shape`` -> ``out_shape``) read."""
    oy0, oy1, ox0, ox1 = (int(b) for b in out_box)
    if not (0 <= oy0 < oy1 <= out_shape[0] and 0 <= ox0 < ox1 <= out_shape[1]):
        raise ValueError(f"output box {out_box} is not inside the output shape {tuple(out_shape)}")
    return (*_axis_window(int(full_shape[0]), int(out_shape[0]), oy0, oy1),
            *_axis_window(int(full_shape[1]), int(out_shape[1]), ox0, ox1))


def _along(a: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Sum over the taps (in tap order, float32) of ``w * a`` gathered along ``axis``.

    Rows are gathered with numpy (contiguous copies), columns with torch's ``index_select``
    (several times faster than numpy's strided gather); multiply and add are separate
    element-wise float32 operations, so each output pixel's value depends only on its taps."""
    if axis == 0:
        out = None
        for k in range(idx.shape[1]):
            term = a[idx[:, k]]
            term *= w[:, k][:, None]
            out = term if out is None else np.add(out, term, out=out)
        return out
    import torch

    t, out = torch.from_numpy(np.ascontiguousarray(a)), None
    for k in range(idx.shape[1]):
        term = t.index_select(1, torch.from_numpy(idx[:, k]))
        term.mul_(torch.from_numpy(w[:, k])[None, :])
        out = term if out is None else out.add_(term)
    return out.numpy()


def resample_window(region, *, full_shape, out_shape, out_box, region_origin=(0, 0)) -> np.ndarray:
    """Output pixels ``out_box = (oy0, oy1, ox0, ox1)`` of resampling a ``full_shape`` image to
    ``out_shape``, from ``region``: the input's pixels from ``region_origin`` on, covering at
    least :func:`input_window`. Float32, bit-identical to the same pixels of
    ``resample(whole_image, shape=out_shape)``."""
    oy0, oy1, ox0, ox1 = (int(b) for b in out_box)
    need = input_window(full_shape=full_shape, out_shape=out_shape, out_box=out_box)
    ry, rx = (int(o) for o in region_origin)
    a = np.asarray(region, dtype=np.float32)
    if need[0] < ry or need[1] > ry + a.shape[0] or need[2] < rx or need[3] > rx + a.shape[1]:
        raise ValueError(f"region at {tuple(region_origin)} of shape {a.shape} does not cover the input "
                         f"window {need} of output box {tuple(out_box)}")
    (h, w), (oh, ow) = (int(n) for n in full_shape[-2:]), (int(n) for n in out_shape)
    if h != oh:  # rows first (contiguous gathers), then columns
        iy, wy = _taps(h, oh, oy0, oy1)
        a = _along(a, iy - ry, wy, 0)
    else:
        a = a[oy0 - ry:oy1 - ry]
    if w != ow:
        ix, wx = _taps(w, ow, ox0, ox1)
        a = _along(a, ix - rx, wx, 1)
    else:
        a = a[:, ox0 - rx:ox1 - rx]
    return np.ascontiguousarray(a, dtype=np.float32)


#: output rows per band of :func:`resample`: each band reads only its own input rows, so the input
#: is never converted to float32 as a whole (a uint16 image of 37.7 Mpx: a 150 MB copy less)
BAND_ROWS = 256


def resample(image, *, shape) -> np.ndarray:
    """A 2-D image resampled to ``shape`` (float32), anti-aliased when shrinking.

    Triangle-filter interpolation on pixel centres (see the module doc): bilinear when
    enlarging, a low-pass as wide as the output pixel when shrinking. Returns the image itself
    (as float32) when the shape does not change. Made :data:`BAND_ROWS` output rows at a time,
    each band from its own input rows (:func:`resample_window`: the same numbers as at once).
    """
    a = np.asarray(image)
    shape = tuple(int(s) for s in shape)
    if a.shape == shape:
        return np.asarray(a, dtype=np.float32)
    out = np.empty(shape, np.float32)
    for oy0 in range(0, shape[0], BAND_ROWS):
        box = (oy0, min(shape[0], oy0 + BAND_ROWS), 0, shape[1])
        y0, y1, _, _ = input_window(full_shape=a.shape, out_shape=shape, out_box=box)
        out[box[0]:box[1]] = resample_window(a[y0:y1], full_shape=a.shape, out_shape=shape, out_box=box,
                                             region_origin=(y0, 0))
    return out
