"""Simulated calibration stacks (for tests and benchmarks): a bead, or a thin sample, scanned
through focus with the model of :mod:`.optics`, plus background, Poisson and read noise.

Computed independently of the fit's fast path: the PSF is point-sampled on a 5x finer grid
(the fit: 3x sub-pixels, a 6x radial grid), and the thin sample is blurred by FFT
convolution of a reflect-padded image (the fit works in the cosine-transform domain).
"""

from __future__ import annotations

import numpy as np

from .optics import Optics, radial_profile


def psf_image(optics: Optics, defocus_um: float, *, size: int, centre=None, oversample: int = 5) -> np.ndarray:
    """Pixel-integrated PSF (sum 1 over an infinite plane; here over ``size x size``) at a
    sub-pixel ``centre`` (y, x) in pixels (default: the middle pixel)."""
    c = ((size - 1) / 2, (size - 1) / 2) if centre is None else centre
    offs = (np.arange(oversample) + 0.5) / oversample - 0.5
    y = (np.arange(size)[:, None] + offs).ravel() - c[0]
    x = (np.arange(size)[:, None] + offs).ravel() - c[1]
    r = np.hypot(y[:, None], x[None, :]) * optics.pixel_um
    # the profile on a 1-D grid 20x finer than a pixel (the fit uses 6x), then interpolated
    fine = np.arange(0.0, r.max() + optics.pixel_um, optics.pixel_um / 20)
    img = np.interp(r, fine, radial_profile(fine, defocus_um, optics))
    img = img.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
    infocus = radial_profile(np.array([0.0]), 0.0, optics)[0]
    return img / (infocus if infocus > 0 else 1.0)


def bead_stack(optics: Optics, *, n_planes: int = 21, z_step_um: float, focal_plane: float = 10.0, size: int = 64,
               photons: float = 2e4, background: float = 100.0, read_noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """A bead ``(z, y, x)`` at a random sub-pixel position near the centre; ``photons`` is
    the in-focus peak in counts above ``background``. float32 counts."""
    rng = np.random.default_rng(seed)
    centre = (size / 2 + rng.uniform(-0.5, 0.5), size / 2 + rng.uniform(-0.5, 0.5))
    peak = psf_image(optics, 0.0, size=9, oversample=5).max()
    planes = [psf_image(optics, (i - focal_plane) * z_step_um, size=size, centre=centre) / peak * photons
              for i in range(n_planes)]
    clean = np.stack(planes) + background
    return (rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)).astype(np.float32)


def thin_stack(image, optics: Optics, *, n_planes: int = 21, z_step_um: float, focal_plane: float = 10.0,
               photons: float = 200.0, background: float = 10.0, read_noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """A thin sample ``image`` (its values scaled so its mean is ``photons`` counts) blurred by
    the PSF at each plane's distance (reflect padding, FFT), plus noise. float32 counts."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    img = np.asarray(image, dtype=np.float64)
    img = img / max(img.mean(), 1e-12) * photons
    out = []
    for i in range(n_planes):
        z = (i - focal_plane) * z_step_um
        reach = abs(z) * optics.defocus_scale * np.tan(np.arcsin(min(optics.na / optics.refractive_index, 0.999)))
        half = int(min(max(img.shape) - 1, np.ceil(reach / optics.pixel_um + 6 * optics.wavelength_nm * 1e-3
                                                          / optics.na / optics.pixel_um)))
        psf = psf_image(optics, z, size=2 * half + 1)
        psf /= psf.sum()
        padded = np.pad(img, half, mode="symmetric")
        out.append(fftconvolve(padded, psf, mode="same")[half:-half, half:-half])
    clean = np.clip(np.stack(out), 0, None) + background
    return (rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)).astype(np.float32)
