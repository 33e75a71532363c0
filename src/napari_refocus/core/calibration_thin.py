"""Calibration on a thin sample (cells on a coverslip) scanned through focus.

The sharpest plane ``f`` is the reference. For the optics being tried, plane ``i`` should be
the reference blurred from the defocus of ``f`` to the defocus of ``i``: in the frequency
domain ``D_i = a_i * H_i / H_f * D_f`` (+ an offset ``b_i``), with ``H`` the model's transfer
function at each plane's distance from the focal plane. The sample's own structure cancels
(it is in ``D_f`` and ``D_i`` alike); ``a_i`` and ``b_i`` (per-plane gain and offset: lamp
drift, bleaching, background) are solved in closed form for every trial.

Reflect-padded convolution with a centred, symmetric PSF is diagonal in the type-II discrete
cosine transform, so the stack is transformed once and each trial only needs the model's
transfer function on the DCT's frequencies: the cosine transform of a quarter of the
pixel-integrated PSF (it is symmetric in y and x).

The ratio ``H_i / H_f`` is regularised (``H_f / (H_f**2 + eps)``) where the reference passes
almost nothing. The residual is the RMS misfit of every plane but ``f`` over their RMS (both
without the mean, which the offset takes), so noise sets a floor that a good fit of a noisy
stack reaches and a wrong one exceeds.
"""

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

EPS = 1e-3


def sharpness(stack: np.ndarray) -> np.ndarray:
    """Per plane: variance of the Laplacian of the (sigma 1 px) smoothed plane over its mean
    squared (scale free, so a brighter plane does not win)."""
    from scipy.ndimage import gaussian_laplace

    out = []
    for p in np.asarray(stack, dtype=np.float64):
        m = p.mean()
        out.append(float(gaussian_laplace(p, 1.0).var() / (m * m if m > 0 else 1.0)))
    return np.asarray(out)


