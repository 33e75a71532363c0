"""DelpNet's canonical frame: the objective, intensity scale and background rule it reads.

Everything :mod:`.defocus` (the map) and :mod:`.class_table` (each class in um for another
objective) share, below both: the training objective (:data:`CANONICAL`), the canonical
intensity scale (robust range -> :data:`SPAN` counts above :data:`OFFSET`), the relative
background rule, and the network itself. See :mod:`.defocus` for what each step is for.
"""

from __future__ import annotations

import functools

import numpy as np

from ..core.optics import Optics

N_CLASSES = 12
SCALE = 65535.0
#: the optics the shipped DelpNet's training data were made with (the classes are its blur
#: levels): LB-DVD eq. 2, as the weights' own metadata say (they predate ``psf_model``)
CANONICAL = Optics(psf_model="paraxial")
#: the canonical intensity scale: robust range -> SPAN counts above OFFSET
SPAN, OFFSET = 1000.0, 150.0
#: background rule on the canonical scale: the paper's 230 / 30 counts, relative to OFFSET
BG_ABOVE, BG_RANGE, BG_SIGMAS = 230.0 - OFFSET, 30.0, 6.0


#: the DelpNet for images at another sampling than :data:`CANONICAL`'s (other objectives and
#: pixel sizes): the shipped weights fine-tuned on patches of five other objectives' exact PSFs,
#: each class at the defocus the shipped network reads as that class, and on objects shrunk up to
#: 2.5x (``weights/delpnet-objectives.md``). At DelpNet's own sampling the shipped ``delpnet``
#: reads (the paper's objective: it is the better network there, BENCHMARKS.md)
OBJECTIVES_WEIGHTS = "delpnet-objectives"
#: a sampling within 1 % of the canonical one is DelpNet's own
OWN_SAMPLING = 0.01


def map_weights(weights, optics):
    """The DelpNet weights a map of an image taken with ``optics`` reads with: ``weights`` when
    given (a user's file), else None (the shipped ``delpnet``) at DelpNet's own sampling and
    :data:`OBJECTIVES_WEIGHTS` at any other, when that file is shipped. Every map, class table
    and Richardson-Lucy frame asks here, so a map's classes are always its own network's."""
    if weights is not None or optics is None:
        return weights
    from ..core.matching import map_sampling_scale
    from ..core.optics import MAP_PIXEL_AUTO
    from ..core.resources import weights_dir

    if optics.map_pixel_um == MAP_PIXEL_AUTO:  # resolved per reading (.map_choice), each asks again
        return None
    if abs(map_sampling_scale(CANONICAL, optics) - 1.0) <= OWN_SAMPLING:
        return None
    return OBJECTIVES_WEIGHTS if (weights_dir() / f"{OBJECTIVES_WEIGHTS}.safetensors").exists() else None


#: the environment variable that turns on DelpNet in int8 on the CPU (``NAPARI_REFOCUS_INT8=1``;
#: :mod:`napari_refocus.models.quantize`; float32 on other devices and where torch has no x86
#: quantised engine). Off by default: measured (BENCHMARKS.md "LB-DVD speed") it runs ~1.4x the
#: patches/s and reads the held-out patches as well within noise, but its classes differ from
#: float32's on ~2 % of patches and its calibration adds ~3.5 s to a process's first map, and
#: every published number of this project is float32's
INT8_ENV = "NAPARI_REFOCUS_INT8"


