"""Images bigger than memory: grid-aligned blocks with the halo each patch needs.

The image (numpy, dask, zarr or tifffile's zarr store: anything with ``shape``, ``dtype``
and 2-D slicing) is cut into output blocks whose sides are multiples of the patch stride.
For each block, every patch of the *global* 84/42 grid that touches it is read with its
13-pixel context (mirrored at the true image borders exactly as in memory), classified,
deconvolved and blended with the same triangular weights; the block keeps only the pixels it
owns. So the result equals the in-memory result to within float rounding, with no seams, and
memory is bounded by one block (about 0.3 GB for the default 2016x2016 block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._progress import Progress
from .tiling import CONTEXT, PATCH, STRIDE, PatchGrid, patch_grid

#: 48 strides of 42 px and 126 TIFF tiles of 16 px
DEFAULT_BLOCK = 2016


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


def plan_blocks(image_shape, *, block: int = DEFAULT_BLOCK, patch: int = PATCH, stride: int = STRIDE):
    """The global :class:`PatchGrid` and the list of :class:`Block` covering the image."""
    if block % stride:
        raise ValueError(f"block ({block}) must be a multiple of the stride ({stride})")
    h, w = (int(n) for n in image_shape[-2:])
    grid = patch_grid((h, w), patch=patch, stride=stride)
    rows, cols = grid.shape

    def span(a, b, n):
        lo = max(0, math.ceil((a - patch + 1) / stride))
        hi = min(n - 1, (b - 1) // stride)
        return lo, hi

    blocks = []
    for y0 in range(0, h, block):
        y1 = min(h, y0 + block)
        for x0 in range(0, w, block):
            x1 = min(w, x0 + block)
            blocks.append(Block(y0, y1, x0, x1, span(y0, y1, rows), span(x0, x1, cols)))
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


def iter_blocks(source, *, classify, deconvolve_levels=True, block: int = DEFAULT_BLOCK,
                patch: int = PATCH, stride: int = STRIDE, context: int = CONTEXT,
                min_level: int = 0, device="auto", **rl_kwargs):
    """Process a big 2-D image block by block (a generator).

    ``classify(patches (n, p, p) float32 tensor) -> probabilities (n, 12) numpy``.
    Yields ``(Progress, block, restored_block_or_None, (levels, probs) on the block's
    sub-grid)``. Patches whose level is below ``min_level`` are left untouched (triage).
    """
    import torch

    from .deconvolution import deconvolve_patches
    from .optics import BACKGROUND
    from .tiling import montage

    grid, blocks = plan_blocks(source.shape, block=block, patch=patch, stride=stride)
    for k, blk in enumerate(blocks):
        patches, sub = block_patches(source, blk, grid, context)
        core = patches[:, context:context + patch, context:context + patch].contiguous()
        probs = np.asarray(classify(core))
        levels = probs.argmax(axis=1)
        restored = None
        if deconvolve_levels:
            todo_levels = np.where((levels < min_level) & (levels != BACKGROUND), 0, levels)
            rest = _drain_quiet(deconvolve_patches(patches, todo_levels, context=context, device=device,
                                                   **rl_kwargs))
            full = montage(rest, sub)
            oy, ox = blk.y0 - blk.rows[0] * stride, blk.x0 - blk.cols[0] * stride
            restored = full[oy:oy + blk.y1 - blk.y0, ox:ox + blk.x1 - blk.x0].clamp_min(0).cpu().numpy()
        shape = blk.sub_shape
        yield (Progress(k + 1, len(blocks), "blocks"), blk, restored,
               (levels.reshape(shape), probs.reshape(*shape, -1)))
        del patches, core
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _drain_quiet(gen):
    from ._progress import drain

    return drain(gen)


def is_lazy(image) -> bool:
    """True for arrays that should be processed block by block (dask, zarr)."""
    mod = type(image).__module__
    return mod.startswith("dask") or mod.startswith("zarr")
