"""Depth-variant point spread functions of a wide-field microscope (scalar, Born & Wolf).

Two models, chosen by :attr:`Optics.psf_model`:

``"paraxial"`` - LB-DVD eq. 2 exactly as printed::

    h(r; z) = | int_0^1 J0(k NA/n r rho) exp(-1/2 j k rho^2 z NA^2/n^2) rho d rho |^2,  k = 2 pi / lambda

  It comes from the Born & Wolf model in which k is the wavenumber *in the medium*
  (2 pi n / lambda); with the vacuum k as printed it is right only for n = 1 (the paper's air
  objective): with oil the in-focus PSF comes out about n times too wide. Kept (as
  ``psf_model="paraxial"``) to reproduce the paper bit for bit.

``"exact"`` (the default) - the scalar model with the medium's wavenumber and the non-paraxial defocus phase::

    h(r; z) = | int_0^1 J0(k0 NA r rho) exp(j k0 z (sqrt(n^2 - NA^2 rho^2) - n)) rho d rho |^2,  k0 = 2 pi / lambda

  (no apodisation, as psf-generator's scalar propagator by default). Right for any immersion
  and NA; at NA 0.5 in air its blur is 6-9 % wider than eq. 2's, at NA 1.4 in oil about 1.5x.

Units: wavelength in nm, pixel size and defocus in um. Level ``L`` means a defocus of
``L * level_step_um`` (level 0 = in focus). PSF arrays are indexed ``[level, y, x]``,
centred on the middle pixel, and each sums to 1 (pixel-integrated, not point-sampled).
"""

from __future__ import annotations

import dataclasses

import functools
import numbers
from dataclasses import asdict, dataclass

import numpy as np

N_LEVELS = 11
PSF_MODELS = ("paraxial", "exact")
#: Class index that DelpNet and level maps use for "background" (no deconvolution).
BACKGROUND = 11


#: ``Optics.map_pixel_um`` chosen per image from the two readings (methods.map_choice)
MAP_PIXEL_AUTO = "auto"


@dataclass(frozen=True)
class Optics:
    """Optical settings of a wide-field microscope (defaults: LB-DVD paper, BBBC006).

    ``pixel_um`` is the size of one image pixel in the sample plane; 0.65 um is the usual
    reading of BBBC006 (20x, 2x binning), which the paper does not state.
    ``psf_size`` is the side of the square PSF window in pixels (odd); 37 keeps 98.6 % of
    the level-10 energy and lets an 110x110 patch be convolved in a 128x128 FFT.
    """

    wavelength_nm: float = 451.0
    na: float = 0.5
    refractive_index: float = 1.0
    pixel_um: float = 0.65
    level_step_um: float = 2.0
    n_levels: int = N_LEVELS
    psf_size: int = 37
    oversample: int = 5
    #: "exact" (any immersion; the default) or "paraxial" (LB-DVD eq. 2 as printed, right only
    #: in air; reproduces the paper and the data of DelpNet weights before 2026-12-03)
    psf_model: str = "exact"
    #: defocus (um) of each level, when levels are not ``level * level_step_um`` apart (a
    #: DelpNet class expressed for another objective: :func:`match_defocus_um`)
    defocus_table_um: tuple | None = None
    #: the model blurs a plane ``z`` um from focus as the ideal objective blurs one
    #: ``defocus_scale * z`` um away (a calibrated objective's effective defocus, ``calibrate``);
    #: 1.0 = the nominal distances
    defocus_scale: float = 1.0
    #: the pixel size (um) at which the defocus map reads the image. None (default): matched to
    #: DelpNet's training sampling in lambda / NA. DelpNet also reads the objects' size in its pixels:
    #: 0.65 puts cultured cells at the physical size of its training images (BBBC006, 20x), better
    #: for such cells imaged at 40x-100x (benchmarks/object_scale.py). "auto" (:data:`MAP_PIXEL_AUTO`):
    #: each image is read both ways and the reading DelpNet is surer of is kept (methods.map_choice)
    map_pixel_um: float | str | None = None

    def __post_init__(self):
        if self.psf_model not in PSF_MODELS:
            raise ValueError(f"psf_model must be one of {', '.join(PSF_MODELS)}, got {self.psf_model!r}")
        for name in ("wavelength_nm", "na", "refractive_index", "pixel_um", "level_step_um", "defocus_scale",
                     "map_pixel_um"):
            value = getattr(self, name)
            if name == "map_pixel_um" and (value is None or value == MAP_PIXEL_AUTO):  # optional, or chosen
                continue  # per image (None: the map's sampling matched in lambda/NA)
            if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.na >= self.refractive_index:
            raise ValueError(
                f"na ({self.na}) must be smaller than refractive_index ({self.refractive_index})"
            )
        if self.psf_size < 3 or self.psf_size % 2 == 0:
            raise ValueError(f"psf_size must be an odd integer >= 3, got {self.psf_size}")
        if self.n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {self.n_levels}")
        if self.oversample < 1 or self.oversample % 2 == 0:
            raise ValueError(f"oversample must be an odd integer >= 1, got {self.oversample}")
        if self.defocus_table_um is not None:
            table = tuple(float(z) for z in self.defocus_table_um)
            if len(table) != self.n_levels or not all(np.isfinite(z) and z >= 0 for z in table):
                raise ValueError(f"defocus_table_um must hold {self.n_levels} defocus values >= 0, "
                                 f"got {self.defocus_table_um!r}")
            object.__setattr__(self, "defocus_table_um", table)

    def as_dict(self) -> dict:
        """Plain-dict form (for provenance metadata)."""
        return asdict(self)

    def defocus_um(self, level: float) -> float:
        """Defocus distance in um of a (possibly fractional) level."""
        if self.defocus_table_um is not None:
            table = self.defocus_table_um
            return float(np.interp(level, np.arange(len(table)), table))
        return float(level) * self.level_step_um

    @property
    def sampling(self) -> float:
        """Pixel size in units of lambda / NA: what makes two objectives' images look alike."""
        return self.pixel_um * self.na / (self.wavelength_nm * 1e-3)

    @property
    def depth_of_field_um(self) -> float:
        """Wave-optical depth of field, lambda n / NA^2 (um): the defocus scale of this objective."""
        return self.wavelength_nm * 1e-3 * self.refractive_index / self.na**2


