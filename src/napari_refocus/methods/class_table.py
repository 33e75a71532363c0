"""Each DelpNet class as a defocus of the user's objective, read off the network itself.

DelpNet's classes are the blur of one objective (:data:`.defocus.CANONICAL`: class ``L`` is
``2 L`` um of defocus there). For any other objective, class ``L`` has to become the defocus of
*that* objective at which DelpNet answers ``L``. Matching PSFs by a number computed from them
(encircled energy in lambda / NA, :func:`~napari_refocus.core.matching.match_defocus_um`) is right
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

from ..core.matching import map_key, map_sampling_scale
from ..core.optics import Optics, psf_stack
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


def response_curve(optics: Optics, defocus_um, *, seed: int = 0, coarse: int = 1, weights=None) -> np.ndarray:
    """DelpNet's mean class (non-background patches) of the reference field blurred by
    ``optics``' PSF at each of ``defocus_um`` (um, nominal), drawn at DelpNet's sampling.
    ``weights``: the network's .safetensors file (None: the shipped one).

    ``coarse`` = 2: the blurred field is then resampled to half its size, as the map's second
    reading beyond the top class sees an image (:mod:`.deep`), and read on patches every 42 px
    (the half-size field has a quarter of the patches)."""
    import torch

    from ..models.delpnet import mean_softmax
    from ..core.optics import BACKGROUND
    from .canonical import CANONICAL, SCALE, background_rule, canonical_image, canonical_stats, delpnet

    scale = map_sampling_scale(CANONICAL, optics)
    canon = dataclasses.replace(optics, pixel_um=optics.pixel_um * scale)
    # shot noise as an image of this objective has it once resampled to DelpNet's sampling:
    # drawn per native pixel, then averaged over scale^2 of them (on 60x/1.4 oil, with the noise
    # of a canonical pixel instead, classes 6, 8, 10 came at 2.27, 3.41, 4.95 um, 13-24 % short
    # of where the map put the same field blurred at the native sampling, ~2.95, ~4.5, ~5.7 um:
    # this session's ad-hoc diagnostics, BENCHMARKS.md "Other objectives and exposures")
    photons = scale * scale
    window = coarse * (WINDOW - 1) + 1  # as wide in the half-size field's pixels
    psfs = torch.from_numpy(psf_stack(canon, defocus_um, size=window))
    field = reference_field()
    h, w = field.shape
    frame = (h + window, w + window)
    spectrum = torch.fft.rfft2(torch.from_numpy(np.pad(field, ((0, window), (0, window)), mode="reflect")))
    gen = torch.Generator().manual_seed(seed)
    model = delpnet(weights, torch.device("cpu"))
    out = np.zeros(len(psfs))
    for i, psf in enumerate(psfs):
        check_cancelled()  # a job's Cancel works here too (a few seconds in all)
        kernel = torch.zeros(frame)
        kernel[:window, :window] = psf
        kernel = torch.roll(kernel, (-(window // 2), -(window // 2)), (0, 1))  # centred at (0, 0)
        blurred = torch.fft.irfft2(spectrum * torch.fft.rfft2(kernel), s=frame)[:h, :w].clamp_min(0)
        counts = (torch.poisson(blurred.double() * photons, generator=gen) / photons).float().numpy()
        # the half-size reading keeps the image's own intensity scale, as the map's does
        img, stats = canonical_image(counts, float(coarse), stats=None if coarse == 1 else canonical_stats(counts))
        patches = _patches(img, 84 if coarse == 1 else 42)
        with torch.inference_mode():
            classes = mean_softmax(model, patches / SCALE, torch.device("cpu"), False).numpy().argmax(-1)
        keep = (classes != BACKGROUND) & ~background_rule(patches, stats[2])
        out[i] = classes[keep].mean() if keep.any() else np.nan
    return out


def _patches(img: np.ndarray, stride: int):
    """The ``(n, 84, 84)`` patches of ``img`` every ``stride`` px from its corner (a torch tensor)."""
    import torch

    view = np.lib.stride_tricks.sliding_window_view(img, (84, 84))[::stride, ::stride]
    return torch.from_numpy(np.ascontiguousarray(view.reshape(-1, 84, 84)))


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


#: the half-size reading's tables (``coarse=2``, :mod:`.deep`), as :data:`KNOWN`, for the default
#: objective (exact PSF) and DelpNet's training objective (LB-DVD eq. 2)
KNOWN_COARSE = {
    Optics(): ("f29448b24bba411b594e6795b17cfa60098ddd1de40d98d7a735fc1fe2cd1a56",
               (0.0, 3.229452536525465, 6.768775518690055, 10.528805553898072, 14.42037924955382,
                18.354333213061597, 22.241504051825714, 25.99272837325047, 29.518842784740162,
                32.7306838936991, 35.53908830753159)),
    Optics(psf_model="paraxial"): ("f29448b24bba411b594e6795b17cfa60098ddd1de40d98d7a735fc1fe2cd1a56",
                                   (0.0, 3.2446187803573796, 6.880722578986705, 10.810236733994392,
                                    14.935086583486848, 19.15719746557049, 23.37849471835173,
                                    27.500903679936986, 31.42634968843267, 35.05675808194518,
                                    38.29405419858096)),
}


def response_table(optics: Optics, *, coarse: int = 1, weights=None) -> tuple:
    """The defocus (um) of ``optics``' objective that DelpNet reads as each class 0..10 (see
    the module doc); non-decreasing, 0 for class 0. ``weights``: the network that makes the map
    (a .safetensors file; None: the shipped one), whose own reading the classes are: a fine-tuned
    network can put them elsewhere (BENCHMARKS.md: class 10 of a 60x/1.4 oil objective at 3.3
    instead of 5.8 um). Cached per objective and network (the fields that do not change the
    PSF's shape in lambda / NA, such as the bank's size, do not count). ``coarse=2``: the classes
    of the image resampled to half its size (:mod:`.deep`)."""
    import torch

    from .canonical import CANONICAL, delpnet, map_weights

    weights = map_weights(weights, optics)
    default = Optics()
    key = map_key(CANONICAL, dataclasses.replace(optics, **{name: getattr(default, name) for name in SHAPE_FREE}))
    known = KNOWN if coarse == 1 else KNOWN_COARSE
    sha = getattr(delpnet(weights, torch.device("cpu")), "sha256", "")
    if key in known and known[key][0] == sha:
        return known[key][1]
    return _table(key, int(coarse), None if weights is None else str(weights), sha)


@functools.lru_cache(maxsize=32)
def _table(optics: Optics, coarse: int = 1, weights: str | None = None, sha: str = "") -> tuple:
    """:func:`response_table` measured (``sha``: the network's, so a changed file is measured again)."""
    from .canonical import CANONICAL, N_CLASSES

    logger.info("measuring DelpNet's classes in um for NA %s, n %s, %s nm, %s um pixels, %s PSF%s (once per "
                "objective)", optics.na, optics.refractive_index, optics.wavelength_nm, optics.pixel_um,
                optics.psf_model, "" if coarse == 1 else f", at 1/{coarse} of the sampling")
    # where the top class should be if blur grew like the depth of field (lambda n / NA^2); the
    # half-size reading reaches twice as far (measured at the paper's objective: 36 um for 10)
    guess = coarse * 2.0 * (N_CLASSES - 2) * optics.depth_of_field_um / CANONICAL.depth_of_field_um
    first = np.linspace(0.0, 3.0 * guess, COARSE)
    curve = np.fmax.accumulate(np.nan_to_num(response_curve(optics, first, coarse=coarse, weights=weights),
                                             nan=0.0))
    covered = np.flatnonzero(curve >= COVER_SCORE)
    zs = np.linspace(0.0, first[covered[0]] if len(covered) else first[-1], FINE)
    curve = np.fmax.accumulate(np.nan_to_num(response_curve(optics, zs, coarse=coarse, weights=weights),
                                             nan=0.0))
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
