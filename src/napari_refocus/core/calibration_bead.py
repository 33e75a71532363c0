"""Calibration on a bead stack: a sub-resolution bead (the brightest, if there are a few)
scanned through focus. After background subtraction (the median of the planes' outer frame)
and sub-pixel centring, the radial profile of every plane is fitted by the model PSF at that
plane's defocus, with one amplitude per plane (bleaching, a light sheet's profile) and one
offset (see :mod:`.calibration`)."""

from __future__ import annotations

import time

import numpy as np

from .calibration import (
    Calibration,
    bounds_hit,
    fine_radii_px,
    free_record,
    interpolation_matrix,
    iter_free_scale,
    iter_search,
    judge,
    model_optics,
    na_limit,
    pick_planes,
    profiles_px,
    subpixel_radii,
)
from .optics import Optics
from .progress import Progress


def locate_bead(stack: np.ndarray, *, background: float) -> tuple[float, float]:
    """Sub-pixel (y, x) of the brightest bead: the peak of the smoothed sum projection,
    refined by the intensity centroid of a window around it (twice)."""
    from scipy.ndimage import gaussian_filter

    proj = np.clip(stack - background, 0, None).sum(0)
    sm = gaussian_filter(proj, 1.5)
    cy, cx = np.unravel_index(int(np.argmax(sm)), sm.shape)
    cy, cx = float(cy), float(cx)
    peak = np.clip(stack - background, 0, None).max(0)
    for _ in range(3):
        half = max(3, int(min(peak.shape) // 16))
        y0, y1 = max(0, round(cy) - half), min(peak.shape[0], round(cy) + half + 1)
        x0, x1 = max(0, round(cx) - half), min(peak.shape[1], round(cx) + half + 1)
        win = peak[y0:y1, x0:x1]
        win = np.clip(win - 0.2 * win.max(), 0, None)  # the core, not the background's noise
        if win.sum() <= 0:
            break
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cy, cx = float((win * yy).sum() / win.sum()), float((win * xx).sum() / win.sum())
    return cy, cx


def stack_background(stack: np.ndarray) -> float:
    """The median of the outer frame (4 px) of every plane: the camera offset and stray light."""
    b = max(1, min(4, min(stack.shape[1:]) // 8))
    frame = np.concatenate([stack[:, :b].ravel(), stack[:, -b:].ravel(), stack[:, :, :b].ravel(),
                            stack[:, :, -b:].ravel()])
    return float(np.median(frame))


def iter_fit_bead(stack, *, z_step_um: float, pixel_um: float, wavelength_nm: float, refractive_index: float,
                  psf_model: str = "exact", radius_px: int | None = None, max_iter: int = 300):
    """Fit NA, defocus scale and focal plane to a bead stack ``(z, y, x)``.

    Yields :class:`Progress`; returns a :class:`Calibration` whose ``residual`` is the RMS
    misfit of the radial profiles over the RMS of the background-subtracted profiles (each
    radius bin weighted by its pixel count, i.e. pixel by pixel).
    """
    t0 = time.perf_counter()
    data = np.asarray(stack, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] < 3:
        raise ValueError(f"a bead stack must be (z, y, x) with at least 3 planes, got shape {data.shape}")
    yield Progress(0, 1, "bead: background and centre")
    bg = stack_background(data)
    cy, cx = locate_bead(data, background=bg)
    edge = int(min(cy, cx, data.shape[1] - 1 - cy, data.shape[2] - 1 - cx))
    rad = int(min(edge, radius_px or 48))
    if rad < 4:
        raise ValueError(f"the bead at ({cy:.1f}, {cx:.1f}) is too close to the image border to fit")
    y0, x0 = round(cy) - rad, round(cx) - rad
    crop = data[:, y0:y0 + 2 * rad + 1, x0:x0 + 2 * rad + 1] - bg
    centre = (cy - y0, cx - x0)
    r_pix = np.hypot(*np.meshgrid(np.arange(crop.shape[1]) - centre[0], np.arange(crop.shape[2]) - centre[1],
                                  indexing="ij"))
    # a disk of whole-pixel radius bins (the corners would cost model evaluations for little)
    inside = (r_pix < rad + 0.5).ravel()
    bins = np.floor(r_pix).astype(np.int64).ravel()[inside]
    n_bins = int(bins.max()) + 1
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    measured = np.stack([np.bincount(bins, p.ravel()[inside], minlength=n_bins) for p in crop]) / counts
    # the model: sub-pixel points -> their pixel -> the pixel's radius bin, one sparse matrix
    r_sub, pix = subpixel_radii(crop.shape[1:], centre)
    keep = inside[pix]
    r_sub, pix = r_sub[keep], np.cumsum(inside)[pix[keep]] - 1  # renumber the kept pixels
    fine = fine_radii_px(float(r_sub.max()))
    to_pixels = interpolation_matrix(r_sub, fine, pix, int(inside.sum()))
    to_bins = _bin_average(bins, n_bins) @ to_pixels
    weights = counts / counts.sum()
    planes = np.arange(data.shape[0], dtype=np.float64)
    denom = float((weights * measured**2).sum())
    optics_of = {"wavelength_nm": wavelength_nm, "refractive_index": refractive_index, "pixel_um": pixel_um,
                     "psf_model": psf_model}

    def model_bins(na, scale, plane):
        o = model_optics(na, scale, **optics_of)
        return (to_bins @ profiles_px(o, fine, (planes - plane) * z_step_um).T).T  # (z, bins)

    def solve(na, scale, plane):
        shape = model_bins(na, scale, plane)
        shape = shape / max(float(shape.max()), 1e-300)
        amps, offset, rss = _amplitudes_and_offset(shape, measured, weights)
        return shape, amps, offset, rss

    def loss(na, scale, plane):
        return solve(na, scale, plane)[3] / denom

    start = float(np.argmax(measured[:, 0]))  # the brightest centre
    na_max = na_limit(refractive_index) if psf_model == "exact" else 0.98 * refractive_index
    (na, scale, plane), fun, n = yield from iter_search(loss, n_planes=data.shape[0], na_max=na_max,
                                                        start_plane=start, stage="bead fit", max_iter=max_iter)
    free = free_record(*(yield from iter_free_scale(loss, (na, scale, plane), n_planes=data.shape[0],
                                                    na_max=na_max, stage="bead fit")))
    shape, amps, offset, _ = solve(na, scale, plane)
    model = shape * amps[:, None] + offset
    residual = float(np.sqrt(fun))
    hit = bounds_hit(na, scale, plane, na_max=na_max, n_planes=data.shape[0])
    show = pick_planes(plane, data.shape[0], Optics(na=na, wavelength_nm=wavelength_nm,
                                                     refractive_index=refractive_index).depth_of_field_um
                       / (scale * z_step_um))
    curves = {"x": (np.arange(n_bins) * pixel_um).tolist(), "x_label": "radius (µm)", "planes": show,
              "measured": measured[show].tolist(), "model": model[show].tolist()}
    quality, reasons = judge(residual, "bead", hit, na=na, wavelength_nm=wavelength_nm, pixel_um=pixel_um,
                             free=free)
    return Calibration(mode="bead", na=na, defocus_scale=scale, focal_plane_index=plane, z_step_um=z_step_um,
                       pixel_um=pixel_um, wavelength_nm=wavelength_nm, refractive_index=refractive_index,
                       psf_model=psf_model, residual=residual, quality=quality, at_bound=hit, reasons=reasons, evaluations=n,
                       free_scale_fit=free,
                       seconds=round(time.perf_counter() - t0, 2), curves=curves,
                       extra={"background": bg, "bead_yx": [cy, cx], "radius_px": rad,
                              "plane_amplitudes": amps.tolist(), "offset": offset})


def _bin_average(bins: np.ndarray, n_bins: int):
    from scipy.sparse import coo_matrix

    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    return coo_matrix((1.0 / counts[bins], (bins, np.arange(len(bins)))), shape=(n_bins, len(bins))).tocsr()


def _amplitudes_and_offset(shape, measured, weights):
    """Least squares ``measured[z] ~ a[z] * shape[z] + c`` (weights per bin), in closed form:
    for a fixed ``c`` each ``a[z]`` is a projection, and ``c`` then solves one linear equation."""
    w = weights[None, :]
    ss = (w * shape * shape).sum(1)
    sm = (w * shape * measured).sum(1)
    s1 = (w * shape).sum(1)
    ss = np.where(ss > 0, ss, 1e-300)
    # a = (sm - c s1) / ss; rss(c) is quadratic in c
    num = ((w * measured).sum(1) - s1 * sm / ss).sum()
    den = (weights.sum() - s1 * s1 / ss).sum()
    c = float(num / den) if den > 1e-12 else 0.0
    a = (sm - c * s1) / ss
    rss = float((w * (measured - a[:, None] * shape - c) ** 2).sum())
    return a, c, rss
