"""Cells at their physical size on a high-NA camera, for the map pixel tests: the shipped in-focus
field upscaled, blurred by the library's forward model, and how DelpNet's map reads it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import napari_refocus as nr


def physical_image(optics, *, upscale: int, z_um: float, crop=(slice(None), slice(None))) -> np.ndarray:
    """The shipped in-focus field (``crop`` of it) upscaled ``upscale`` x (cubic) and blurred
    ``z_um`` from focus with ``optics`` (a PSF window as wide as that defocus blurs, 3x3 samples a
    pixel), Poisson noise (seed 0), as uint16."""
    from skimage.transform import resize

    from napari_refocus.io.samples import infocus_image

    gt = infocus_image().astype(np.float32)[crop]
    big = resize(gt, (gt.shape[0] * upscale, gt.shape[1] * upscale), order=3, preserve_range=True)
    reach = z_um * math.tan(math.asin(optics.na / optics.refractive_index)) / optics.pixel_um
    sim = dataclasses.replace(optics, map_pixel_um=None, level_step_um=z_um, n_levels=2,
                              psf_size=2 * int(reach + 12) + 1, oversample=3)
    clean = nr.simulate(big.astype(np.float32), level=1, noise=None, optics=sim)
    return np.clip(np.random.default_rng(0).poisson(clean), 0, 65535).astype(np.uint16)


def within_one(image, optics, z_um: float):
    """``(share of non-background patches within one class of the truth, the map)``: the truth is
    the class whose defocus for ``optics`` is nearest ``z_um``."""
    dm = nr.defocus_map(image, optics=optics, beyond_top=False, device="cpu")
    truth = int(np.argmin(np.abs(np.asarray(dm.defocus_um) - z_um)))
    fg = dm.levels != 11
    return float((np.abs(dm.levels[fg] - truth) <= 1).mean()), dm
