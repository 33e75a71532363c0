"""LB-DVD block by block: the exact block form of :mod:`.lbdvd` for images bigger than memory.

An output block ``[y0, y1) x [x0, x1)`` of any size is restored from the patches of the
*global* 84/42 grid that touch it: each is read with its 13-pixel context (mirrored at the true
image borders exactly as in memory), classified by DelpNet, deconvolved and blended with the
same triangular weights; the block keeps only the pixels it owns. So a block equals the same
pixels of the in-memory result (bit-identical on the test images), with no seams, and memory is
bounded by one block.

A block reads at most :data:`HALO` pixels beyond its bounds on every side (a patch touching the
block starts up to ``PATCH - 1`` pixels before it and is read with ``CONTEXT`` more), which is
the lbdvd method's ``halo``: the big-image executor (:mod:`napari_refocus.bigimage`) hands
:func:`block_runner`'s function the block plus that halo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.progress import Progress, drain
from ..core.tiling import CONTEXT, PATCH, STRIDE, PatchGrid, patch_grid

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


def read_region(source, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``source[y0:y1, x0:x1]`` as float32, mirrored (numpy "reflect") outside the image."""
    h, w = source.shape[-2:]
    ya, yb, xa, xb = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    core = np.asarray(source[ya:yb, xa:xb], dtype=np.float32)
    pads = ((ya - y0, y1 - yb), (xa - x0, x1 - xb))
    if any(p for pair in pads for p in pair):
        mode = "reflect" if all(p < n for pair, n in zip(pads, core.shape) for p in pair) else "edge"
        core = np.pad(core, pads, mode=mode)
    return core


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

    ``stats``: the whole image's :func:`~.defocus.canonical_stats`: patches are put on the
    canonical intensity scale and the relative background rule applies, exactly as for the
    image in memory (None: raw counts, the paper's input)."""
    from ..core.devices import resolve_device
    from ..core.optics import BACKGROUND
    from ..models.loader import load_model
    from .defocus import background_rule, iter_patch_probabilities, to_canonical_counts

    dev = resolve_device(device)
    model = load_model("delpnet" if weights is None else weights, dev, like="delpnet")

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
                        progress=None, stats=None, tta: bool = False, batch_size: int = 256, optics=None):
    """The :class:`~.defocus.DefocusMap` of an image too big for memory, block by block (the
    same map as for the image in memory; ``stats``: see :func:`delpnet_classifier`). Only at
    DelpNet's training sampling: another objective's image would have to be resampled first."""
    from .defocus import N_CLASSES, DefocusMap, certainty_of, map_frame

    scale, table = map_frame(optics)
    if scale != 1.0:
        raise ValueError("a defocus map block by block (big images) runs only at DelpNet's training sampling "
                         f"for now (this objective's pixel is {scale:.2f}x finer); load the image in memory")
    classify = delpnet_classifier(weights=weights, device=device, stats=stats, tta=tta, batch_size=batch_size)
    grid, _ = plan_blocks(source.shape, block=block, stride=stride)
    probs = np.zeros((*grid.shape, N_CLASSES), np.float32)
    levels = np.zeros(grid.shape, np.int64)
    for prog, blk, _, (lv, pr) in iter_blocks(source, classify=classify, deconvolve_levels=False,
                                              block=block, stride=stride, device=device):
        probs[blk.rows[0]:blk.rows[1] + 1, blk.cols[0]:blk.cols[1] + 1] = pr
        levels[blk.rows[0]:blk.rows[1] + 1, blk.cols[0]:blk.cols[1] + 1] = lv
        if progress:
            progress(prog)
    return DefocusMap(levels=levels, probabilities=probs, certainty=certainty_of(probs), grid=grid,
                      weights_sha256=classify.sha256, scale=scale, defocus_um=table,
                      optics=(optics or _canonical()).as_dict())


def _canonical():
    from .defocus import CANONICAL

    return CANONICAL


#: lbdvd parameters the block form runs only at these values (it is built on the default grid)
_FIXED = {"stride": STRIDE, "montage_weights": "triangular", "padding": "reflect"}


def block_runner(params, *, device, stats=None):
    """lbdvd's ``Method.block_runner``: ``restore(source, bounds) -> float32 block``.

    ``params`` is a parsed :class:`~.lbdvd.LbdvdParams`; parameters the block form cannot
    honour (a stride other than 42, rectangular montage, zero padding) are a ValueError
    rather than silently ignored. ``restore`` reads ``source`` (the whole image's
    coordinates, any 2-D array-like) only within ``bounds`` +- :data:`HALO`.
    """
    from .frames import rl_frame

    bad = sorted(k for k, v in _FIXED.items() if getattr(params, k) != v)
    if bad:
        raise ValueError("lbdvd block by block (big images) does not take "
                         + ", ".join(f"{k}={getattr(params, k)!r}" for k in bad))
    frame = rl_frame(params.optics)
    if frame.scale != 1.0:
        raise ValueError("lbdvd block by block (big images) runs only at the training sampling for now: "
                         f"this objective's pixel is {frame.scale:.2f}x finer; run it in memory")

    state = {}

    def restore(source, bounds):
        if "classify" not in state:  # the network once per run, on the first block
            state["classify"] = delpnet_classifier(weights=params.weights, device=device, tta=params.tta,
                                                   stats=stats if params.normalise else None)
        grid = patch_grid(source.shape)
        restored, _, _ = process_block(source, grid_block(grid, bounds), grid, classify=state["classify"],
                                       device=device, iterations=params.iterations, optics=frame.optics)
        return restored

    return restore
