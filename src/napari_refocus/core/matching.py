"""How a defocus class of one objective reads on another: sampling scales and matched defocus.

DelpNet was trained on one objective (the ``reference``). Another objective's image is read at
the reference's sampling in lambda / NA (or at ``Optics.map_pixel_um``), and each class is
expressed as the defocus of the user's objective whose PSF has the same blur (encircled energy
in lambda / NA). Pure numpy on :mod:`napari_refocus.core.optics`.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .optics import MAP_PIXEL_AUTO, Optics, encircled_energy


def sampling_scale(reference: Optics, optics: Optics, *, tolerance: float = 0.01) -> float:
    """Pixels of ``optics`` per pixel of ``reference`` at equal size in lambda/NA
    (``reference.sampling / optics.sampling``); exactly 1.0 within ``tolerance`` (1 % is less
    than a pixel across an 84-px patch), so the reference's own images are never resampled."""
    return _snapped(reference.sampling / optics.sampling, tolerance)


def _snapped(scale: float, tolerance: float) -> float:
    return 1.0 if abs(scale - 1.0) < tolerance else float(scale)


def map_sampling_scale(reference: Optics, optics: Optics, *, tolerance: float = 0.01) -> float:
    """Pixels of ``optics`` per pixel of the defocus map made for ``reference``'s sampling:
    :func:`sampling_scale` (equal size in lambda/NA), or ``optics.map_pixel_um / optics.pixel_um``
    when the map's pixel size is given (exactly 1.0 within ``tolerance``)."""
    if optics.map_pixel_um is None:
        return sampling_scale(reference, optics, tolerance=tolerance)
    if optics.map_pixel_um == MAP_PIXEL_AUTO:  # an internal error: the entry points resolve it first
        raise ValueError("map_pixel_um='auto' is chosen per image (methods.map_choice) before the map's scale is known")
    return _snapped(optics.map_pixel_um / optics.pixel_um, tolerance)


def map_key(reference: Optics, optics: Optics) -> Optics:
    """``optics`` without a ``map_pixel_um`` that asks for the sampling lambda/NA gives anyway, so
    that equal maps share one cache entry and the training objective keeps its exact classes."""
    if optics.map_pixel_um is not None and map_sampling_scale(reference, optics) == sampling_scale(reference, optics):
        return dataclasses.replace(optics, map_pixel_um=None)
    return optics


@functools.lru_cache(maxsize=32)
def match_defocus_um(reference: Optics, target: Optics, *, n_candidates: int = 400) -> tuple:
    """The defocus (um) of ``target``'s objective whose blur matches each level of ``reference``.

    Blur is compared in units of lambda / NA, where the in-focus PSFs of all objectives agree:
    for each level of ``reference`` the target defocus whose encircled-energy curve is closest
    (mean absolute difference, out to twice the reference's PSF window: within the window alone
    the widest high-NA PSFs match badly) is chosen among ``n_candidates`` defocus values up to
    twice the depth-of-field-scaled top level. Cached per pair of optics. Returns
    ``reference.n_levels`` values, non-decreasing, 0 for level 0.
    """
    r_max = reference.psf_size * reference.sampling
    radii = np.linspace(0.0, r_max, 160)
    levels = np.array([reference.defocus_um(lv) for lv in range(reference.n_levels)])
    ref = encircled_energy(reference, levels, radii)
    z_top = 2.0 * levels[-1] * target.depth_of_field_um / reference.depth_of_field_um
    zs = np.linspace(0.0, max(z_top, 1e-3), n_candidates)
    cand = encircled_energy(target, zs, radii)
    dist = np.abs(ref[:, None, :] - cand[None, :, :]).mean(-1)
    best = zs[dist.argmin(1)]
    best[0] = 0.0
    return tuple(float(z) for z in np.maximum.accumulate(best))


def matched_optics(reference: Optics, optics: Optics, *, table=None) -> tuple[float, Optics]:
    """``(scale, matched)``: ``optics``' pixels per ``reference`` pixel (:func:`map_sampling_scale`:
    at equal size in lambda/NA unless ``optics.map_pixel_um`` says otherwise), and ``optics`` whose
    level ``L`` is the defocus with the blur of ``reference``'s level ``L`` (``table``, else
    :func:`match_defocus_um`, as ``defocus_table_um``), with a PSF window ``scale`` x the
    reference's. How a class of DelpNet (trained on ``reference``) reads on another objective;
    used by LB-DVD (with the table measured with DelpNet, :mod:`napari_refocus.methods.class_table`)
    and by DelpNet's training data (encircled energy)."""
    scale = map_sampling_scale(reference, optics)
    table = tuple(table) if table is not None else match_defocus_um(reference, optics)
    size = optics.psf_size
    if scale != 1.0:
        size = max(3, int(round(optics.psf_size * scale)))
        size += 1 - size % 2  # odd: the PSF is centred on a pixel
    return scale, dataclasses.replace(optics, defocus_table_um=table, n_levels=len(table), psf_size=size)

