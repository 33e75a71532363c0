"""lbdvd's exact block form at any sampling: every block from the image's global grids.

In memory (:mod:`.lbdvd`) lbdvd makes DelpNet's map on the *canonical* image (the whole image
resampled to DelpNet's sampling and intensity scale, 84/42 patches), gates its levels by the
evidence (:func:`.gate.gate_levels`), gives each patch of a *native* grid (``frame.patch`` px,
:func:`.frames.native_levels`) the class of the nearest map patch, deconvolves those patches,
blends them with triangular weights, and mixes the result with the input by weights bilinear
between map patch centres (:mod:`.gate`). Every one of these steps gives a pixel a value that
depends only on pixels and patches near it, on grids fixed by the whole image's shape.

Design (chosen over a first pass that maps the whole image: a block of a lazy dask array sees
only its own pixels plus a halo, so the map cannot be shared between blocks): an output block
``[y0, y1) x [x0, x1)``

1. finds the native patches that touch it (:func:`.lbdvd_blocks.grid_block` on the native grid)
   and the map patches they take their class from, plus those the gate weights read
   (:func:`.gate.patch_span`);
2. classifies that rectangle of the canonical grid from the native pixels under it
   (:class:`.canonical_blocks.CanonicalView`: :func:`~napari_refocus.core.resample.resample_window`
   on the global grid, the whole image's intensity statistics), exactly as in memory;
3. deconvolves its native patches and blends them in the in-memory order (unchanged patches
   first, then the deconvolved ones, each in grid order; :class:`~napari_refocus.core.tiling.Accumulator`),
   so every float32 sum is taken in the same order;
4. gates the result with the weights of its own pixels.

So a block equals the same pixels of the in-memory result bit for bit (tested at 0.65, 0.325 and
0.108 um pixels), and a block reads at most :func:`block_halo` native pixels beyond its bounds
(``restore.halo``; memory: one block plus that halo). The whole image's statistics come once per
image (``Method.image_stats``, :func:`.canonical_blocks.sample_stats`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..core.optics import BACKGROUND
from ..core.progress import drain
from ..core.tiling import PATCH, STRIDE, Accumulator, PatchGrid, patch_grid
from . import gate
from .canonical_blocks import CanonicalView, map_grid, map_patches, read_region
from .deep import TOP
from .frames import coarse_frame, native_stride, rl_frame, rl_group
from .lbdvd_blocks import HALO, block_patches, check_block_params, grid_block


def block_halo(*, patch: int, context: int, scale: float, stride: int = 0, group: int = 1,
               gated: bool = True) -> int:
    """Native pixels beyond its bounds a block reads, for native patches of ``patch`` px with
    ``context`` px of context and ``scale`` native pixels per map pixel.

    Native patches touching the block reach ``patch - 1 + context`` (``(group - 1) * stride``
    more when ``group`` x ``group`` patches share a frame); the map patch nearest to a
    native patch's centre lies within half a stride (21 canonical px) of it and reaches 42 more,
    the gate's two map patches around a pixel reach a patch and a stride (126 canonical px: a
    pixel past the grid's last patch centre reads the two last patches) and their neighbours a stride
    more (:func:`.gate.neighbour_agreement`; ``gated=False``: the deep pass, which reads no gate);
    the resampling adds its filter's reach (``scale`` + 1 px)."""
    # patches deconvolved in groups (core.rl_groups.group_jobs) read their group's frame, and the
    # frame's box is read from the classes of the whole group (core.rl_groups.job_boxes): up to
    # (group - 1) strides beyond the patch on either side, and the map patches of those classes
    grouped = (group - 1) * stride
    reach_gate = gate.weights_reach(scale) if gated else 0
    if scale == 1.0:  # the map's patches are the native ones
        return max(HALO + grouped, math.ceil(reach_gate))
    reach_map = patch / 2 + (STRIDE // 2 + PATCH // 2 + 2) * scale + grouped
    return int(math.ceil(max(patch - 1 + context + grouped, reach_map, reach_gate) + max(scale, 1.0) + 2))


def _within(rows, whole) -> slice:
    """``rows`` (first, last) as a slice of the rows ``whole`` (first, last) around them."""
    return slice(rows[0] - whole[0], rows[1] - whole[0] + 1)


def whole_groups(rows, group: int, n: int) -> tuple[int, int]:
    """The patch rows (first, last; columns alike) of the whole ``group``-row groups of a grid of
    ``n`` rows that the rows ``rows = (first, last)`` touch: a block's frames are read from the
    classes of whole groups, as in memory (:func:`~napari_refocus.core.rl_groups.job_boxes`)."""
    a, b = (int(v) for v in rows)
    return a // group * group, min(n - 1, b // group * group + group - 1)


@dataclass(frozen=True)
class Grids:
    """The global grids of one image: the map's (canonical pixels) and the native RL grid."""

    map_grid: PatchGrid
    native: PatchGrid
    scale: float  # native pixels per map pixel

    def map_rows(self, axis: int, first: int, last: int) -> np.ndarray:
        """The map patch (row or column) each native patch ``first..last`` takes its class from
        (the one whose centre is nearest, as :func:`.frames.native_levels`)."""
        k = np.arange(first, last + 1)
        if self.scale == 1.0:
            return k
        g, n = self.map_grid, self.native
        centre = (k * n.stride + (n.patch - 1) / 2) / self.scale
        idx = np.rint((centre - (g.patch - 1) / 2) / g.stride).astype(int)
        return np.clip(idx, 0, g.shape[axis] - 1)


@functools.lru_cache(maxsize=8)
def grids(native_shape, frame, stride: int) -> Grids:
    """The :class:`Grids` of a native image of ``native_shape`` for an :class:`~.frames.RlFrame`."""
    mgrid = map_grid(native_shape, scale=frame.scale)
    if frame.scale == 1.0:
        return Grids(mgrid, mgrid, 1.0)
    return Grids(mgrid, patch_grid(native_shape, patch=frame.patch, stride=native_stride(frame, stride)), frame.scale)


def deconvolve_block(source, blk, grid: PatchGrid, levels, *, context: int, iterations: int, device, optics,
                     group: int = 1, whole=None):
    """The block's owned pixels after depth-variant RL of its native patches (``levels`` on its
    sub-grid), blended in the in-memory order (float32, clipped at 0); ``group``: as
    :func:`~napari_refocus.core.rl.iter_deconvolve`'s; ``whole``: ``(levels, rows, cols)`` of the
    whole groups around the block (:func:`whole_groups`), which fix each frame's box."""
    import torch

    from ..core.rl import deconvolve_patches

    if group > 1:
        return _deconvolve_block_grouped(source, blk, grid, levels, context=context, iterations=iterations,
                                         device=device, optics=optics, group=group, whole=whole)
    patches, sub = block_patches(source, blk, grid, context)
    lv = np.asarray(levels).ravel()
    crop = slice(context, context + grid.patch)
    acc = Accumulator(sub)
    as_is = np.flatnonzero((lv == 0) | (lv == BACKGROUND))  # as core.rl.iter_deconvolve: these first
    acc.add(as_is, patches[torch.from_numpy(as_is)][:, crop, crop])
    todo = np.flatnonzero((lv > 0) & (lv != BACKGROUND))
    if len(todo):
        rest = drain(deconvolve_patches(patches, lv, context=context, iterations=iterations, device=device,
                                        optics=optics))
        acc.add(todo, rest[torch.from_numpy(todo)])
    oy, ox = blk.y0 - blk.rows[0] * grid.stride, blk.x0 - blk.cols[0] * grid.stride
    return acc.result()[oy:oy + blk.y1 - blk.y0, ox:ox + blk.x1 - blk.x0].clamp_min(0).numpy()


def _deconvolve_block_grouped(source, blk, grid: PatchGrid, levels, *, context, iterations, device, optics, group,
                              whole=None):
    """:func:`deconvolve_block` with ``group`` x ``group`` patches of a level per frame: the
    block's window of the image, mirrored as in memory, through the in-memory code
    (:func:`~napari_refocus.core.rl_groups.grouped_region_into`)."""
    import torch

    from ..core.rl_groups import group_grid, grouped_region_into

    s, p = grid.stride, grid.patch
    ggrid = group_grid(grid, group)
    (r0, r1), (c0, c1) = blk.rows, blk.cols
    top, left = r0 // group * group * s - context, c0 // group * group * s - context
    bottom = r1 // group * group * s + ggrid.patch + context
    right = c1 // group * group * s + ggrid.patch + context
    region = torch.from_numpy(np.ascontiguousarray(read_region(source, top, bottom, left, right)))
    ny, nx = blk.sub_shape
    acc = Accumulator(PatchGrid(((ny - 1) * s + p, (nx - 1) * s + p), patch=p, stride=s))
    drain(grouped_region_into(acc, region, grid, levels, group=group, context=context, iterations=iterations,
                              device=device, initial="observed", boundary="normalized", optics=optics,
                              rows=blk.rows, cols=blk.cols, whole_groups=whole))
    oy, ox = blk.y0 - r0 * s, blk.x0 - c0 * s
    return acc.result()[oy:oy + blk.y1 - blk.y0, ox:ox + blk.x1 - blk.x0].clamp_min(0).numpy()


def block_runner(params, *, device, stats=None, small=None):
    """lbdvd's ``Method.block_runner``: ``restore(source, bounds) -> float32 block`` equal to the
    same pixels of the in-memory run, for any objective (see the module doc). ``small(whole,
    pads, params, device)``: the in-memory result of an image below one DelpNet patch, mirrored
    by ``pads`` (:func:`.gate.mirror_padding`), run once and cut into blocks (None: such an
    image is refused, as the map refuses it).

    ``params``: a parsed :class:`~.lbdvd.LbdvdParams` (a stride other than 42, rectangular
    montage or zero padding is a ValueError); ``stats``: the canonical image's intensity
    statistics (lbdvd's ``image_stats``). ``restore.halo``: how far beyond its bounds a block
    reads ``source`` (any 2-D array-like in the whole image's coordinates).
    """
    from .canonical import delpnet, map_weights
    from .defocus import check_map_size, map_frame

    check_block_params(params)
    frame = rl_frame(params.optics, params.weights)
    scale, table = map_frame(params.optics, weights=params.weights)
    beyond = gate.defocused_classes(table, params.optics)
    map_stats = stats if params.normalise else None
    # the pass beyond the top class (methods.deep), block by block as in memory
    deep = _DeepBlocks(coarse_frame(params.optics, params.weights), params, map_table=table,
                       stats=map_stats) if params.beyond_top else None
    stride = native_stride(frame, params.stride)
    group = rl_group(frame, patch=frame.patch, stride=stride, padding=params.padding)
    state = {}

    def restore(source, bounds):
        y0, y1, x0, x1 = (int(b) for b in bounds)
        if "fits" not in state:  # once, on the first block: does one patch fit the image?
            state["fits"] = gate.map_fits(source.shape, params.optics)
            pads = None if state["fits"] or small is None else gate.mirror_padding(source.shape, params.optics)
            if pads is not None:  # below one patch: the whole of it run once in memory, as the image in memory is
                state["small"] = small(np.asarray(source[0:source.shape[-2], 0:source.shape[-1]]), pads, params,
                                       device)
            elif not state["fits"]:
                check_map_size(source.shape, scale)  # refused, as the map refuses it
        if "small" in state:
            return state["small"][y0:y1, x0:x1]
        if "model" not in state:  # the network once per run, on the first block
            # the map's own network (int8 on the CPU when asked), so a block's classes are memory's
            state["model"] = delpnet(map_weights(params.weights, params.optics), device)
        g = grids(tuple(int(n) for n in source.shape[-2:]), frame, params.stride)
        blk = grid_block(g.native, (y0, y1, x0, x1))
        # the classes of the whole groups around the block: they fix its frames (core.rl_groups.job_boxes)
        wrows, wcols = whole_groups(blk.rows, group, g.native.shape[0]), whole_groups(blk.cols, group,
                                                                                       g.native.shape[1])
        krows, kcols = g.map_rows(0, *wrows), g.map_rows(1, *wcols)
        span = ((int(krows.min()), int(krows.max())), (int(kcols.min()), int(kcols.max())))
        if params.never_worse:
            wspan = gate.neighbour_span(gate.patch_span((y0, y1, x0, x1), g.map_grid.shape, scale=scale,
                                                        patch=g.map_grid.patch, stride=g.map_grid.stride),
                                        g.map_grid.shape)
            span = tuple((min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(span, wspan))
        if deep is not None:  # and the map patches the deep rule reads (module .deep)
            span = tuple((min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(span, deep.map_span(source, bounds)))
        (r0, r1), (c0, c1) = span
        view = CanonicalView(source, scale=scale, stats=map_stats)
        probs, levels = map_patches(view, g.map_grid, (r0, r1), (c0, c1), model=state["model"], device=device,
                                    tta=params.tta)
        run_levels = gate.gate_levels(probs, levels, beyond) if params.never_worse else levels
        around = run_levels[np.ix_(krows - r0, kcols - c0)]
        native = around[_within(blk.rows, wrows), _within(blk.cols, wcols)]
        restored = deconvolve_block(source, blk, g.native, native, context=frame.context,
                                    iterations=params.iterations, device=device, optics=frame.optics, group=group,
                                    whole=(around, wrows, wcols))
        if deep is not None and (levels == TOP).any():
            deep.into(restored, source, bounds, levels, (r0, c0), g.map_grid, model=state["model"], device=device)
        if not params.never_worse:
            return restored
        v, c = gate.patch_evidence(probs, levels, beyond)
        w = gate.pixel_weights(v, c, grid_shape=g.map_grid.shape, bounds=(y0, y1, x0, x1), scale=scale,
                               patch=g.map_grid.patch, stride=g.map_grid.stride, offset=(r0, c0))
        return gate.blend(read_region(source, y0, y1, x0, x1), restored, w)

    restore.halo = block_halo(patch=frame.patch, context=frame.context, scale=frame.scale,
                              stride=stride, group=group, gated=params.never_worse)
    if deep is not None:
        restore.halo = max(restore.halo, deep.halo)
    return restore


class _DeepBlocks:
    """The deep pass of :func:`.lbdvd.iter_deep_pass` for one block: the coarse reading of the
    coarse native patches touching it (:mod:`.deep`), their deconvolution on the coarse grid and
    the same blend, with the same float32 operations as in memory."""

    def __init__(self, cframe, params, *, map_table, stats):
        self.frame, self.params, self.map_table, self.stats = cframe, params, map_table, stats
        self.stride = native_stride(cframe, STRIDE)
        self.group = rl_group(cframe, patch=cframe.patch, stride=self.stride, padding=params.padding)
        self.halo = block_halo(patch=cframe.patch, context=cframe.context, scale=cframe.scale, stride=self.stride,
                               group=self.group, gated=False)

    def _parts(self, source, bounds):
        """The coarse grids, the block on the coarse native grid, and the coarse reading's
        rows/columns each of its native patches takes its class from."""
        cg = grids(tuple(int(n) for n in source.shape[-2:]), self.frame, STRIDE)
        blk = grid_block(cg.native, tuple(int(b) for b in bounds))
        # of the whole groups around the block, which fix its frames (as block_runner's)
        wrows = whole_groups(blk.rows, self.group, cg.native.shape[0])
        wcols = whole_groups(blk.cols, self.group, cg.native.shape[1])
        return cg, blk, cg.map_rows(0, *wrows), cg.map_rows(1, *wcols), wrows, wcols

    def map_span(self, source, bounds):
        """The map patches (rows, cols inclusive) the deep rule reads for this block."""
        from .deep import COARSE, nearest

        cg, _, krows, kcols, _, _ = self._parts(source, bounds)
        mgrid = map_grid(tuple(int(n) for n in source.shape[-2:]), scale=self.frame.scale / COARSE)
        out = []
        for axis, k in ((0, krows), (1, kcols)):
            near = nearest(mgrid.shape[axis], mgrid, cg.map_grid, axis, factor=COARSE, first=int(k.min()),
                           count=int(k.max() - k.min() + 1))
            out.append((int(near.min()), int(near.max())))
        return tuple(out)

    def into(self, restored, source, bounds, map_levels, map_offset, mgrid, *, model, device):
        """Put the deep pass into ``restored`` (this block's float32 result, overwritten)."""
        from .deep import deep_patches

        cg, blk, krows, kcols, wrows, wcols = self._parts(source, bounds)
        if min(cg.map_grid.image_shape) < PATCH:  # as in memory: no coarse reading of so small an image
            return
        (r0, r1), (c0, c1) = (int(krows.min()), int(krows.max())), (int(kcols.min()), int(kcols.max()))
        view = CanonicalView(source, scale=self.frame.scale, stats=self.stats)
        _, clevels = map_patches(view, cg.map_grid, (r0, r1), (c0, c1), model=model, device=device,
                                 tta=self.params.tta)
        table = self.frame.optics.defocus_table_um
        is_deep = deep_patches(clevels, table, map_levels, self.map_table, coarse_grid=cg.map_grid, map_grid=mgrid,
                               coarse_rows=(r0, r1), coarse_cols=(c0, c1), map_offset=map_offset)
        around = np.where(is_deep, clevels, 0)[np.ix_(krows - r0, kcols - c0)]
        native = around[_within(blk.rows, wrows), _within(blk.cols, wcols)]
        if not (native > 0).any():
            return
        y0, y1, x0, x1 = (int(b) for b in bounds)
        b = deconvolve_block(source, blk, cg.native, native, context=self.frame.context,
                             iterations=self.params.iterations, device=device, optics=self.frame.optics,
                             group=self.group, whole=(around, wrows, wcols))
        s, p = cg.native.stride, cg.native.patch
        ny, nx = blk.sub_shape
        share = deep_share(PatchGrid(((ny - 1) * s + p, (nx - 1) * s + p), patch=p, stride=s), native)
        oy, ox = y0 - blk.rows[0] * s, x0 - blk.cols[0] * s
        combine(restored, read_region(source, y0, y1, x0, x1), b, share[oy:oy + y1 - y0, ox:ox + x1 - x0])


def deep_share(grid: PatchGrid, levels, weights: str = "triangular") -> np.ndarray:
    """The deep patches' (``levels`` > 0 on ``grid``) share of the montage weight at every pixel
    of ``grid`` (float32 0..1): the ``D`` of :func:`.lbdvd.iter_deep_pass`, the same float32 sums
    for the whole image and for a block's sub-grid."""
    import torch

    acc = Accumulator(grid, weights=weights)
    todo = np.flatnonzero(np.asarray(levels).ravel() > 0)
    for start in range(0, len(todo), 64):  # bounded: 64 patches of ones at a time
        index = todo[start:start + 64]
        acc.add(index, torch.ones((len(index), grid.patch, grid.patch)))
    return acc.result().numpy()


def combine(restored, image, deep, share) -> None:
    """``restored = deep + (1 - share) (restored - image)`` where ``share`` > 0, in place, in
    float32 (:func:`.lbdvd.iter_deep_pass`): the same operations in memory and block by block."""
    on = share > 0
    a = restored[on]
    a -= np.asarray(image, dtype=np.float32)[on]
    a *= np.float32(1.0) - share[on]
    a += deep[on]
    restored[on] = a
