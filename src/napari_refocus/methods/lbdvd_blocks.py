"""LB-DVD block by block: the global patch grid of a big image, and its defocus map a part at a time.

An output block ``[y0, y1) x [x0, x1)`` of any size is restored from the patches of the
*global* 84/42 grid that touch it (:func:`grid_block`): each is read with its context (mirrored
at the true image borders exactly as in memory, :func:`read_region`), classified, deconvolved
and blended with the same triangular weights; the block keeps only the pixels it owns.
:func:`iter_blocks` / :func:`process_block` do this with any classifier at DelpNet's own
sampling; lbdvd's exact block form at any sampling (the method's ``block_runner``) is
:mod:`.lbdvd_global`, and :func:`chunked_defocus_map` gives the whole image's map a rectangle of
patches at a time (:mod:`.canonical_blocks`), equal to the in-memory map.

At DelpNet's own sampling a block reads at most :data:`HALO` pixels beyond its bounds on every
side (a patch touching the block starts up to ``PATCH - 1`` pixels before it and is read with
``CONTEXT`` more); at another sampling :func:`.lbdvd_global.block_halo`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.progress import Progress, drain
from ..core.tiling import CONTEXT, PATCH, STRIDE, PatchGrid, patch_grid
from .canonical_blocks import read_region  # noqa: F401 - part of this module's interface
from .deep import TOP

#: input pixels beyond its bounds that a block reads on each side
HALO = PATCH + CONTEXT - 1


@dataclass(frozen=True)
class Block:
    """One output block: owned pixels ``[y0, y1) x [x0, x1)`` and the grid patches it needs."""

    y0: int
    y1: int
    x0: int
    x1: int
    rows: tuple[int, int]  # first and last patch row (inclusive)
    cols: tuple[int, int]

    @property
    def sub_shape(self) -> tuple[int, int]:
        """Patch rows and columns this block deconvolves."""
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1


def grid_block(grid: PatchGrid, bounds) -> Block:
    """The :class:`Block` of output pixels ``bounds = (y0, y1, x0, x1)`` on the global ``grid``."""
    y0, y1, x0, x1 = (int(v) for v in bounds)

    def span(a, b, n):
        lo = max(0, math.ceil((a - grid.patch + 1) / grid.stride))
        return lo, min(n - 1, (b - 1) // grid.stride)

    rows, cols = grid.shape
    return Block(y0, y1, x0, x1, span(y0, y1, rows), span(x0, x1, cols))


def plan_blocks(image_shape, *, block: int, patch: int = PATCH, stride: int = STRIDE):
    """The global :class:`PatchGrid` and the list of :class:`Block` covering the image, row by row."""
    if block % stride:
        raise ValueError(f"block ({block}) must be a multiple of the stride ({stride})")
    h, w = (int(n) for n in image_shape[-2:])
    grid = patch_grid((h, w), patch=patch, stride=stride)
    blocks = [grid_block(grid, (y0, min(h, y0 + block), x0, min(w, x0 + block)))
              for y0 in range(0, h, block) for x0 in range(0, w, block)]
    return grid, blocks


def block_patches(source, blk: Block, grid: PatchGrid, context: int = CONTEXT):
    """Context-padded patches ``(n, p+2c, p+2c)`` of a block, and the block's sub-grid.

    The sub-grid's image is the area ``rows[0]*stride .. rows[1]*stride + patch`` (same for x).
    """
    import torch
    import torch.nn.functional as F

    s, p = grid.stride, grid.patch
    ny, nx = blk.sub_shape
    top, left = blk.rows[0] * s, blk.cols[0] * s
    sub_h, sub_w = (ny - 1) * s + p, (nx - 1) * s + p
    # The in-memory path mirrors the image at its true borders (torch "reflect" = numpy
    # "reflect"); read_region mirrors only outside the image, so interior blocks see their
    # real neighbours and border blocks the same mirrored pixels as in memory.
    region = read_region(source, top - context, top + sub_h + context, left - context, left + sub_w + context)
    t = torch.from_numpy(region)
    size = p + 2 * context
    cols = F.unfold(t[None, None], kernel_size=size, stride=s)
    patches = cols[0].T.reshape(-1, size, size)
    return patches, PatchGrid((sub_h, sub_w), patch=p, stride=s)


def process_block(source, blk: Block, grid: PatchGrid, *, classify, deconvolve_levels=True,
                  context: int = CONTEXT, min_level: int = 0, device="auto", **rl_kwargs):
    """Classify (and deconvolve) the patches one block needs; return its owned pixels.

    Returns ``(restored (y1-y0, x1-x0) float32 or None, levels, probabilities)`` with the
    levels and probabilities on the block's sub-grid of patches. ``min_level``: patches below
    it are left untouched, like level-0 patches (triage).
    """
    from ..core.optics import BACKGROUND
    from ..core.rl import deconvolve_patches
    from ..core.tiling import montage

    patch, stride = grid.patch, grid.stride
    patches, sub = block_patches(source, blk, grid, context)
    core = patches[:, context:context + patch, context:context + patch].contiguous()
    probs, levels = classify(core)
    restored = None
    if deconvolve_levels:
        todo = np.where((levels < min_level) & (levels != BACKGROUND), 0, levels)
        rest = drain(deconvolve_patches(patches, todo, context=context, device=device, **rl_kwargs))
        full = montage(rest, sub)
        oy, ox = blk.y0 - blk.rows[0] * stride, blk.x0 - blk.cols[0] * stride
        restored = full[oy:oy + blk.y1 - blk.y0, ox:ox + blk.x1 - blk.x0].clamp_min(0).cpu().numpy()
    shape = blk.sub_shape
    return restored, levels.reshape(shape), probs.reshape(*shape, -1)


def iter_blocks(source, *, classify, block: int, deconvolve_levels=True, patch: int = PATCH,
                stride: int = STRIDE, **kwargs):
    """Process a big 2-D image block by block (a generator).

    ``classify(patches (n, p, p) float32 tensor) -> (probabilities (n, 12), levels (n,))``.
    Yields ``(Progress, block, restored_block_or_None, (levels, probs) on the block's
    sub-grid)``; keyword arguments go to :func:`process_block` (``min_level``, ``device``,
    Richardson-Lucy options).
    """
    grid, blocks = plan_blocks(source.shape, block=block, patch=patch, stride=stride)
    for k, blk in enumerate(blocks):
        restored, levels, probs = process_block(source, blk, grid, classify=classify,
                                                deconvolve_levels=deconvolve_levels, **kwargs)
        yield Progress(k + 1, len(blocks), "blocks"), blk, restored, (levels, probs)


def delpnet_classifier(*, weights=None, device="auto", batch_size: int = 256, tta: bool = False, stats=None):
    """``classify(patches (n, 84, 84)) -> (probabilities (n, 12), levels (n,))`` with DelpNet
    (``tta``: averaged over the 8 flips/rotations); the network comes from the model cache.

    ``stats``: the whole image's :func:`~.canonical.canonical_stats`: patches are put on the
    canonical intensity scale and the relative background rule applies, exactly as for the
    image in memory (None: raw counts, the paper's input)."""
    from ..core.devices import resolve_device
    from ..core.optics import BACKGROUND
    from .canonical import background_rule, delpnet, to_canonical_counts
    from .defocus import iter_patch_probabilities

    dev = resolve_device(device)
    model = delpnet(weights, dev)

    def classify(core):
        if stats is not None:
            core = to_canonical_counts(core, stats)
        probs = drain(iter_patch_probabilities(model, core, dev, batch_size, tta=tta))
        levels = probs.argmax(axis=1)
        if stats is not None:
            levels[background_rule(core, stats[2])] = BACKGROUND
        return probs, levels

    classify.sha256 = getattr(model, "sha256", "")
    return classify


def chunked_defocus_map(source, *, block: int, weights=None, device="auto", stride: int = STRIDE,
                        progress=None, stats=None, tta: bool = False, batch_size: int = 256, optics=None,
                        beyond_top: bool = True):
    """The :class:`~.defocus.DefocusMap` of an image too big for memory, a rectangle of patches at
    a time: the same map as for the image in memory, at any sampling (the canonical image is
    resampled window by window on its global grid, :class:`.canonical_blocks.CanonicalView`).

    ``stats``: the canonical image's intensity statistics
    (:func:`.canonical_blocks.sample_stats`; None: raw counts, no background rule, as
    ``normalise=False``). ``block``: about how many native pixels each rectangle covers.
    ``beyond_top``: the second reading at half the sampling where patches are at the top class
    (:mod:`.deep`), also a rectangle at a time."""
    from ..core.devices import resolve_device
    from .canonical import delpnet, map_weights
    from .canonical_blocks import CanonicalView, map_patches
    from .defocus import CANONICAL, N_CLASSES, DefocusMap, certainty_of, map_frame

    weights = map_weights(weights, optics)
    scale, table = map_frame(optics, weights=weights)
    dev = resolve_device(device)
    model = delpnet(weights, dev)
    view = CanonicalView(source, scale=scale, stats=stats)
    grid = patch_grid(view.shape, patch=PATCH, stride=stride)
    probs = np.zeros((*grid.shape, N_CLASSES), np.float32)
    levels = np.zeros(grid.shape, np.int64)
    step = max(1, int(block / (grid.stride * scale)))  # patch rows/columns per rectangle
    starts = [(r, c) for r in range(0, grid.shape[0], step) for c in range(0, grid.shape[1], step)]
    for k, (r, c) in enumerate(starts):
        rows, cols = (r, min(grid.shape[0], r + step) - 1), (c, min(grid.shape[1], c + step) - 1)
        pr, lv = map_patches(view, grid, rows, cols, model=model, device=dev, tta=tta, batch_size=batch_size)
        probs[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = pr
        levels[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = lv
        if progress:
            progress(Progress(k + 1, len(starts), "blocks"))
    coarse = None
    if beyond_top and (levels == TOP).any():
        coarse = _chunked_coarse(source, scale=scale, stats=stats, optics=optics, model=model, device=dev,
                                 tta=tta, batch_size=batch_size, block=block, levels=levels, grid=grid, table=table,
                                 weights=weights)
    return DefocusMap(levels=levels, probabilities=probs, certainty=certainty_of(probs), grid=grid,
                      weights_sha256=getattr(model, "sha256", ""), scale=scale, defocus_um=table,
                      optics=(optics or CANONICAL).as_dict(), coarse=coarse)


def _chunked_coarse(source, *, scale, stats, optics, model, device, tta, batch_size, block, levels, grid, table,
                    weights=None):
    """:func:`.defocus.iter_defocus_map`'s coarse reading (:mod:`.deep`) a rectangle at a time."""
    from .canonical_blocks import CanonicalView, map_patches
    from .deep import COARSE, CoarseReading, coarse_grid_of, coarse_table, deep_patches

    view = CanonicalView(source, scale=COARSE * scale, stats=stats)
    cgrid = coarse_grid_of(view.shape)
    if cgrid is None:
        return None
    clevels = np.zeros(cgrid.shape, np.int64)
    step = max(1, int(block / (cgrid.stride * COARSE * scale)))
    for r in range(0, cgrid.shape[0], step):
        for c in range(0, cgrid.shape[1], step):
            rows, cols = (r, min(cgrid.shape[0], r + step) - 1), (c, min(cgrid.shape[1], c + step) - 1)
            _, lv = map_patches(view, cgrid, rows, cols, model=model, device=device, tta=tta, batch_size=batch_size)
            clevels[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = lv
    ctable = coarse_table(optics, weights=weights)
    deep = deep_patches(clevels, ctable, levels, table, coarse_grid=cgrid, map_grid=grid)
    return CoarseReading(grid=cgrid, scale=COARSE * scale, levels=clevels, deep=deep, defocus_um=ctable)


#: lbdvd parameters the block form runs only at these values (it is built on the default grid)
_FIXED = {"stride": STRIDE, "montage_weights": "triangular", "padding": "reflect"}


def check_block_params(params) -> None:
    """ValueError for lbdvd parameters the block form cannot honour (a stride other than 42,
    rectangular montage, zero padding) rather than silently ignoring them."""
    bad = sorted(k for k, v in _FIXED.items() if getattr(params, k) != v)
    if bad:
        raise ValueError("lbdvd block by block (big images) does not take "
                         + ", ".join(f"{k}={getattr(params, k)!r}" for k in bad))
