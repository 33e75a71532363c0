"""Images bigger than memory: grid-aligned blocks with the halo each patch needs.

The image (numpy, dask, zarr or tifffile's zarr store: anything with ``shape``, ``dtype``
and 2-D slicing) is cut into output blocks whose sides are multiples of the patch stride.
For each block, every patch of the *global* 84/42 grid that touches it is read with its
13-pixel context (mirrored at the true image borders exactly as in memory), classified,
deconvolved and blended with the same triangular weights; the block keeps only the pixels it
owns. So the result equals the in-memory result to within float rounding, with no seams, and
memory is bounded by one block (about 0.3 GB for the default 2016x2016 block).

Methods without a patch grid (``rl``, the learned generators) run through
:func:`iter_method_blocks` / :func:`lazy_method`: each block is read with the method's
``halo`` of context (clipped at the true image borders, where the method handles the border
as it does in memory), restored in memory and cropped to the pixels it owns. These results
match the in-memory ones up to the small differences any tiling of a network or an iterative
deconvolution makes near block edges (measured in ``tests/test_chunked.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .core.progress import Progress
from .core.tiling import CONTEXT, PATCH, STRIDE, PatchGrid, patch_grid

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


def process_block(source, blk: Block, grid: PatchGrid, *, classify, deconvolve_levels=True,
                  context: int = CONTEXT, min_level: int = 0, device="auto", **rl_kwargs):
    """Classify (and deconvolve) the patches one block needs; return its owned pixels.

    Returns ``(restored (y1-y0, x1-x0) float32 or None, levels, probabilities)`` with the
    levels and probabilities on the block's sub-grid of patches.
    """
    from .core.rl import deconvolve_patches
    from .core.optics import BACKGROUND
    from .core.tiling import montage

    patch, stride = grid.patch, grid.stride
    patches, sub = block_patches(source, blk, grid, context)
    core = patches[:, context:context + patch, context:context + patch].contiguous()
    probs = np.asarray(classify(core))
    levels = probs.argmax(axis=1)
    restored = None
    if deconvolve_levels:
        # triage: patches below min_level are left untouched, like level-0 patches
        todo = np.where((levels < min_level) & (levels != BACKGROUND), 0, levels)
        rest = _drain_quiet(deconvolve_patches(patches, todo, context=context, device=device, **rl_kwargs))
        full = montage(rest, sub)
        oy, ox = blk.y0 - blk.rows[0] * stride, blk.x0 - blk.cols[0] * stride
        restored = full[oy:oy + blk.y1 - blk.y0, ox:ox + blk.x1 - blk.x0].clamp_min(0).cpu().numpy()
    shape = blk.sub_shape
    return restored, levels.reshape(shape), probs.reshape(*shape, -1)


def iter_blocks(source, *, classify, deconvolve_levels=True, block: int = DEFAULT_BLOCK,
                patch: int = PATCH, stride: int = STRIDE, **kwargs):
    """Process a big 2-D image block by block (a generator).

    ``classify(patches (n, p, p) float32 tensor) -> probabilities (n, 12) numpy``.
    Yields ``(Progress, block, restored_block_or_None, (levels, probs) on the block's
    sub-grid)``; keyword arguments go to :func:`process_block` (``min_level``: patches below
    it are left untouched, for triage; ``device``; Richardson-Lucy options).
    """
    grid, blocks = plan_blocks(source.shape, block=block, patch=patch, stride=stride)
    for k, blk in enumerate(blocks):
        restored, levels, probs = process_block(source, blk, grid, classify=classify,
                                                deconvolve_levels=deconvolve_levels, **kwargs)
        yield Progress(k + 1, len(blocks), "blocks"), blk, restored, (levels, probs)


def _drain_quiet(gen):
    from .core.progress import drain

    return drain(gen)


def is_lazy(image) -> bool:
    """True for arrays that should be processed block by block (dask, zarr)."""
    mod = type(image).__module__
    return mod.startswith("dask") or mod.startswith("zarr")


# ----------------------------------------------------------------------------- DelpNet per block
def delpnet_classifier(*, weights=None, device="auto", batch_size: int = 256, tta: bool = False):
    """``classify(patches (n, 84, 84) counts) -> (n, 12) probabilities`` with DelpNet
    (``tta``: averaged over the 8 flips/rotations)."""
    from .methods.defocus import iter_patch_probabilities
    from .core.devices import resolve_device
    from .models.loader import load_model

    dev = resolve_device(device)
    model = load_model("delpnet" if weights is None else weights, dev)

    def classify(core):
        return _drain_quiet(iter_patch_probabilities(model, core, dev, batch_size, tta=tta))

    classify.sha256 = getattr(model, "sha256", "")
    return classify


def chunked_defocus_map(source, *, weights=None, device="auto", stride: int = STRIDE,
                        block: int = DEFAULT_BLOCK, progress=None):
    """:func:`napari_refocus.defocus.defocus_map` of an image too big for memory, block by block."""
    from .methods.defocus import DefocusMap, certainty_of

    classify = delpnet_classifier(weights=weights, device=device)
    grid, _ = plan_blocks(source.shape, block=block, stride=stride)
    probs = np.zeros((*grid.shape, 12), np.float32)
    for prog, blk, _, (_, pr) in iter_blocks(source, classify=classify, deconvolve_levels=False,
                                             block=block, stride=stride, device=device):
        probs[blk.rows[0]:blk.rows[1] + 1, blk.cols[0]:blk.cols[1] + 1] = pr
        if progress:
            progress(prog)
    return DefocusMap(levels=probs.argmax(-1).astype(np.int64), probabilities=probs,
                      certainty=certainty_of(probs), grid=grid, weights_sha256=classify.sha256)


def iter_refocus_blocks(source, *, device="auto", block: int = DEFAULT_BLOCK, weights=None,
                        min_level: int = 0, tta: bool = False, **rl_kwargs):
    """LB-DVD of a big image, one block at a time (generator).

    Yields ``(Progress, Block, restored float32 block)``; memory stays bounded by one block.
    """
    classify = delpnet_classifier(weights=weights, device=device, tta=tta)
    for prog, blk, restored, _ in iter_blocks(source, classify=classify, block=block, device=device,
                                              min_level=min_level, **rl_kwargs):
        yield prog, blk, restored


def refocus_to_tiff(source, path, *, method: str = "lbdvd", dtype=None, pixel_um=None, metadata=None,
                    block: int = DEFAULT_BLOCK, device="auto", progress=None, protect=(), **kwargs):
    """A registered method on ``source``, written block by block into a tiled BigTIFF (atomic).

    The blocks come from :func:`iter_method_blocks`. The TIFF's tiles are the blocks, so only one
    block is ever held in memory. ``pixel_um`` is the input's pixel size: the method's optics
    use it and the TIFF records it (an upscaling method's output pixels are that many times
    smaller).
    """
    import json
    from pathlib import Path

    import tifffile

    from .io import atomic_output, check_not_input
    from .methods import get_method
    from .core.forward import cast_like

    path = Path(path)
    check_not_input(path, protect)
    dtype = np.dtype(dtype or source.dtype)
    r = int(get_method(method).upscale)
    h, w = source.shape[-2:]
    if pixel_um:
        kwargs = {**kwargs, "pixel_um": float(pixel_um)}
    blocks = iter_method_blocks(source, method, device=device, block=block, **kwargs)

    def tiles():
        for prog, _, restored in blocks:
            tile = np.zeros((block * r, block * r), dtype)
            tile[: restored.shape[0], : restored.shape[1]] = cast_like(restored, dtype)
            if progress:
                progress(prog)
            yield tile

    meta = dict(metadata or {})
    extra = {}
    if pixel_um:
        out_um = pixel_um / r
        extra = {"resolution": (1e4 / out_um, 1e4 / out_um), "resolutionunit": "CENTIMETER"}
        meta["pixel_um"] = out_um
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=(h * r, w * r), dtype=dtype, tile=(block * r, block * r),
                         bigtiff=True, description=json.dumps(meta, default=str), metadata=None, **extra)
    return path


def lazy_refocus(source, *, device="auto", block: int = DEFAULT_BLOCK, weights=None, tta: bool = False,
                 **rl_kwargs):
    """A dask array that computes LB-DVD of ``source`` block by block when it is read.

    For napari: a dask-backed layer in, a dask-backed layer out; only the blocks on screen are
    computed. Each block reads its halo from ``source`` itself.
    """
    import dask.array as da

    h, w = source.shape[-2:]
    grid, blocks = plan_blocks((h, w), block=block)
    index = {(b.y0 // block, b.x0 // block): b for b in blocks}
    chunks = (tuple(min(block, h - y) for y in range(0, h, block)),
              tuple(min(block, w - x) for x in range(0, w, block)))
    state = {}

    def compute(block_id=None):
        if "classify" not in state:
            state["classify"] = delpnet_classifier(weights=weights, device=device, tta=tta)
        restored, _, _ = process_block(source, index[tuple(block_id)], grid, classify=state["classify"],
                                       device=device, **rl_kwargs)
        return restored

    return da.map_blocks(compute, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


# ------------------------------------------------------------------- any method, block by block
def lbdvd_block_kwargs(params: dict) -> dict:
    """The lbdvd method's keywords, as the block-wise LB-DVD takes them.

    Optics fields (``pixel_um=``, ``na=``, ...) become one :class:`~napari_refocus.optics.Optics`;
    keywords that only the in-memory path knows (``stride``, ``padding``, ...) at their defaults
    are dropped, other values are an error rather than silently ignored.
    """
    from .methods import get_method
    from .core.optics import Optics, resolve_optics

    fields = set(Optics().as_dict())
    rl_keys = ("iterations", "initial", "boundary", "min_level", "weights", "tta")
    out = {k: v for k, v in params.items() if k in rl_keys}
    optics = {k: v for k, v in params.items() if k in fields}
    if optics or params.get("optics") is not None:
        out["optics"] = resolve_optics(params.get("optics"), **optics)
    defaults = get_method("lbdvd").defaults
    other = {k: v for k, v in params.items() if k not in out and k not in fields and k != "optics"}
    bad = sorted(k for k, v in other.items() if k not in defaults or v != defaults[k])
    if bad:
        raise ValueError(f"lbdvd block by block (big images) does not take {', '.join(bad)}")
    return out


def block_bounds(image_shape, block: int = DEFAULT_BLOCK):
    """``[(y0, y1, x0, x1), ...]``: the output blocks of an image, row by row."""
    h, w = (int(n) for n in image_shape[-2:])
    return [(y0, min(h, y0 + block), x0, min(w, x0 + block))
            for y0 in range(0, h, block) for x0 in range(0, w, block)]


def restore_block(source, bounds, fn, *, halo: int, upscale: int = 1) -> np.ndarray:
    """``fn`` (2-D float32 image -> restored image, ``upscale`` x larger) on one block.

    The block ``bounds = (y0, y1, x0, x1)`` is read with up to ``halo`` pixels of context on
    every side, clipped to the image (not mirrored), so that the method meets the true image
    borders exactly as it does in memory; the result is cropped back to the block.
    """
    y0, y1, x0, x1 = bounds
    h, w = source.shape[-2:]
    ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
    out = np.asarray(fn(np.asarray(source[ya:yb, xa:xb], dtype=np.float32)), dtype=np.float32)
    r = int(upscale)
    return out[(y0 - ya) * r:(y1 - ya) * r, (x0 - xa) * r:(x1 - xa) * r]


def method_function(method: str, *, device="auto", **params):
    """``fn(image) -> restored float32`` running a registered method in memory (for blocks)."""
    from .methods import get_method, refocus_array

    m = get_method(method)

    def fn(region):
        return refocus_array(region, method=m, device=device, **params).image

    return fn, m


def iter_method_blocks(source, method: str, *, device="auto", block: int = DEFAULT_BLOCK, **params):
    """A registered method on a big image, one block at a time (generator).

    Yields ``(Progress, (y0, y1, x0, x1), restored block)``; the block is ``upscale`` x larger
    than its bounds for methods that upscale. ``lbdvd`` runs on the global patch grid
    (:func:`iter_refocus_blocks`, exact); any other method in memory on each block plus its
    ``halo`` of context.
    """
    if method == "lbdvd":
        for prog, b, out in iter_refocus_blocks(source, device=device, block=block, **lbdvd_block_kwargs(params)):
            yield prog, (b.y0, b.y1, b.x0, b.x1), out
        return
    fn, m = method_function(method, device=device, **params)
    bounds = block_bounds(source.shape, block)
    for k, b in enumerate(bounds):
        out = restore_block(source, b, fn, halo=m.halo, upscale=m.upscale)
        yield Progress(k + 1, len(bounds), f"{method}: blocks"), b, out


def lazy_method(source, method: str, *, device="auto", block: int = DEFAULT_BLOCK, **params):
    """A dask array that computes a registered method on ``source`` block by block when read.

    ``lbdvd`` uses :func:`lazy_refocus` (exact); any other method runs in memory on each block
    plus its ``halo`` of context. The result is ``upscale`` x larger than ``source``.
    """
    if method == "lbdvd":
        return lazy_refocus(source, device=device, block=block, **lbdvd_block_kwargs(params))
    import dask.array as da

    from .methods import get_method

    m = get_method(method)
    r = int(m.upscale)
    index = {(b[0] // block, b[2] // block): b for b in block_bounds(source.shape, block)}
    chunks = (tuple((y1 - y0) * r for (y0, y1, x0, _) in index.values() if x0 == 0),
              tuple((x1 - x0) * r for (y0, _, x0, x1) in index.values() if y0 == 0))
    state = {}

    def compute(block_id=None):
        if "fn" not in state:  # the network is loaded once per process, on first use
            state["fn"] = method_function(method, device=device, **params)[0]
        return restore_block(source, index[tuple(block_id)], state["fn"], halo=m.halo, upscale=r)

    return da.map_blocks(compute, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))