def noise_variance(spec: np.ndarray) -> float:
    """Variance of white noise in an orthonormal DCT: the median of the squared coefficients
    of the highest sixteenth of frequencies (beyond 3/4 of Nyquist in y and in x, where a
    microscope passes little), over the median of chi-square with one degree of freedom."""
    ny, nx = spec.shape
    corner = spec[(3 * ny) // 4:, (3 * nx) // 4:]
    return float(np.median(corner**2) / 0.4549)


def snr_weights(ref_spec: np.ndarray, noise: float, *, width: float = 2.0) -> np.ndarray:
    """Per DCT coefficient, the share of the reference plane's power that is signal
    (``S / (S + N)``, with ``S`` its radially averaged power less the noise): frequencies
    where the reference holds only noise weigh nothing."""
    ny, nx = ref_spec.shape
    k = np.hypot(*np.meshgrid(np.arange(ny) / ny, np.arange(nx) / nx, indexing="ij")) * min(ny, nx) / width
    bins = k.astype(np.int64)
    power = np.bincount(bins.ravel(), (ref_spec**2).ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    signal = np.clip(power - noise, 0.0, None)[bins]
    w = signal / (signal + max(noise, 1e-300))
    w[0, 0] = 0.0
    return w


def _cosines(n: int, r: int) -> np.ndarray:
    """``(n, r + 1)``: the cosine transform of a symmetric kernel's half ``0..r`` on the
    ``n`` DCT-II frequencies (the folded negative half doubles every tap but the centre)."""
    k = np.arange(n)[:, None]
    m = np.arange(r + 1)[None, :]
    c = np.cos(np.pi * k * m / n)
    c[:, 1:] *= 2.0
    return c


class ThinModel:
    """The transfer functions of a trial optics on the DCT grid of an ``(ny, nx)`` plane.

    The PSF window reaches as far as the widest trial blur (rounded up to 16 px, cached per
    reach): a low-NA fit never pays for a window as wide as the image."""

    def __init__(self, shape, *, pixel_um: float):
        self.shape = tuple(shape)
        self.r_max = (min(shape) - 1) // 2
        self.pixel_um = pixel_um
        self._parts: dict = {}

    def _window(self, r: int):
        if r not in self._parts:
            q = r + 1
            r_sub, pix = subpixel_radii((q, q), (0.0, 0.0))
            fine = fine_radii_px(float(r_sub.max()))
            self._parts[r] = (fine, interpolation_matrix(r_sub, fine, pix, q * q),
                              _cosines(self.shape[0], r), _cosines(self.shape[1], r).T.copy())
        return self._parts[r]

    def reach_px(self, optics: Optics, z_max_um: float) -> int:
        """Window radius: the geometric blur radius at ``z_max_um`` plus 8 Airy radii."""
        sin = min(optics.na / optics.refractive_index, 0.999)
        geometric = z_max_um * optics.defocus_scale * sin / np.sqrt(1 - sin * sin)
        r = (geometric + 8 * 0.61 * optics.wavelength_nm * 1e-3 / optics.na) / self.pixel_um
        return int(min(self.r_max, 16 * np.ceil((r + 2) / 16)))

    def transfer(self, optics: Optics, zs_um: np.ndarray) -> np.ndarray:
        """``(len(zs), ny, nx)`` transfer functions, 1 at zero frequency."""
        r = self.reach_px(optics, float(np.abs(zs_um).max()))
        fine, to_pixels, cy, cxt = self._window(r)
        prof = profiles_px(optics, fine, zs_um)  # (z, fine)
        quarter = (to_pixels @ prof.T).T.reshape(len(zs_um), r + 1, r + 1)
        h = cy @ (quarter @ cxt)
        return h / h[:, :1, :1]


def iter_fit_thin(stack, *, z_step_um: float, pixel_um: float, wavelength_nm: float, refractive_index: float,
                  psf_model: str = "exact", reference: int | None = None, max_iter: int = 300):
    """Fit NA, defocus scale and focal plane to a thin sample's stack ``(z, y, x)`` (see the
    module docstring). Yields :class:`Progress`; returns a :class:`Calibration`."""
    from scipy.fft import dctn

    t0 = time.perf_counter()
    data = np.asarray(stack, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] < 3 or min(data.shape[1:]) < 16:
        raise ValueError(f"a thin-sample stack must be (z, y, x) with >= 3 planes of >= 16 px, got {data.shape}")
    yield Progress(0, 1, "thin sample: sharpest plane and cosine transforms")
    scores = sharpness(data)
    f = int(np.argmax(scores)) if reference is None else int(reference)
    spec = np.stack([dctn(p, type=2, norm="ortho") for p in data])
    spec[:, 0, 0] = 0.0  # the mean: the per-plane offset takes it
    others = np.array([i for i in range(data.shape[0]) if i != f])
    noise = np.array([noise_variance(p) for p in spec])
    weight = snr_weights(spec[f], noise[f])
    energy = (weight * spec[others] ** 2).sum(axis=(1, 2))
    denom = float(np.maximum(energy - noise[others] * weight.sum(), 1e-12 * energy).sum())
    planes = np.arange(data.shape[0], dtype=np.float64)
    model = ThinModel(data.shape[1:], pixel_um=pixel_um)
    optics_of = {"wavelength_nm": wavelength_nm, "refractive_index": refractive_index, "pixel_um": pixel_um,
                     "psf_model": psf_model}
    ref = spec[f]

    def predict(na, scale, plane):
        h = model.transfer(model_optics(na, scale, **optics_of), (planes - plane) * z_step_um)
        hf = h[f]
        ratio = h[others] * (hf / (hf * hf + EPS))
        pred = ratio * ref  # (others, y, x)
        wp = weight * pred
        pp = (wp * pred).sum(axis=(1, 2))
        pd = (wp * spec[others]).sum(axis=(1, 2))
        gain = np.where(pp > 0, pd / np.where(pp > 0, pp, 1.0), 0.0)
        # what the noise of plane i and of the reference (through the model) leave unexplained
        floor = noise[others] * weight.sum() + gain**2 * noise[f] * (weight * ratio * ratio).sum(axis=(1, 2))
        return pred, gain, energy - gain * pd - floor

    def loss(na, scale, plane):
        return float(predict(na, scale, plane)[2].sum() / denom)

    na_max = na_limit(refractive_index)
    (na, scale, plane), fun, n = yield from iter_search(loss, n_planes=data.shape[0], na_max=na_max,
                                                        start_plane=float(f), stage="thin-sample fit",
                                                        max_iter=max_iter)
    free = free_record(*(yield from iter_free_scale(loss, (na, scale, plane), n_planes=data.shape[0],
                                                    na_max=na_max, stage="thin-sample fit")))
    pred, gain, rss = predict(na, scale, plane)
    residual = float(np.sqrt(max(fun, 0.0)))
    hit = bounds_hit(na, scale, plane, na_max=na_max, n_planes=data.shape[0])
    dof = Optics(na=na, wavelength_nm=wavelength_nm, refractive_index=refractive_index).depth_of_field_um
    show = [i for i in pick_planes(plane, data.shape[0], dof / (scale * z_step_um)) if i != f][:3]
    curves = _spectra(spec, pred * gain[:, None, None], others, show, pixel_um)
    quality, reasons = judge(residual, "thin", hit, na=na, wavelength_nm=wavelength_nm, pixel_um=pixel_um,
                             free=free)
    return Calibration(mode="thin", na=na, defocus_scale=scale, focal_plane_index=plane, z_step_um=z_step_um,
                       pixel_um=pixel_um, wavelength_nm=wavelength_nm, refractive_index=refractive_index,
                       psf_model=psf_model, residual=residual, quality=quality, at_bound=hit, reasons=reasons, evaluations=n,
                       free_scale_fit=free,
                       seconds=round(time.perf_counter() - t0, 2), curves=curves,
                       extra={"reference_plane": f, "sharpness": scores.tolist(), "plane_gains": gain.tolist(),
                              "plane_residuals": np.sqrt(np.clip(rss, 0, None) / np.maximum(energy, 1e-300)).tolist()})


def _spectra(spec, fitted, others, show, pixel_um, n_bins: int = 32) -> dict:
    """Radially averaged amplitude spectra, measured vs model, of the planes ``show``."""
    ny, nx = spec.shape[1:]
    fy = np.arange(ny)[:, None] / (2 * ny * pixel_um)
    fx = np.arange(nx)[None, :] / (2 * nx * pixel_um)
    freq = np.hypot(fy, fx)
    top = min(fy.max(), fx.max())
    bins = np.minimum((freq / top * n_bins).astype(int), n_bins)
    valid = (bins < n_bins).ravel()
    b = bins.ravel()[valid]
    counts = np.maximum(np.bincount(b, minlength=n_bins), 1)
    index = {int(i): k for k, i in enumerate(others)}

    def radial(a):
        return (np.bincount(b, np.abs(a).ravel()[valid], minlength=n_bins) / counts).tolist()

    return {"x": ((np.arange(n_bins) + 0.5) * top / n_bins).tolist(), "x_label": "spatial frequency (cycles/µm)",
            "planes": list(show), "measured": [radial(spec[i]) for i in show],
            "model": [radial(fitted[index[i]]) for i in show], "log_y": True}
