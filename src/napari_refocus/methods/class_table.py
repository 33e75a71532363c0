"""Each DelpNet class as a defocus of the user's objective, read off the network itself.

DelpNet's classes are the blur of one objective (:data:`.defocus.CANONICAL`: class ``L`` is
``2 L`` um of defocus there). For any other objective, class ``L`` has to become the defocus of
*that* objective at which DelpNet answers ``L``. Matching PSFs by a number computed from them
(encircled energy in lambda / NA, :func:`~napari_refocus.core.optics.match_defocus_um`) is right
near focus but not at high NA: there a defocused PSF keeps a compact core and spreads a faint,
wide halo; encircled energy counts the halo, DelpNet (84-pixel patches) reads the core. Measured
on held-out fields (BENCHMARKS.md, "Other objectives and exposures"), it read the matched
class-6..10 blur of a 40x/0.95 and a 60x/1.4 oil objective as class 4-5.

So the table is measured with DelpNet itself, once per objective:

1. the shipped reference field (the in-focus BBBC006 sample, which *is* at the canonical
   sampling) is blurred with the objective's PSF drawn at the canonical sampling (what the map
   sees of an image of this objective after resampling it), at many defocus values, with
   Poisson noise at the field's own counts per native pixel, averaged as resampling averages
   it (fixed seed);
2. each blurred field goes through the map's own steps (canonical intensity scale, background
   rule, DelpNet) on its non-overlapping 84x84 patches;
3. the mean class of the non-background patches is a rising curve of the defocus; class ``L``
   is where it first reaches ``L`` (the top class: where it reaches :data:`TOP_SCORE`, since a
   field at the top class's blur scores below 10 when a few patches read 9).

On the training objective itself this gives ``2 L`` um within :data:`SELF_TOLERANCE_UM`
(``tests/test_class_table.py``): that is how the procedure is checked. Cost: about 50 blurred
fields and 2,500 DelpNet patches, a few seconds on a CPU, once per objective and process.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from ..core.optics import Optics, psf_stack, sampling_scale
from ..core.progress import check_cancelled

logger = logging.getLogger(__name__)

#: PSF window (canonical pixels): twice the training PSFs' 37, so the halo of a high-NA PSF is in
WINDOW = 75
#: the top class is where the mean class reaches this
TOP_SCORE = 9.75
#: defocus values: a coarse pass to find where the top class is reached, then a fine one below it
COARSE, FINE = 16, 40
#: the coarse pass's defocus range ends where the mean class first reaches this
COVER_SCORE = 9.9
#: how far the table of the training objective may lie from 2 L um (tests)
SELF_TOLERANCE_UM = 0.6
#: Optics fields that do not change the PSF's shape in lambda / NA (the bank's size and levels):
#: objectives differing only in them share one table
SHAPE_FREE = ("level_step_um", "n_levels", "psf_size", "oversample", "defocus_table_um")


@functools.lru_cache(maxsize=1)
def reference_field() -> np.ndarray:
    """The in-focus reference field (float32 counts, canonical sampling)."""
    import tifffile

    from ..core.resources import INFOCUS_SAMPLE, data_dir

    return tifffile.imread(data_dir() / INFOCUS_SAMPLE).astype(np.float32)


def response_curve(optics: Optics, defocus_um, *, seed: int = 0) -> np.ndarray:
    """DelpNet's mean class (non-background patches) of the reference field blurred by
    ``optics``' PSF at each of ``defocus_um`` (um, nominal), drawn at DelpNet's sampling."""
    import torch

    from ..models.delpnet import mean_softmax
    from ..core.optics import BACKGROUND
    from .canonical import CANONICAL, SCALE, background_rule, canonical_image, delpnet

    scale = sampling_scale(CANONICAL, optics)
    canon = dataclasses.replace(optics, pixel_um=optics.pixel_um * scale)
    # shot noise as an image of this objective has it once resampled to DelpNet's sampling:
    # drawn per native pixel, then averaged over scale^2 of them (on 60x/1.4 oil, with the noise
    # of a canonical pixel instead, classes 6, 8, 10 came at 2.27, 3.41, 4.95 um, 13-24 % short
    # of where the map put the same field blurred at the native sampling, ~2.95, ~4.5, ~5.7 um:
    # this session's ad-hoc diagnostics, BENCHMARKS.md "Other objectives and exposures")
    photons = scale * scale
    psfs = torch.from_numpy(psf_stack(canon, defocus_um, size=WINDOW))
    field = reference_field()
    h, w = field.shape
    frame = (h + WINDOW, w + WINDOW)
    spectrum = torch.fft.rfft2(torch.from_numpy(np.pad(field, ((0, WINDOW), (0, WINDOW)), mode="reflect")))
    gen = torch.Generator().manual_seed(seed)
    model = delpnet(None, torch.device("cpu"))
    rows, cols = h // 84, w // 84
    out = np.zeros(len(psfs))
    for i, psf in enumerate(psfs):
        check_cancelled()  # a job's Cancel works here too (a few seconds in all)
        kernel = torch.zeros(frame)
        kernel[:WINDOW, :WINDOW] = psf
        kernel = torch.roll(kernel, (-(WINDOW // 2), -(WINDOW // 2)), (0, 1))  # centred at (0, 0)
        blurred = torch.fft.irfft2(spectrum * torch.fft.rfft2(kernel), s=frame)[:h, :w].clamp_min(0)
        counts = (torch.poisson(blurred.double() * photons, generator=gen) / photons).float().numpy()
        img, stats = canonical_image(counts, 1.0)
        patches = torch.from_numpy(np.ascontiguousarray(
            img[:rows * 84, :cols * 84].reshape(rows, 84, cols, 84).transpose(0, 2, 1, 3).reshape(-1, 84, 84)))
        with torch.inference_mode():
            classes = mean_softmax(model, patches / SCALE, torch.device("cpu"), False).numpy().argmax(-1)
        keep = (classes != BACKGROUND) & ~background_rule(patches, stats[2])
        out[i] = classes[keep].mean() if keep.any() else np.nan
    return out


def _first_reach(curve: np.ndarray, zs: np.ndarray, value: float) -> float:
    """The defocus where the rising ``curve`` first reaches ``value`` (linear between samples;
    the last defocus if it never does)."""
    above = np.flatnonzero(curve >= value)
    if not len(above):
        return float(zs[-1])
    i = int(above[0])
    if i == 0:
        return float(zs[0])
    c0, c1 = curve[i - 1], curve[i]
    return float(zs[i - 1] + (zs[i] - zs[i - 1]) * (value - c0) / (c1 - c0))


#: tables already measured by :func:`response_table` with the shipped weights (SHA-256), so the
#: default objective's everyday runs do not measure it again; tests/test_class_table.py re-measures
#: it and must find the same values. Measured with the float32 network; the opt-in int8 one
#: (``NAPARI_REFOCUS_INT8``) uses it too (it reads held-out patches as float32 does within noise)
KNOWN = {
    Optics(): ("f29448b24bba411b594e6795b17cfa60098ddd1de40d98d7a735fc1fe2cd1a56",
               (0.0, 1.7299654343024566, 3.595566098779404, 5.55745065207229, 7.576267752822559,
                9.61266605967166, 11.627294231261038, 13.580800926232138, 15.43383480322641,
                17.147044520885302, 18.681078737850253)),
}


def response_table(optics: Optics) -> tuple:
    """The defocus (um) of ``optics``' objective that the shipped DelpNet reads as each class
    0..10 (see the module doc); non-decreasing, 0 for class 0. Cached per objective (the fields
    that do not change the PSF's shape in lambda / NA, such as the bank's size, do not count)."""
    default = Optics()
    key = dataclasses.replace(optics, **{name: getattr(default, name) for name in SHAPE_FREE})
    if key in KNOWN:
        import torch

        from .canonical import delpnet

        sha, table = KNOWN[key]
        if getattr(delpnet(None, torch.device("cpu")), "sha256", "") == sha:
            return table
    return _table(key)


@functools.lru_cache(maxsize=32)
def _table(optics: Optics) -> tuple:
    from .canonical import CANONICAL, N_CLASSES

    logger.info("measuring DelpNet's classes in um for NA %s, n %s, %s nm, %s um pixels, %s PSF (once per "
                "objective)", optics.na, optics.refractive_index, optics.wavelength_nm, optics.pixel_um,
                optics.psf_model)
    # where the top class should be if blur grew like the depth of field (lambda n / NA^2)
    guess = 2.0 * (N_CLASSES - 2) * optics.depth_of_field_um / CANONICAL.depth_of_field_um
    coarse = np.linspace(0.0, 3.0 * guess, COARSE)
    curve = np.fmax.accumulate(np.nan_to_num(response_curve(optics, coarse), nan=0.0))
    covered = np.flatnonzero(curve >= COVER_SCORE)
    zs = np.linspace(0.0, coarse[covered[0]] if len(covered) else coarse[-1], FINE)
    curve = np.fmax.accumulate(np.nan_to_num(response_curve(optics, zs), nan=0.0))
    levels = np.arange(1, N_CLASSES - 1, dtype=np.float64)
    reached = np.array([_first_reach(curve, zs, lv) for lv in levels[:-1]] + [_first_reach(curve, zs, TOP_SCORE)])
    return tuple(float(z) for z in smooth_table(levels, reached))


def smooth_table(levels: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """``[0, z_1 .. z_10]``: a cubic through the origin fitted to where each class is reached
    (least squares), when it rises over the whole range; else the points themselves made
    non-decreasing. Defocus blur grows smoothly with the class, while one field's answers
    wiggle by a fraction of a class around it (on the training objective: up to 0.7 um raw)."""
    design = np.stack([levels, levels**2, levels**3], axis=1)
    coef, *_ = np.linalg.lstsq(design, reached, rcond=None)
    fine = np.linspace(0.0, levels[-1], 201)
    slope = coef[0] + 2 * coef[1] * fine + 3 * coef[2] * fine**2
    points = design @ coef if (slope > 0).all() else reached
    return np.maximum.accumulate(np.concatenate([[0.0], np.maximum(points, 0.0)]))
