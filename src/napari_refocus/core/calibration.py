"""Calibration: the *effective* optics of a microscope, fitted to a measured z-stack.

Two kinds of stack, one model (:mod:`.optics`: scalar Born & Wolf, pixel-integrated):

* a bead stack (:mod:`.calibration_bead`): a sub-resolution bead scanned through focus. After
  background subtraction and sub-pixel centring, the radial profile of every plane is fitted
  by the model PSF at that plane's defocus, with one amplitude per plane (bleaching, a light
  sheet's profile) and one offset;
* a thin sample (:mod:`.calibration_thin`): the sharpest plane, blurred by the model PSF at
  each plane's distance, must match that plane.

The free parameters are the same in both: the numerical aperture, a defocus scale (the
model's defocus is ``defocus_scale * (i - focal_plane) * z_step_um`` for plane ``i``) and the
focal plane (a fractional plane index). The wavelength, the immersion index and the pixel
size are given. The fit starts from a coarse grid over the NA and the scale (never from the
engraved NA) and is refined by Nelder-Mead in ``(log NA, log scale, focal plane)``.

A defocus scale outside :data:`SCALE_BOUNDS` is not a plausible objective. A wrong z-step *is* a
defocus scale (the model sees only ``scale * z_step_um``), and paraxially a wrong pixel size is
too: in pixels the PSF depends only on ``NA * pixel_um`` (the in-focus width) and
``scale * NA**2`` (the growth with defocus), so a pixel size ``f`` x too large is explained
exactly by ``NA / f`` and ``scale * f**2``. No residual can therefore tell a wrong pixel size or
z-step from a strange objective by itself; what can is the scale the stack asks for. So every
fit is done twice: within the plausible scales (the answer), and with the scale free over
:data:`FREE_SCALE_BOUNDS` (:func:`iter_free_scale`, the check). When the free fit explains the
stack clearly better (:func:`wants_implausible_scale`) with a scale outside the plausible range,
the answer is ``poor`` and the reasons say by what factor the z-step or the pixel size is off.
Within the plausible scales the fit of such a stack also misfits (a bead's residual rises above
its limit; a thin sample's, which is weighed against its noise, often does not: the
free-scale check is what flags it).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np

from .optics import Optics
from .progress import Progress

#: plausible defocus scales (refractive-index mismatch, tube-lens and stage errors stay within)
SCALE_BOUNDS = (0.6, 1.67)
#: the free-scale check's range: a pixel size 3x off (scale x9 or /9) or a z-step 6x off still inside
FREE_SCALE_BOUNDS = (0.1, 10.0)
#: the free fit "explains the stack clearly better" when its residual is below this share of the
#: plausible fit's, less :data:`FREE_MARGIN` (both normalised; a good fit's residual barely moves)
FREE_RATIO, FREE_MARGIN = 0.7, {"bead": 0.003, "thin": 0.002}
#: normalised residual above which a fit is "poor" (the misfit is more than noise); see
#: BENCHMARKS.md "Calibration" for the residuals of good and of wrong-pixel / wrong-step fits
RESIDUAL_LIMIT = {"bead": 0.05, "thin": 0.1}
OVERSAMPLE = 3


@dataclass
class Calibration:
    """What a fit found (see the module docstring); :meth:`as_dict` is its JSON form."""

    mode: str
    na: float
    defocus_scale: float
    focal_plane_index: float
    z_step_um: float
    pixel_um: float
    wavelength_nm: float
    refractive_index: float
    psf_model: str
    residual: float
    quality: str
    at_bound: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    #: the same fit with the scale free (:func:`iter_free_scale`): na, defocus_scale,
    #: focal_plane_index, residual, evaluations
    free_scale_fit: dict = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    #: measured vs model curves for plotting: {"x": [...], "x_label": str, "planes": [...],
    #: "measured": [[...]], "model": [[...]]}
    curves: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def focal_plane_um(self) -> float:
        return self.focal_plane_index * self.z_step_um

    def optics(self, **overrides) -> Optics:
        """The fitted :class:`Optics` (one level = one z-step unless ``level_step_um`` is given)."""
        values = {"na": self.na, "defocus_scale": self.defocus_scale, "pixel_um": self.pixel_um,
                  "wavelength_nm": self.wavelength_nm, "refractive_index": self.refractive_index,
                  "psf_model": self.psf_model}
        return Optics(**{**values, **overrides})

    def optics_values(self) -> dict:
        """The Optics fields this fit sets (what an optics file holds)."""
        return {"na": round(self.na, 5), "defocus_scale": round(self.defocus_scale, 5),
                "pixel_um": self.pixel_um, "wavelength_nm": self.wavelength_nm,
                "refractive_index": self.refractive_index, "psf_model": self.psf_model}

    def as_dict(self) -> dict:
        out = asdict(self)
        out["focal_plane_um"] = self.focal_plane_um
        return out


# ----------------------------------------------------------------------------- the model
def model_optics(na, scale, *, wavelength_nm, refractive_index, pixel_um, psf_model) -> Optics:
    return Optics(na=float(na), defocus_scale=float(scale), wavelength_nm=wavelength_nm,
                  refractive_index=refractive_index, pixel_um=pixel_um, psf_model=psf_model)


def fine_radii_px(r_max_px: float, oversample: int = OVERSAMPLE) -> np.ndarray:
    """Radii (px) at which the 1-D profile is computed before interpolation onto sub-pixels."""
    step = 0.5 / oversample  # two samples per sub-pixel: the rings stay resolved
    return np.arange(0.0, r_max_px + 2 * step, step)


def interpolation_matrix(r_px: np.ndarray, fine: np.ndarray, groups: np.ndarray, n_groups: int):
    """Sparse ``(n_groups, len(fine))`` matrix: the mean over each group of points (radii
    ``r_px``) of the profile linearly interpolated from ``fine`` (equally spaced from 0)."""
    from scipy.sparse import coo_matrix

    step = fine[1] - fine[0]
    pos = np.clip(r_px / step, 0, len(fine) - 1.000001)
    i0 = np.floor(pos).astype(np.int64)
    w1 = pos - i0
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    scale = 1.0 / np.maximum(counts[groups], 1)
    rows = np.concatenate([groups, groups])
    cols = np.concatenate([i0, i0 + 1])
    vals = np.concatenate([(1 - w1) * scale, w1 * scale])
    return coo_matrix((vals, (rows, cols)), shape=(n_groups, len(fine))).tocsr()


def subpixel_radii(shape, centre, oversample: int = OVERSAMPLE):
    """Radii (px) from ``centre`` of ``oversample**2`` sub-pixel points per pixel, and the
    flat index of the pixel each belongs to."""
    ny, nx = shape
    offs = (np.arange(oversample) + 0.5) / oversample - 0.5
    yy = (np.arange(ny)[:, None] + offs[None, :]).ravel() - centre[0]
    xx = (np.arange(nx)[:, None] + offs[None, :]).ravel() - centre[1]
    r = np.hypot(yy[:, None], xx[None, :])  # (ny*os, nx*os)
    pix = (np.arange(ny).repeat(oversample)[:, None] * nx + np.arange(nx).repeat(oversample)[None, :])
    return r.ravel(), pix.ravel()


@functools.lru_cache(maxsize=64)
def _nodes(n: int):
    """``n`` (a multiple of 16) quadrature nodes and weights on [0, 1]: composite 16-point
    Gauss-Legendre on ``n / 16`` equal panels (a full ``n``-point rule needs an eigenvalue
    solve of seconds for n ~ 5000, and the search meets many ``n``)."""
    x, w = np.polynomial.legendre.leggauss(16)
    panels = n // 16
    left = np.arange(panels)[:, None] / panels
    return (left + 0.5 * (x + 1.0) / panels).ravel(), np.tile(0.5 * w / panels, panels)


@functools.lru_cache(maxsize=8)
def _bessel(a: float, fine_um: tuple, n: int) -> np.ndarray:
    from scipy.special import j0

    rho, w = _nodes(n)
    return j0(a * np.outer(np.asarray(fine_um), rho)) * (rho * w)


def profiles_px(optics: Optics, fine_px: np.ndarray, zs_um: np.ndarray) -> np.ndarray:
    """``h(r; z)`` (rows: nominal defocus ``zs_um``; columns: radii ``fine_px`` in pixels):
    the formulas of :func:`.optics._profiles`, with a composite quadrature of at least 8 nodes
    per oscillation of the integrand, cached (the fit evaluates thousands of nearby optics)."""
    k0 = 2 * np.pi / (optics.wavelength_nm * 1e-3)
    na, n = optics.na, optics.refractive_index
    zs = np.asarray(zs_um, dtype=np.float64) * optics.defocus_scale
    r_um = np.asarray(fine_px, dtype=np.float64) * optics.pixel_um
    z_max = float(np.max(np.abs(zs))) if len(zs) else 0.0
    if optics.psf_model == "paraxial":
        a, span = k0 * na / n, k0 * na / n * r_um.max() + k0 * z_max * na**2 / n**2
    else:
        a, span = k0 * na, k0 * na * r_um.max() + k0 * z_max * na**2 / np.sqrt(n**2 - na**2)
    nodes = int(16 * np.ceil(min(16000, max(64, 8 * span / np.pi)) / 16))
    rho, _ = _nodes(nodes)
    if optics.psf_model == "paraxial":
        phase = -0.5 * k0 * np.outer(zs, rho**2) * na**2 / n**2
    else:
        phase = k0 * np.outer(zs, np.sqrt(n**2 - (na * rho) ** 2) - n)
    amp = np.exp(1j * phase) @ _bessel(float(a), tuple(r_um), nodes).T
    return amp.real**2 + amp.imag**2


# ----------------------------------------------------------------------------- the search
def iter_search(loss, *, n_planes: int, na_max: float, start_plane: float, stage: str, max_iter: int = 300,
                scale_bounds=SCALE_BOUNDS):
    """Grid over (NA, scale) at ``start_plane``, then Nelder-Mead from the best three grid
    points in ``(log NA, log scale, focal plane)``. Yields Progress; returns ``(x, fun, n)``:
    the best ``(na, scale, plane)``, its loss and the number of loss evaluations."""
    from scipy.optimize import minimize

    n_eval = [0]

    def f(theta):
        n_eval[0] += 1
        return loss(float(np.exp(theta[0])), float(np.exp(theta[1])), float(theta[2]))

    # uniform in the half-angle of the light cone: the PSF changes as fast per step at 1.4 oil
    # as at 0.3 air (a log-NA grid is too coarse near the immersion's index)
    n_imm = na_max / 0.98
    nas = n_imm * np.sin(np.linspace(np.arcsin(0.08 / n_imm), np.arcsin(na_max / n_imm), 13))
    scales = (0.75, 1.0, 1.35)
    grid = [(np.log(a), np.log(s), start_plane) for a in nas for s in scales]
    total = len(grid) + max_iter
    values = []
    for k, theta in enumerate(grid):
        values.append(f(theta))
        yield Progress(k + 1, total, f"{stage}: grid {k + 1}/{len(grid)}")
    bounds = [(np.log(0.05), np.log(na_max)), tuple(np.log(scale_bounds)), (-0.5, n_planes - 0.5)]
    best = (None, np.inf)
    starts = [grid[i] for i in np.argsort(values)[:2]]
    per_start = max_iter // len(starts)
    for s_i, theta in enumerate(starts):
        steps = np.diag([0.08, 0.12, 1.0])
        simplex = np.vstack([theta, np.asarray(theta) + steps])
        simplex = np.clip(simplex, [b[0] for b in bounds], [b[1] for b in bounds])
        done = 0
        while done < per_start:
            res = minimize(f, simplex[0], method="Nelder-Mead", bounds=bounds,
                           options={"maxiter": 20, "initial_simplex": simplex, "xatol": 2e-3, "fatol": 1e-7})
            simplex = res.final_simplex[0]
            done += res.nit
            yield Progress(len(grid) + s_i * per_start + min(done, per_start), total,
                           f"{stage}: refining start {s_i + 1}/{len(starts)} (loss {res.fun:.4g})")
            if res.success:
                break
        if res.fun < best[1]:
            best = (res.x, res.fun)
    x = best[0]
    return (float(np.exp(x[0])), float(np.exp(x[1])), float(x[2])), float(best[1]), n_eval[0]


def iter_free_scale(loss, x, *, n_planes: int, na_max: float, stage: str, max_iter: int = 40):
    """The check of a fit ``x = (na, scale, plane)``: the same loss with the defocus scale free
    over :data:`FREE_SCALE_BOUNDS` (the NA still within the immersion).

    A grid of implausible scales (0.14 .. 0.5 and 2 .. 7.2, 1.2x apart), each with the NAs
    that explain it from ``x``: ``na * (scale_x / scale)**e`` for e = 0 (a wrong z-step: the NA
    stays), 0.5 (a wrong pixel size, paraxially: ``scale * NA**2`` stays) and 0.75 .. 1.25 (what
    a thin sample's fit follows), at the fitted focal plane; then Nelder-Mead from the two
    best grid points (never from ``x``: its basin is what the check looks beyond). Yields Progress; returns
    ``((na, scale, plane), loss, n_evaluations)``: ``x`` and its loss when nothing implausible
    does better."""
    from scipy.optimize import minimize

    n_eval = [0]

    def f(theta):
        n_eval[0] += 1
        return loss(float(np.exp(theta[0])), float(np.exp(theta[1])), float(theta[2]))

    na_x, s_x, plane_x = x
    # the valley a thin sample leaves is narrow (10 % in NA) and curved: scales 1.2x apart, and
    # NAs from "the NA stays" (e = 0) to beyond "NA * scale stays" (e = 1.25)
    scales = np.concatenate([0.5 / 1.2 ** np.arange(8), 2.0 * 1.2 ** np.arange(8)])
    grid = [np.array([np.log(np.clip(na_x * (s_x / s) ** e, 0.05, na_max)), np.log(s), plane_x])
            for s in scales for e in (0.0, 0.5, 0.75, 1.0, 1.25)]
    total = len(grid) + 2 * max_iter
    values = []
    for k, theta in enumerate(grid):
        values.append(f(theta))
        if k % 10 == 9:
            yield Progress(k + 1, total, f"{stage}: free-scale check, grid {k + 1}/{len(grid)}")
    bounds = [(np.log(0.05), np.log(na_max)), tuple(np.log(FREE_SCALE_BOUNDS)), (-0.5, n_planes - 0.5)]
    best = None
    for theta in [grid[i] for i in np.argsort(values)[:2]]:  # the two best: a local minimum may hold one
        simplex = np.vstack([theta, theta + np.diag([0.08, 0.15, 0.7])])
        simplex = np.clip(simplex, [b[0] for b in bounds], [b[1] for b in bounds])
        res = minimize(f, theta, method="Nelder-Mead", bounds=bounds,
                       options={"maxiter": max_iter, "initial_simplex": simplex, "xatol": 3e-3, "fatol": 1e-7})
        if best is None or res.fun < best.fun:
            best = res
        yield Progress(total, total, f"{stage}: free-scale check (loss {best.fun:.4g})")
    fun_x = f(np.array([np.log(na_x), np.log(s_x), plane_x]))
    if best.fun >= fun_x:  # nothing implausible does better than the plausible fit
        return (float(na_x), float(s_x), float(plane_x)), float(fun_x), n_eval[0]
    return (float(np.exp(best.x[0])), float(np.exp(best.x[1])), float(best.x[2])), float(best.fun), n_eval[0]


def free_record(x, fun: float, n: int) -> dict:
    """:attr:`Calibration.free_scale_fit` from :func:`iter_free_scale`'s result."""
    return {"na": x[0], "defocus_scale": x[1], "focal_plane_index": x[2], "residual": float(np.sqrt(max(fun, 0.0))),
            "evaluations": n}


def wants_implausible_scale(mode: str, residual: float, free: dict) -> bool:
    """Whether the free-scale fit ``free`` (see :class:`Calibration`) explains the stack clearly
    better than the plausible fit (residual ``residual``) with a scale outside
    :data:`SCALE_BOUNDS` (3 % beyond: the plausible fit's own bound tolerance)."""
    if not free:
        return False
    s = free["defocus_scale"]
    outside = s < SCALE_BOUNDS[0] * 0.97 or s > SCALE_BOUNDS[1] / 0.97
    return bool(outside and free["residual"] < FREE_RATIO * residual - FREE_MARGIN[mode])


def implausible_reason(free: dict) -> str:
    """What a wanted scale ``s`` says: the model sees ``s * z_step_um`` (so the real z-step is
    ``s`` x the given one) and, paraxially, ``scale / pixel_um**2`` (so the real pixel is
    ``1 / sqrt(s)`` x the given one)."""
    s = free["defocus_scale"]
    return (f"the stack is explained far better (residual {free['residual']:.4f}) with a defocus scale of {s:.2f} "
            f"and NA {free['na']:.3f}, outside the plausible {SCALE_BOUNDS[0]}..{SCALE_BOUNDS[1]}: the z-step is "
            f"likely {s:.2f}x the given one, or the pixel size {1 / np.sqrt(s):.2f}x the given one")


def bounds_hit(na, scale, plane, *, na_max, n_planes, rtol=0.03) -> list:
    """Names of the parameters that ended at (within ``rtol`` of) a bound of the search."""
    hit = []
    if na >= na_max * 0.995 or na <= 0.05 * 1.005:  # the NA bound is the immersion itself: nearer
        hit.append("na")
    if scale <= SCALE_BOUNDS[0] * (1 + rtol) or scale >= SCALE_BOUNDS[1] * (1 - rtol):
        hit.append("defocus_scale")
    if plane <= -0.45 or plane >= n_planes - 0.55:
        hit.append("focal_plane")
    return hit


#: the in-focus cutoff 2 NA / lambda may exceed the sampling's Nyquist frequency by this much
#: before the NA counts as undetermined (the defocus blur alone then sets NA and scale together)
UNDERSAMPLING_LIMIT = 1.5


def judge(residual: float, mode: str, hit: list, *, na: float, wavelength_nm: float, pixel_um: float,
          free: dict | None = None):
    """``(quality, reasons)``: "good", or "poor" with why (residual above :data:`RESIDUAL_LIMIT`,
    a parameter at its bound, a free-scale fit ``free`` that explains the stack far better with
    an implausible scale, the fitted NA's cutoff beyond the sampling)."""
    reasons = []
    if residual > RESIDUAL_LIMIT[mode]:
        reasons.append(f"residual {residual:.3f} above {RESIDUAL_LIMIT[mode]}: the model does not explain the stack")
    if hit:
        reasons.append(f"{', '.join(hit)} at the bound of the search (a wrong pixel size or z-step?)")
    if wants_implausible_scale(mode, residual, free or {}):
        reasons.append(implausible_reason(free))
    ratio = (2 * na / (wavelength_nm * 1e-3)) / (1 / (2 * pixel_um))
    if ratio > UNDERSAMPLING_LIMIT:
        reasons.append(f"the fitted NA's cutoff is {ratio:.1f}x the pixel's Nyquist frequency: undersampled, "
                       "the NA is not determined (or the pixel size is wrong)")
    return ("poor" if reasons else "good"), reasons


def na_limit(refractive_index: float) -> float:
    return 0.98 * refractive_index


def pick_planes(plane: float, n_planes: int, dof_planes: float, n: int = 4) -> list:
    """Up to ``n`` plane indices to plot: the focus and 1, 2, 4 depths of field above it (or below)."""
    out = []
    for k in (0, 1, 2, 4):
        for sign in (1, -1):
            i = round(plane + sign * k * max(dof_planes, 1.0))
            if 0 <= i < n_planes and i not in out:
                out.append(i)
                break
    return sorted(out[:n])
