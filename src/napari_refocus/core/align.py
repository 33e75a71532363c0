"""Put one image on another's grid and intensity scale before comparing them.

A real pair (a defocused shot and an in-focus shot of the same field) is never pixel-aligned
nor equally bright: the stage drifts between shots, the illumination and bleaching change the
counts. Before a PSNR against the in-focus image means anything, the other image is

1. **registered**: shifted by the sub-pixel translation at the peak of the cross-correlation
   (:func:`estimate_shift`, :func:`register_translation`). Defocus blur is (nearly) symmetric,
   so it moves no phase and the correlation peak of a blurred image against a sharp one is at
   the true shift;
2. **intensity-matched**: replaced by ``a * x + b``, the least-squares affine fit of its values
   to the reference's on the pixels both cover (:func:`fit_intensity`, :func:`match_intensity`).

Pixels the shift moves in from outside the image have no data: :func:`register_translation`
fills them with NaN (by default) and :func:`match_intensity` fits on finite pixels only.
"""

from __future__ import annotations

import numpy as np

from .validation import as_image


def _pair(moving, reference, *, allow_nan: bool = False):
    """Both images as float64 after checking them (NaN allowed where ``allow_nan``: the pixels
    without data that :func:`register_translation` leaves)."""
    if allow_nan:
        m, r = (np.asarray(x, dtype=np.float64) for x in (moving, reference))
        for name, x in (("moving image", m), ("reference image", r)):
            if np.isinf(x).any():
                raise ValueError(f"{name} contains infinite values")
            # as_image checks the rest (dtype, dimensions, emptiness) on a NaN-free view
            as_image(np.nan_to_num(x, nan=0.0), name=name, allow_negative=True)
    else:
        m = as_image(moving, name="moving image", allow_negative=True).astype(np.float64)
        r = as_image(reference, name="reference image", allow_negative=True).astype(np.float64)
    if m.shape != r.shape:
        raise ValueError(f"moving image shape {m.shape} differs from reference shape {r.shape}")
    return m, r


def estimate_shift(moving, reference, *, upsample_factor: int = 20) -> np.ndarray:
    """The (dy, dx) shift in pixels that registers ``moving`` onto ``reference``.

    The peak of the cross-correlation (:func:`skimage.registration.phase_cross_correlation`
    with ``normalization=None``), refined to ``1 / upsample_factor`` of a pixel, of both images
    less their means and under a Hann window. Applying it with :func:`register_translation`
    (or ``scipy.ndimage.shift(moving, shift)``) moves ``moving``'s content onto ``reference``'s.

    Why not the phase-normalised form: it whitens the spectrum, which for a defocused image
    lifts the noise beyond the blur's cut-off to the weight of the signal (on a real field
    blurred 6 um it was 0.9 px off, this form 0.07 px). The window keeps the image borders
    (which a shift does not carry along) from pulling the peak towards zero shift.
    """
    from skimage.filters import window
    from skimage.registration import phase_cross_correlation

    m, r = _pair(moving, reference)
    if upsample_factor < 1:
        raise ValueError(f"upsample_factor must be >= 1, got {upsample_factor!r}")
    win = window("hann", m.shape)
    shift, _, _ = phase_cross_correlation((r - r.mean()) * win, (m - m.mean()) * win,
                                          upsample_factor=int(upsample_factor), normalization=None)
    return np.asarray(shift, dtype=np.float64)


def register_translation(moving, reference, *, shift_px=None, upsample_factor: int = 20, order: int = 3,
                         fill: float = np.nan) -> np.ndarray:
    """``moving`` translated onto ``reference`` (sub-pixel), as float64 of the same shape.

    Parameters
    ----------
    moving, reference : 2-D arrays of the same shape.
    shift_px : (dy, dx), optional
        The shift to apply; by default :func:`estimate_shift` finds it.
    upsample_factor : sub-pixel precision of the estimate (1 / upsample_factor px).
    order : spline order of the interpolation (3: cubic; 1: bilinear, never overshoots).
    fill : value of the pixels that the shift brings in from outside ``moving`` (they have no
        data; NaN by default so that later fits and metrics can leave them out).
    """
    from scipy.ndimage import shift as nd_shift

    m, r = _pair(moving, reference)
    s = estimate_shift(m, r, upsample_factor=upsample_factor) if shift_px is None else np.asarray(shift_px, float)
    if s.shape != (2,) or not np.all(np.isfinite(s)):
        raise ValueError(f"shift_px must be two finite numbers (dy, dx), got {shift_px!r}")
    out = nd_shift(m, s, order=order, mode="nearest")
    # the rows/columns that came from beyond the border: mode="nearest" only repeated the edge
    h, w = m.shape
    for axis, (d, n) in enumerate(zip(s, (h, w))):
        k = int(np.ceil(abs(d) - 1e-9))
        if k == 0:
            continue
        idx = [slice(None), slice(None)]
        idx[axis] = slice(0, min(k, n)) if d > 0 else slice(max(n - k, 0), n)
        out[tuple(idx)] = fill
    return out


def fit_intensity(moving, reference, *, mask=None) -> tuple[float, float]:
    """``(a, b)`` minimising ``sum((a * moving + b - reference)**2)`` over the pixels where both
    are finite (and ``mask`` is true, if given)."""
    m, r = _pair(moving, reference, allow_nan=True)
    ok = np.isfinite(m) & np.isfinite(r)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != m.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {m.shape}")
        ok &= mask
    if ok.sum() < 2:
        raise ValueError("fewer than two pixels to fit the intensities on")
    x, y = m[ok], r[ok]
    xc = x - x.mean()
    var = float(np.dot(xc, xc))
    a = float(np.dot(xc, y - y.mean()) / var) if var > 0 else 0.0
    return a, float(y.mean() - a * x.mean())


def match_intensity(moving, reference, *, mask=None) -> np.ndarray:
    """``a * moving + b`` with the least-squares affine fit of :func:`fit_intensity` (float64;
    NaN pixels of ``moving`` stay NaN)."""
    a, b = fit_intensity(moving, reference, mask=mask)
    return a * np.asarray(moving, dtype=np.float64) + b


def valid_box(shifts, shape, *, margin_px: int = 0) -> tuple[slice, slice]:
    """The (rows, cols) slices that every image moved by one of ``shifts`` still covers, less
    ``margin_px`` on each side: the common region on which to compare several registered images."""
    s = np.atleast_2d(np.asarray(shifts, dtype=np.float64))
    h, w = shape
    top = int(np.ceil(max(0.0, s[:, 0].max()))) + margin_px
    bottom = int(np.ceil(max(0.0, -s[:, 0].min()))) + margin_px
    left = int(np.ceil(max(0.0, s[:, 1].max()))) + margin_px
    right = int(np.ceil(max(0.0, -s[:, 1].min()))) + margin_px
    if top + bottom >= h or left + right >= w:
        raise ValueError(f"shifts {s.tolist()} leave no common region in a {shape} image")
    return slice(top, h - bottom), slice(left, w - right)

