"""Batched FFT Richardson-Lucy in torch: depth-invariant and depth-variant (LB-DVD 2.3).

    o_{t+1} = o_t * ( (i / (h (*) o_t)) (*) h_flipped ),   o_0 = i   (15 iterations)

Depth-variant: the image is cut into 84x84 patches on a stride-42 grid, each padded to
110x110 with its real neighbours, deconvolved with the PSF of its own level (levels 1..10;
level 0 and background are left untouched), cropped back and blended with triangular
weights. All patches of a chunk are deconvolved at once, each transform done once.
With ``group=k`` (lbdvd: 4 at the paper's grid) the patches of one level within each k x k
block of the grid are deconvolved together in one frame (the box of the block holding them, plus
the context; :func:`~.rl_groups.job_boxes`) and each is cut out of it: every patch still gets
its own level's PSF and the same blend, with more of its real neighbours around it, in about a
quarter of the transformed pixels when a block holds one level. Intensities stay in the image's
own units; results are float32.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .progress import drain
from .validation import as_image, check_level, check_level_map
from .devices import is_oom, resolve_device
from .memory import release_free_memory
from .optics import BACKGROUND, Optics, resolve_optics
from .otf import frame_size, otf_bank
from .rl_batch import (  # noqa: F401 - the batched iteration, public here as always
    CPU_BATCH,
    EPS,
    MIN_BATCH,
    iter_deconvolve_frames,
    iter_richardson_lucy_batch,
    richardson_lucy_batch,
)
from .rl_groups import cpu_group_batch, group_grid, grouped_region_into
from .rl_image import iter_richardson_lucy_image
from .tiling import (CONTEXT, PATCH, STRIDE, Accumulator, MirroredImage, pad_image, patch_grid, patch_view,
                     take_patches)

logger = logging.getLogger(__name__)

#: bytes of unchanged (level 0 / background) patches copied at once into the montage
AS_IS_CHUNK_BYTES = 16 * 2**20


def iter_deconvolve(
    image,
    *,
    level=None,
    level_map=None,
    iterations: int = 15,
    device="auto",
    patch: int = PATCH,
    stride: int | None = None,
    context: int = CONTEXT,
    montage_weights: str = "triangular",
    padding: str = "reflect",
    initial: str = "observed",
    boundary: str = "normalized",
    batch_size: int | None = None,
    optics: Optics | None = None,
    report=None,
    group: int = 1,
    **optics_kwargs,
):
    """Generator form of :func:`deconvolve`: yields :class:`Progress`, returns the image.

    ``report``: an optional :class:`~napari_refocus.core.devices.DeviceReport` told of an
    out-of-memory move to the CPU. ``group`` (depth-variant): the patches of one level within
    each ``group`` x ``group`` block of the grid are deconvolved together, in one frame
    (:mod:`.rl_groups`); 1: each patch in its own frame."""
    import torch

    arr = as_image(image)
    if (level is None) == (level_map is None):
        raise ValueError("give exactly one of level= (depth-invariant) or level_map= (depth-variant)")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    iterations = int(iterations)
    optics = resolve_optics(optics, **optics_kwargs)
    dev = resolve_device(device)
    if boundary not in ("normalized", "zero"):
        raise ValueError(f"boundary must be 'normalized' or 'zero', got {boundary!r}")
    if level is not None:
        # level 0 runs too: that is depth-invariant RL with the in-focus PSF
        lv = check_level(level, n_levels=optics.n_levels)
        try:
            est = yield from _whole_image(arr, boundary, optics, lv, dev, iterations, initial)
        except Exception as exc:  # noqa: BLE001 - only an accelerator's OOM is handled
            if dev.type == "cpu" or not is_oom(exc):
                raise
            # one image cannot be split into smaller batches: start again on the CPU
            cpu = torch.device("cpu")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            logger.warning("out of memory on %s: deconvolving on the CPU", dev)
            if report is not None:
                report.fell_back(cpu, f"out of memory on {dev}: continued on the CPU")
            est = yield from _whole_image(arr, boundary, optics, lv, cpu, iterations, initial)
        return est.cpu().numpy()

    if stride is None:
        stride = patch if montage_weights == "rectangular" else STRIDE
    grid = patch_grid(arr.shape, patch=patch, stride=stride)
    levels = check_level_map(level_map, grid.shape, n_levels=optics.n_levels).ravel()
    # Bounded memory: the image read a chunk of patches at a time (grouped: frames read from the
    # image itself, mirrored; else through a strided view of its padded copy) into one
    # accumulated montage; no array of all patches is ever made (6.9 copies of the image at the
    # 84/42 grid with 13 px of context)
    if isinstance(group, bool) or int(group) != group or group < 1:
        raise ValueError(f"group must be a positive integer, got {group!r}")
    group = int(group)
    if group > 1 and padding != "reflect":
        raise ValueError("group > 1 takes padding='reflect' (zero padding marks unknown pixels patch by patch)")
    pixels = grid.image_shape[0] * grid.image_shape[1]
    acc = Accumulator(grid, weights=montage_weights)
    if group > 1:
        if batch_size is None and dev.type == "cpu":
            batch_size = cpu_group_batch(pixels)
        # the frames are read from the image itself, mirrored (no padded float32 copy: ~4.5 B/px)
        yield from grouped_region_into(acc, MirroredImage(arr, group_grid(grid, group), context), grid, levels,
                                       group=group, context=context, iterations=iterations, device=dev,
                                       initial=initial, boundary=boundary, batch_size=batch_size, optics=optics,
                                       report=report)
        release_free_memory(pixels=pixels)  # the chunks' frames, before the result is copied
        return np.ascontiguousarray(acc.result().clamp_min_(0).numpy())
    # the image and its patches stay in host memory; each chunk goes to the device on its own,
    # so an out-of-memory fallback to the CPU finds the data where it needs it
    with warnings.catch_warnings():
        # a read-only image (a memory-mapped file, a napari layer's array) is only read here:
        # pad_image copies it, so torch's warning about writing to it does not apply
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        data = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    padded = pad_image(data, grid, context, padding)
    del data
    release_free_memory(pixels=pixels)  # the float32 copy of the image, which glibc may otherwise keep
    view = patch_view(padded, grid, context)
    inside = None
    if boundary == "normalized" and padding == "zeros":
        # pixels that have no real neighbour are unknown, not observed zeros
        inside = patch_view(pad_image(torch.ones(arr.shape), grid, context, "zeros"), grid, context)
    crop = slice(context, context + patch)
    as_is = np.flatnonzero((levels == 0) | (levels == BACKGROUND))  # level 0 and background: unchanged
    # a chunk of unchanged patches is copied out of the padded image: bounded in bytes, not in
    # patches (1024 patches of lbdvd's deep pass, 220 px with context, were 198 MB: 21 B/px of a 3072^2 image)
    step = max(1, AS_IS_CHUNK_BYTES // (4 * (patch + 2 * context) ** 2))
    for start in range(0, len(as_is), step):
        index = as_is[start:start + step]
        acc.add(index, take_patches(view, index)[:, crop, crop])
    yield from iter_deconvolve_frames(
        lambda index: take_patches(view, index), levels, acc.add, size=patch + 2 * context, context=context,
        iterations=iterations, device=dev, initial=initial, boundary=boundary, batch_size=batch_size,
        optics=optics, inside=None if inside is None else (lambda index: take_patches(inside, index)),
        report=report,
    )
    del view, inside, padded
    release_free_memory(pixels=pixels)  # the chunks' frames and the padded image, before the result is copied
    return np.ascontiguousarray(acc.result().clamp_min_(0).numpy())


#: FFT frames up to this many pixels are transformed whole (fastest); larger ones a tile at a
#: time (:mod:`.rl_image`, bounded memory: ~13 instead of ~60 bytes per pixel)
WHOLE_FRAME_MAX = 2**19


def _whole_image(arr, boundary, optics, level, dev, iterations, initial):
    """Depth-invariant RL of the 2-D image ``arr`` on ``dev``, zero-padded by the PSF radius in an
    FFT frame (a generator: Progress per iteration; returns the ``(h, w)`` estimate, clipped at
    0): the frame transformed whole when it is small, else tile by tile
    (:func:`~.rl_image.iter_richardson_lucy_image`, the same values up to float32 rounding).

    The frame and its mask are made here and handed over: only the RL generator holds them, so
    it frees each as soon as it is done with it (an out-of-memory retry rebuilds them)."""
    import torch

    h, w = arr.shape
    shape = (frame_size(h, optics.psf_size), frame_size(w, optics.psf_size))
    if shape[0] * shape[1] > WHOLE_FRAME_MAX:
        return (yield from iter_richardson_lucy_image(arr, optics=optics, level=level, iterations=iterations,
                                                      device=dev, boundary=boundary, initial=initial))
    obs = torch.zeros((1, *shape), dtype=torch.float32)
    obs.numpy()[0, :h, :w] = arr  # cast in place (no float32 copy of the image)
    obs = obs.to(dev)
    mask = None
    if boundary == "normalized":
        mask = torch.zeros_like(obs)
        mask[:, :h, :w] = 1
    otf = otf_bank(optics, shape, dev, [level])
    job = iter_richardson_lucy_batch(obs, otf, iterations, mask=mask, initial=initial)
    del obs, mask
    est = yield from job
    return est[0, :h, :w].clamp_min(0)


def deconvolve_patches(
    patches,
    levels,
    *,
    context: int = CONTEXT,
    iterations: int = 15,
    device="auto",
    initial: str = "observed",
    boundary: str = "normalized",
    batch_size: int | None = None,
    optics: Optics | None = None,
    inside=None,
    report=None,
):
    """Deconvolve context-padded patches ``(N, p+2c, p+2c)``, each with its own level.

    A generator yielding :class:`Progress`; returns the central ``(N, p, p)`` parts (level-0
    and background patches copied unchanged). ``inside``: optional ``(N, p+2c, p+2c)`` mask
    of the pixels that hold data (for ``boundary="normalized"``; default all).
    """
    import torch

    levels = np.asarray(levels).ravel()
    size = patches.shape[-1]
    crop = slice(context, context + size - 2 * context)
    restored = patches[:, crop, crop].clone()

    def put(index, chunk):
        restored[torch.from_numpy(np.asarray(index)).to(restored.device)] = chunk.to(restored.device)

    def take(source):
        return lambda index: source[torch.from_numpy(np.asarray(index)).to(source.device)]

    yield from iter_deconvolve_frames(take(patches), levels, put, size=size, context=context, iterations=iterations,
                                 device=device, initial=initial, boundary=boundary, batch_size=batch_size,
                                 optics=optics, inside=None if inside is None else take(inside), report=report)
    return restored


def deconvolve(image, *, level=None, level_map=None, progress=None, **kwargs) -> np.ndarray:
    """Richardson-Lucy deconvolution of a 2-D image (y, x) with Born-Wolf PSFs.

    Parameters
    ----------
    image : 2-D array, non-negative, in the image's own intensity units.
    level : int 0..10, optional
        Depth-invariant: one PSF for the whole image.
    level_map : 2-D int array on the patch grid, optional
        Depth-variant: a level (0..10, or 11 = background) per patch of
        ``patch_grid(image.shape, patch=, stride=)``. Level-0 and background patches are
        left as they are.
    iterations : int, default 15
    device : "auto" | "cpu" | "cuda" | "mps"
    patch, stride, context : int
        Patch size (84), grid stride (42; default = patch for rectangular montage) and the
        real-neighbour context on each side (13, giving 110x110 padded patches).
    montage_weights : "triangular" (seam-free, default) | "rectangular" (non-overlapping).
    padding : "reflect" (default) | "zeros"
        What the context holds where a patch has no real neighbours (image borders).
        "zeros" is the paper's rule; with ``boundary="normalized"`` those pixels count as
        unknown rather than as observed zeros. "reflect" mirrors the image and measured
        0.05-0.1 dB better on BBBC006 (see BENCHMARKS.md).
    initial : "observed" (o_0 = image, the paper) | "flat" (as scikit-image).
    boundary : "normalized" (default) | "zero"
        "zero" is textbook RL with 'same' convolution (scikit-image's behaviour), which
        darkens patch borders when the PSF is wider than the context (0.3-3.7 dB below
        whole-image RL at levels 5-10 on BBBC006, BENCHMARKS.md);
        "normalized" treats pixels beyond the data as unknown (Bertero & Boccacci).
    batch_size : patches deconvolved at once (default 8 on CPU, 1024 on GPU); halved
        on a GPU out-of-memory error, then the CPU is used.
    optics : Optics, or its fields as keywords (wavelength_nm, na, pixel_um, ...).
    progress : callable, optional, called with a :class:`Progress` per step.

    Returns
    -------
    float32 array of the image's shape.
    """
    return drain(iter_deconvolve(image, level=level, level_map=level_map, **kwargs), progress)