def radial_profile(r_um: np.ndarray, defocus_um: float, optics: Optics, n_nodes: int | None = None):
    """Intensity ``h(r; z)`` of ``optics.psf_model`` at radii ``r_um`` (um), defocus ``z`` (um).

    Not normalised. The integral over the pupil radius ``rho`` is done by Gauss-Legendre
    quadrature with enough nodes for the fastest oscillation of the integrand. ``defocus_um``
    is the nominal distance: the model is evaluated at ``optics.defocus_scale`` times it.
    """
    from scipy.special import j0

    defocus_um = defocus_um * optics.defocus_scale
    r_um = np.asarray(r_um, dtype=np.float64)
    r_max = float(r_um.max()) if r_um.size else 0.0
    k0 = 2 * np.pi / (optics.wavelength_nm * 1e-3)  # 1/um, in vacuum
    na, n = optics.na, optics.refractive_index
    if optics.psf_model == "paraxial":
        a = k0 * na / n
        phase = 0.5 * k0 * defocus_um * na**2 / n**2
        # The integrand oscillates at most (a * r_max + 2 * phase) / pi times over [0, 1];
        # 8 nodes per half-oscillation is far beyond Gauss-Legendre's needs.
        span = a * r_max + 2 * abs(phase)
    else:
        a = k0 * na
        # steepest slope of the defocus phase, at the pupil's edge
        span = a * r_max + k0 * abs(defocus_um) * na**2 / np.sqrt(n**2 - na**2)
    if n_nodes is None:
        cap = 4000 if optics.psf_model == "paraxial" else 20000  # paraxial: as it always was
        n_nodes = int(min(cap, max(64, 8 * span / np.pi)))
    x, w = _gauss_legendre(n_nodes)
    rho = 0.5 * (x + 1.0)
    w = 0.5 * w
    flat = r_um.reshape(-1, 1)
    if optics.psf_model == "paraxial":
        pupil = np.exp(-1j * phase * rho**2)
    else:
        pupil = np.exp(1j * k0 * defocus_um * (np.sqrt(n**2 - (na * rho) ** 2) - n))
    # a block of radii at a time: a wide, finely sampled high-NA PSF has ~1e5 distinct radii,
    # and the whole (radii x nodes) matrix would take tens of GB
    from .progress import check_cancelled

    step = max(1, int(2**20 // max(1, n_nodes)))  # ~0.1 s of Bessel functions a block
    parts = []
    for i in range(0, len(flat), step):
        check_cancelled()  # a wide, strongly defocused PSF takes ~1 s: a Cancel between blocks
        parts.append((j0(a * flat[i:i + step] * rho) * pupil * rho) @ w)
    amp = np.concatenate(parts) if parts else np.zeros(0, complex)
    return (np.abs(amp) ** 2).reshape(r_um.shape)


def _sample_radii(size: int, oversample: int, pixel_um: float) -> np.ndarray:
    """Distances (um) from the centre of a ``size`` x ``size`` PSF window of the
    ``oversample`` x ``oversample`` sub-pixel samples of each pixel (the window's shape x oversample)."""
    coords = (np.arange(size * oversample) - (size * oversample - 1) / 2) / oversample * pixel_um
    return np.hypot(coords[:, None], coords[None, :])


def _pixel_integrated(samples: np.ndarray, size: int, oversample: int) -> np.ndarray:
    """The sub-pixel ``samples`` averaged over each pixel, normalised to sum 1."""
    img = samples.reshape(size, oversample, size, oversample).mean(axis=(1, 3))
    return img / img.sum()


def _psf(optics: Optics, level: float) -> np.ndarray:
    size, s = optics.psf_size, optics.oversample
    # Sub-pixel sample positions, so a pixel integrates the PSF instead of point-sampling it
    # (the in-focus Airy core, 0.55 um, is smaller than a 0.65 um pixel).
    r = _sample_radii(size, s, optics.pixel_um)
    # exact values at the (few thousand, by symmetry) distinct radii; interpolating the
    # profile would blur its rings, which are only ~lambda/NA = 0.9 um apart
    radii, inverse = np.unique(np.round(r, 9), return_inverse=True)
    profile = radial_profile(radii, optics.defocus_um(level), optics)
    return _pixel_integrated(profile[inverse].reshape(r.shape), size, s)


@functools.lru_cache(maxsize=16)
def _cached_bank(optics: Optics) -> np.ndarray:
    bank = np.stack([level_psf(optics, level) for level in range(optics.n_levels)])
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=256)
def level_psf(optics: Optics, level: int) -> np.ndarray:
    """The bank's PSF of one level (float32, read-only, cached on its own): a deconvolution that
    needs a few levels of a wide bank computes only those (lbdvd's pass beyond the top class:
    levels 6-10 of 75-px PSFs, ~1 s each)."""
    from .progress import check_cancelled

    check_cancelled()  # a Cancel between two PSFs, not after the whole bank
    psf = _psf(optics, level).astype(np.float32)
    psf.setflags(write=False)
    return psf


def resolve_optics(optics: Optics | None = None, **kwargs) -> Optics:
    """An :class:`Optics` from an instance and/or keyword overrides; an unknown keyword is a
    ``ValueError`` naming the valid ones (not the dataclass's ``TypeError``)."""
    valid = [f.name for f in dataclasses.fields(Optics)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown optics parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if optics is None:
        return Optics(**kwargs)
    if kwargs:
        return Optics(**{**optics.as_dict(), **kwargs})
    return optics


def psf_bank(
    *,
    wavelength_nm: float = 451.0,
    na: float = 0.5,
    refractive_index: float = 1.0,
    pixel_um: float = 0.65,
    level_step_um: float = 2.0,
    n_levels: int = N_LEVELS,
    psf_size: int = 37,
    oversample: int = 5,
    psf_model: str = "exact",
) -> np.ndarray:
    """Depth-variant PSFs for defocus levels ``0 .. n_levels-1``.

    Returns a read-only float32 array of shape ``(n_levels, psf_size, psf_size)``
    (axes: level, y, x); each PSF is centred and sums to 1. Banks are cached per optics.
    """
    optics = Optics(
        wavelength_nm=wavelength_nm,
        na=na,
        refractive_index=refractive_index,
        pixel_um=pixel_um,
        level_step_um=level_step_um,
        n_levels=n_levels,
        psf_size=psf_size,
        oversample=oversample,
        psf_model=psf_model,
    )
    return _cached_bank(optics)


def bank_for(optics: Optics) -> np.ndarray:
    """The cached PSF bank for an :class:`Optics` instance."""
    return _cached_bank(optics)


def fwhm_px(psf: np.ndarray) -> float:
    """Width of a 2-D PSF: diameter (px) of the area above half its maximum."""
    area = float((psf >= 0.5 * psf.max()).sum())
    return 2.0 * np.sqrt(area / np.pi)


def rms_radius_px(psf: np.ndarray) -> float:
    """Root-mean-square radius of a 2-D PSF in pixels (robust width measure)."""
    size = psf.shape[-1]
    c = np.arange(size) - (size - 1) / 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    return float(np.sqrt((psf * r2).sum() / psf.sum()))


@functools.lru_cache(maxsize=64)
def _leggauss(n: int):
    """numpy's Gauss-Legendre nodes and weights (read-only; cached: a bank's levels often share n)."""
    x, w = np.polynomial.legendre.leggauss(n)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def _gauss_legendre(n: int):
    """Gauss-Legendre nodes and weights on [-1, 1]. numpy's (the bank's numbers since the start)
    up to 2000 nodes; above, scipy's asymptotic ones (the same to 1e-10): numpy solves a dense
    n x n eigenproblem, minutes and gigabytes at the 20000 nodes of a PSF tens of pixels wide
    at a coarse pixel size."""
    if n <= 2000:
        from .progress import call_cancellable

        # the dense solve takes ~0.4 s at 2000 nodes here, several seconds on a loaded CPU,
        # with no checkpoint inside: waited for in a way that Cancel can interrupt
        return _leggauss(n) if n < 256 else call_cancellable(_leggauss, n)
    from scipy.special import roots_legendre

    return roots_legendre(n)


def _profiles(optics: Optics, r_um: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """``h(r; z)`` of ``optics`` for many (nominal) defocus values at once: ``(len(zs), len(r_um))``."""
    from scipy.special import j0

    zs = np.asarray(zs, dtype=np.float64) * optics.defocus_scale

    k0 = 2 * np.pi / (optics.wavelength_nm * 1e-3)
    na, n = optics.na, optics.refractive_index
    z_max = float(np.max(np.abs(zs))) if len(zs) else 0.0
    if optics.psf_model == "paraxial":
        a, span = k0 * na / n, k0 * na / n * r_um.max() + k0 * z_max * na**2 / n**2
    else:
        a, span = k0 * na, k0 * na * r_um.max() + k0 * z_max * na**2 / np.sqrt(n**2 - na**2)
    x, w = _gauss_legendre(int(min(20000, max(64, 8 * span / np.pi))))
    rho, w = 0.5 * (x + 1.0), 0.5 * w
    if optics.psf_model == "paraxial":
        phase = -0.5 * k0 * np.outer(zs, rho**2) * na**2 / n**2
    else:
        phase = k0 * np.outer(zs, np.sqrt(n**2 - (na * rho) ** 2) - n)
    bessel = j0(a * np.outer(r_um, rho)) * (rho * w)  # (radii, nodes): the same for every z
    amp = np.exp(1j * phase) @ bessel.T
    return np.abs(amp) ** 2


def psf_stack(optics: Optics, defocus_um, *, size: int, oversample: int = 3) -> np.ndarray:
    """PSFs of ``optics`` at many (nominal) defocus values at once: ``(len(defocus_um), size,
    size)`` float32, each centred on the middle pixel, pixel-integrated (``oversample`` x
    ``oversample`` samples a pixel) and summing to 1.

    The profile of every defocus comes from one quadrature (:func:`_profiles`) on a radial grid
    of 1/50 pixel, interpolated linearly onto the samples: for work that needs tens of defocus
    values (:mod:`napari_refocus.methods.class_table`) at a fraction of :func:`psf_bank`'s cost,
    which evaluates every distinct radius exactly."""
    zs = np.atleast_1d(np.asarray(defocus_um, dtype=np.float64))
    r = _sample_radii(size, oversample, optics.pixel_um)
    step = optics.pixel_um / 50
    radii = np.arange(0.0, r.max() + 2 * step, step)
    profiles = _profiles(optics, radii, zs)
    out = np.empty((len(zs), size, size), np.float32)
    for i, profile in enumerate(profiles):
        out[i] = _pixel_integrated(np.interp(r, radii, profile), size, oversample)
    return out


def encircled_energy(optics: Optics, defocus_um, radii: np.ndarray) -> np.ndarray:
    """Fraction of the PSF's energy within each radius (in units of lambda / NA), up to the
    last radius (continuous profile, not pixel-integrated). ``defocus_um``: a value or an
    array (then one curve per row)."""
    r_um = np.asarray(radii, dtype=np.float64) * optics.wavelength_nm * 1e-3 / optics.na
    zs = np.atleast_1d(np.asarray(defocus_um, dtype=np.float64))
    h = _profiles(optics, r_um, zs) * r_um
    e = np.concatenate([np.zeros((len(zs), 1)), np.cumsum(0.5 * (h[:, 1:] + h[:, :-1]) * np.diff(r_um), -1)], -1)
    e = e / np.where(e[:, -1:] > 0, e[:, -1:], 1.0)
    return e if np.ndim(defocus_um) else e[0]