def int8_on_cpu() -> bool:
    """Whether :data:`INT8_ENV` asks for DelpNet in int8 on the CPU (read at each call)."""
    import os

    return os.environ.get(INT8_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def delpnet(weights, device):
    """DelpNet (the shipped weights for ``weights=None``, else that file) on ``device``, cached;
    on the CPU in int8 when asked (:func:`int8_on_cpu`, :func:`int8_delpnet`). Every map, whole or
    block by block, and the class table get the network here, so they all read patches alike."""
    import torch

    from ..models.loader import load_model

    model = load_model("delpnet" if weights is None else weights, device, like="delpnet")
    if torch.device(device).type == "cpu" and int8_on_cpu():
        from ..models.quantize import int8_available

        if int8_available():
            from pathlib import Path

            path = Path(model.weights_file)
            return int8_delpnet(str(path), path.stat().st_mtime_ns)
    return model


@functools.lru_cache(maxsize=4)
def int8_delpnet(path: str, mtime_ns: int):
    """The int8 DelpNet of a weights file (cached per file and modification time), calibrated on
    :func:`calibration_patches`; it carries the file's ``meta``, ``weights_file``, ``sha256``
    and ``precision = "int8"``."""
    from ..models.loader import load_fresh
    from ..models.quantize import quantize_delpnet

    fresh = load_fresh(path)
    model = quantize_delpnet(fresh, calibration_patches())
    model.meta, model.weights_file, model.sha256 = fresh.meta, fresh.weights_file, fresh.sha256
    model.precision = "int8"
    return model


@functools.lru_cache(maxsize=1)
def calibration_patches():
    """``(N, 84, 84)`` float32 patches as DelpNet sees them, for int8 calibration: the shipped
    in-focus field blurred at every class of :data:`CANONICAL` (Poisson noise, fixed seed), on
    the canonical intensity scale, cut into its non-overlapping 84x84 patches (~530)."""
    import tifffile

    from ..core.forward import simulate
    from ..core.progress import check_cancelled
    from ..core.resources import INFOCUS_SAMPLE, data_dir
    from ..core.tiling import PATCH

    field = tifffile.imread(data_dir() / INFOCUS_SAMPLE)
    out = []
    for level in range(N_CLASSES - 1):
        check_cancelled()  # a Cancel during the first int8 map stops here, not seconds later
        img, _ = canonical_image(simulate(field, level=level, seed=level, optics=CANONICAL), 1.0)
        h, w = (n // PATCH * PATCH for n in img.shape)
        out.append(img[:h, :w].reshape(h // PATCH, PATCH, w // PATCH, PATCH).swapaxes(1, 2).reshape(-1, PATCH, PATCH))
    return np.concatenate(out) / np.float32(SCALE)


def canonical_stats(image) -> tuple[float, float, float]:
    """``(lo, hi, sigma)``: the image's robust range and its noise on the canonical scale.

    Computed once per image (for a big image, by the block executor's ``image_stats`` hook), so
    that every block is put on the same scale as the image in memory."""
    from ..core.intensity import noise_sigma, robust_range

    lo, hi = robust_range(image)
    return lo, hi, noise_sigma(image) * (SPAN / (hi - lo) if hi > lo else 0.0)


def exact_in_float32(dtype) -> bool:
    """Whether every value of ``dtype`` is a float32 exactly (so converting later gives the same)."""
    dtype = np.dtype(dtype)
    return dtype in (np.float32, np.float16) or (dtype.kind in "uib" and dtype.itemsize <= 2)


def to_canonical_counts(x, stats):
    """``x`` (numpy or torch) on the canonical intensity scale (float32, clipped at 0)."""
    from ..core.intensity import to_canonical

    lo, hi = stats[0], stats[1]
    if isinstance(x, np.ndarray):
        return to_canonical(x, span=SPAN, offset=OFFSET, stats=(lo, hi))
    import torch

    return torch.from_numpy(to_canonical(x.numpy(), span=SPAN, offset=OFFSET, stats=(lo, hi)))


def canonical_shape(native_shape, scale: float) -> tuple[int, int]:
    """The canonical image's ``(h, w)`` for a native image of ``native_shape`` (``scale``
    native pixels per canonical pixel), as :func:`canonical_image` makes it."""
    from ..core.resample import resized_shape

    native = tuple(int(n) for n in native_shape[-2:])
    return native if scale == 1.0 else resized_shape(native, 1.0 / scale)


def canonical_image(arr: np.ndarray, scale: float, *, normalise: bool = True, stats=None):
    """``(image on the canonical grid and intensity scale, stats)`` (stats None: raw counts)."""
    from ..core.intensity import to_canonical
    from ..core.resample import resample

    if normalise and not stats and scale == 1.0 and exact_in_float32(np.asarray(arr).dtype):
        # before the float32 copy, not beside it: the statistics read the pixels a band at a
        # time, the same numbers as from the copy (a peak of ~6 B/px instead of ~10)
        stats = canonical_stats(np.asarray(arr))
    if scale != 1.0:  # band by band from the input: no float32 copy of the whole image beside the result
        img = resample(arr, shape=canonical_shape(np.shape(arr), scale))
    else:
        img = np.asarray(arr, dtype=np.float32)
    if not normalise:
        return img, None
    stats = stats or canonical_stats(img)
    if np.may_share_memory(img, arr):
        img = img.copy()  # the caller's float32 array is never written to
    # in place on this function's own copy
    return to_canonical(img, span=SPAN, offset=OFFSET, stats=(stats[0], stats[1]), out=img), stats


def canonical_padded(arr, scale: float, *, stride: int, normalise: bool = True, stats=None):
    """``(padded, grid, stats)``: :func:`canonical_image` on the patch grid of ``stride``,
    reflect-padded to the grid's extent (``core.tiling.pad_image``'s ``"reflect"``) as a torch
    tensor; ``padded`` and ``grid`` are None when the image is smaller than a patch.

    At the map's own sampling the canonical values are written straight into the padded buffer
    (the same float32 operations, so the same numbers): one float32 image (~4 B/px) instead of
    the canonical image and its padded copy side by side (~8 B/px), which was the peak of a
    generator's never-worse gate on a big image, on top of its output."""
    import torch

    from ..core.intensity import to_canonical
    from ..core.tiling import PATCH, pad_image, patch_grid, reflect_fill

    a = np.asarray(arr)
    direct = normalise and scale == 1.0 and a.ndim == 2 and (bool(stats) or exact_in_float32(a.dtype))
    if direct:
        stats = stats or canonical_stats(a)
        h, w = a.shape
        grid = patch_grid((h, w), patch=PATCH, stride=stride) if min(h, w) >= PATCH else None
        if grid is None:
            return None, None, stats
        eh, ew = grid.extent
        if eh - h < h and ew - w < w:  # else pad_image replicates instead of mirroring
            out = np.empty((eh, ew), np.float32)
            to_canonical(a, span=SPAN, offset=OFFSET, stats=(stats[0], stats[1]), out=out[:h, :w])
            return torch.from_numpy(reflect_fill(out, h, w)), grid, stats
    data, stats = canonical_image(arr, scale, normalise=normalise, stats=stats)
    if min(data.shape) < PATCH:
        return None, None, stats
    grid = patch_grid(data.shape, patch=PATCH, stride=stride)
    return pad_image(torch.from_numpy(np.ascontiguousarray(data)), grid, 0, "reflect"), grid, stats


def background_rule(patches, sigma: float):
    """Patches (canonical counts, a torch tensor) that are background (see the module doc)."""
    flat = patches.reshape(patches.shape[0], -1)
    top, bottom = flat.max(1).values.numpy(), flat.min(1).values.numpy()
    return (top < OFFSET + BG_ABOVE) & ((top - bottom) < max(BG_RANGE, BG_SIGMAS * sigma))
