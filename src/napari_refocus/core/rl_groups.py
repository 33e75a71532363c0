"""Depth-variant Richardson-Lucy with neighbouring patches of one level in one frame.

The patches of one level within each ``group`` x ``group`` block of the patch grid are
deconvolved together: one FFT frame holds the box of the group's patches of that level plus the
context (:func:`job_boxes`), and each patch's central part is cut out of it. Each patch still
gets its own level's PSF and the same triangular blend; it sees more of its real neighbours;
when a block holds one level, the transforms cover about a quarter of the pixels of one frame
per patch (:func:`group_size`); and a level with a few patches in a corner of a group is
transformed in a frame of that corner, not of the whole group (on real BBBC006 planes with
several levels a group: 55-64 % of the transformed pixels of whole-group frames; BENCHMARKS.md
"LB-DVD speed"). Frames are transformed one shape at a time. The order in which frames are run
and patches added (:func:`group_jobs`, by frame shape) does not depend on which part of the grid
is asked for, and a part reads its frames' boxes from the classes of the whole groups around it,
so lbdvd's block form (:mod:`napari_refocus.methods.lbdvd_global`) takes the same float32 sums
as the image in memory.
"""

from __future__ import annotations

import numpy as np

from .devices import resolve_device
from .memory import SMALL_IMAGE_PIXELS
from .optics import BACKGROUND, Optics
from .otf import frame_size
from .progress import Progress, counted
from .rl_batch import iter_deconvolve_frames
from .tiling import PatchGrid

#: the largest FFT frame (pixels a side) :func:`group_size` lets a group of patches share
GROUP_FRAME_MAX = 256
#: group frames deconvolved at once on a CPU: 256-px frames hold 4x a 128-px frame's memory,
#: so 2 in flight, not 8
GROUP_CPU_BATCH = 2
#: the same for an image below :data:`~napari_refocus.core.memory.SMALL_IMAGE_PIXELS`, where a few
#: MB more do not matter: four frames ran lbdvd 8 % faster than two on a 2-core Xeon (0.211 vs
#: 0.229 s on a tilted 696x520 field; six: the same, eight: 0.218): a batch of two spends much
#: of each FFT call on per-call work. At 1024^2 four raised lbdvd's peak by ~5-9 B/px.
SMALL_GROUP_CPU_BATCH = 4


def cpu_group_batch(pixels: int) -> int:
    """Group frames deconvolved at once on a CPU for an image of ``pixels`` pixels."""
    return SMALL_GROUP_CPU_BATCH if pixels < SMALL_IMAGE_PIXELS else GROUP_CPU_BATCH


def group_frame(group: int, *, patch: int, stride: int, context: int, psf_size: int) -> int:
    """The FFT frame side of ``group`` x ``group`` neighbouring patches deconvolved together."""
    return frame_size((group - 1) * stride + patch + 2 * context, psf_size)


def group_size(*, patch: int, stride: int, context: int, psf_size: int) -> int:
    """How many neighbouring patches a side (1..8) share one Richardson-Lucy frame: the fewest
    transformed pixels per patch, in frames of at most :data:`GROUP_FRAME_MAX` px (or the one
    patch's own frame, if larger). At the paper's 84/42 grid: 4 (a 256 px frame for 16 patches,
    a quarter of 16 frames of 128 px each); a patch then sees more of its real neighbours."""
    one = group_frame(1, patch=patch, stride=stride, context=context, psf_size=psf_size)
    best, cost = 1, one * one
    for k in range(2, 9):
        side = group_frame(k, patch=patch, stride=stride, context=context, psf_size=psf_size)
        if side > max(GROUP_FRAME_MAX, one):
            break
        if side * side / (k * k) < cost:
            best, cost = k, side * side / (k * k)
    return best


def group_grid(grid: PatchGrid, group: int) -> PatchGrid:
    """The grid of ``group`` x ``group`` blocks of ``grid``'s patches: block ``(a, b)`` covers
    patches ``a*group .. a*group + group - 1`` (rows; columns alike) and covers them all."""
    return PatchGrid(grid.image_shape, patch=grid.patch + (group - 1) * grid.stride, stride=group * grid.stride,
                     origin=grid.origin)


def _patch_groups(levels, grid_shape, group: int, rows, cols, group_cols: int):
    """``(levels, row, column, group number, deconvolved)`` of each patch of ``levels`` (patches
    ``rows``, ``cols`` of a grid of ``grid_shape``, flattened; rows and columns on the whole grid;
    deconvolved: levels 1..10)."""
    lv = np.asarray(levels).reshape(-1)
    r0 = (rows or (0,))[0]
    c0, c1 = cols or (0, grid_shape[1] - 1)
    ii, jj = np.divmod(np.arange(lv.size), c1 - c0 + 1)
    ii, jj = ii + r0, jj + c0
    return lv, ii, jj, (ii // group) * int(group_cols) + jj // group, (lv > 0) & (lv != BACKGROUND)


def group_jobs(levels, grid_shape, group: int, rows=None, cols=None, *, group_cols: int):
    """``[(group number, level, patch numbers)]``: one Richardson-Lucy frame per level present in
    each group (levels 1..10; level 0 and background are left as they are), in the order
    everything is run and added (group, level, patch), which does not depend on which part of
    the grid is asked for. ``levels``: the levels of patches ``rows = (r0, r1)``, ``cols``
    (inclusive; default all) of a grid of ``grid_shape``; patch numbers are local to that part.
    Group numbers are row-major on :func:`group_grid`, ``group_cols`` columns wide."""
    lv, _, _, key, work = _patch_groups(levels, grid_shape, group, rows, cols, group_cols)
    order = np.lexsort((np.arange(lv.size), lv, key))
    jobs = {}
    for n in order[work[order]]:
        jobs.setdefault((int(key[n]), int(lv[n])), []).append(int(n))
    return [(g, L, np.asarray(p)) for (g, L), p in jobs.items()]


def job_boxes(levels, grid_shape, group: int, rows=None, cols=None, *, group_cols: int) -> dict:
    """``{(group number, level): (a0, a1, b0, b1)}``: the first and last patch row and column
    (0..group-1, within the group) holding each level in each group, over the patches
    ``rows``, ``cols`` of ``levels`` (as :func:`group_jobs`). Each job's frame covers only that
    box of its group (plus the context): a level with one patch in a group is transformed in a
    one-patch frame, not in the group's whole one."""
    lv, ii, jj, key, work = _patch_groups(levels, grid_shape, group, rows, cols, group_cols)
    if not work.any():
        return {}
    m = int(lv[work].max()) + 1  # (group number, level) as one integer
    key = key[work].astype(np.int64) * m + lv[work]
    order = np.argsort(key, kind="stable")
    keys, first = np.unique(key[order], return_index=True)
    a, b = (ii % group)[work][order], (jj % group)[work][order]
    box = np.stack([np.minimum.reduceat(a, first), np.maximum.reduceat(a, first),
                    np.minimum.reduceat(b, first), np.maximum.reduceat(b, first)], axis=1)
    return {(int(k) // m, int(k) % m): tuple(int(v) for v in row) for k, row in zip(keys, box)}


def grouped_region_into(acc, region, grid: PatchGrid, levels, *, group: int, context: int, iterations: int, device,
                        initial: str, boundary: str, batch_size=None, optics=None, report=None, rows=None, cols=None,
                        whole_groups=None):
    """Depth-variant RL of patches ``rows = (r0, r1)``, ``cols`` (inclusive; default all) of
    ``grid``, ``group`` x ``group`` patches of a level per frame, into the Accumulator ``acc``
    (over that part of the grid, numbered as ``levels``): the unchanged patches (level 0,
    background) first, then :func:`group_jobs`' frames, each patch added as it comes out.

    ``region``: the image (a torch tensor, or a :class:`~.tiling.MirroredImage`) from
    ``(r0 // group) * group * stride - context`` rows and the like columns on, mirrored past its
    borders, covering the groups of these patches with their context: the image as padded for
    :func:`group_grid` in memory (read frame by frame), a block's window of a big image. Both
    read the same frames and add in the same order, so a part of the grid gets the float32 sums
    the whole grid gets. Each job's frame covers the box of its group that holds its level
    (:func:`job_boxes`); a part that cuts groups gives ``whole_groups = (levels, rows, cols)``
    of the whole groups around it, so its boxes are the whole grid's. Jobs run shape by shape
    (in sorted order of their frames' (rows, columns)), then in :func:`group_jobs`' order. A
    generator yielding Progress per chunk of frames."""
    import torch

    s, p = grid.stride, grid.patch
    ggrid = group_grid(grid, group)
    r0 = (rows or (0,))[0]
    c0, c1 = cols or (0, grid.shape[1] - 1)
    ga, gb = r0 // group, c0 // group
    top, left = ga * group * s - context, gb * group * s - context
    size = ggrid.patch + 2 * context
    step = group * s
    # a tensor is read through a strided view; a MirroredImage (core.tiling) a frame at a time
    gview = region.unfold(0, size, step).unfold(1, size, step) if isinstance(region, torch.Tensor) else None
    lv = np.asarray(levels).ravel()
    nx = c1 - c0 + 1

    def origin(patches):  # each patch's top-left pixel in ``region``
        i, j = np.divmod(np.asarray(patches), nx)
        return (i + r0) * s - top, (j + c0) * s - left

    as_is = np.flatnonzero((lv == 0) | (lv == BACKGROUND))
    for start in range(0, len(as_is), 1024):
        index = as_is[start:start + 1024]
        ys, xs = origin(index)
        acc.add(index, torch.stack([region[y:y + p, x:x + p] for y, x in zip(ys.tolist(), xs.tolist())]))
    gcols = ggrid.shape[1]
    jobs = group_jobs(lv, grid.shape, group, rows=rows, cols=cols, group_cols=gcols)
    wl, wr, wc = whole_groups if whole_groups is not None else (lv, rows, cols)
    boxes = job_boxes(wl, grid.shape, group, wr, wc, group_cols=gcols)
    numbers = np.array([g for g, _, _ in jobs], dtype=np.int64)
    # each job's frame in its group's window: (first row, first column, rows, columns)
    frames = []
    for g, L, _ in jobs:
        a0, a1, b0, b1 = boxes[g, L]
        frames.append((a0 * s, b0 * s, (a1 - a0) * s + p + 2 * context, (b1 - b0) * s + p + 2 * context))

    def take(index):
        a, b = np.divmod(numbers[np.asarray(index)], gcols)
        a, b = a - ga, b - gb
        out = []
        for k, y, x in zip(np.asarray(index).tolist(), a.tolist(), b.tolist()):
            y0, x0, h, w = frames[k]
            if gview is not None:
                out.append(gview[y, x, y0:y0 + h, x0:x0 + w])
            else:
                out.append(region[y * step + y0:y * step + y0 + h, x * step + x0:x * step + x0 + w])
        return torch.stack(out)

    def put(index, unions):  # each job's frame without its context: cut out its patches
        for k, union in zip(np.asarray(index).tolist(), unions):
            patches = jobs[k][2]
            ys, xs = origin(patches)
            y0, x0 = frames[k][:2]
            ys = ys + top - numbers[k] // gcols * group * s - y0
            xs = xs + left - numbers[k] % gcols * group * s - x0
            # added in the job's patch order, as one patch at a time would be
            acc.add(patches, torch.stack([union[y:y + p, x:x + p] for y, x in zip(ys.tolist(), xs.tolist())]))

    dev = resolve_device(device)
    if batch_size is None:
        batch_size = GROUP_CPU_BATCH if dev.type == "cpu" else 256
    psf_size = (optics or Optics()).psf_size
    shapes = sorted({f[2:] for f in frames})
    total, done = max(1, len(jobs)), 0
    yield Progress(0, total, "deconvolve")
    for shape in shapes:  # one frame shape at a time (a batch of frames shares one FFT size)
        mine = np.array([k for k, f in enumerate(frames) if f[2:] == shape], dtype=np.int64)
        fft = tuple(frame_size(n, psf_size) for n in shape)
        # frames smaller than a group's in bigger batches (the same bytes in flight): fewer calls
        batch = max(batch_size, batch_size * GROUP_FRAME_MAX ** 2 // (fft[0] * fft[1]))
        ran_on = yield from counted(iter_deconvolve_frames(
            lambda i: take(mine[np.asarray(i)]), np.array([jobs[k][1] for k in mine], dtype=np.int64),
            lambda i, u: put(mine[np.asarray(i)], u), size=shape, context=context, iterations=iterations,
            device=dev, initial=initial, boundary=boundary, batch_size=batch, optics=optics, report=report),
            done, total)
        done += len(mine)
        if ran_on != dev:  # out of memory on the accelerator: the other shapes go to the CPU at once
            dev, batch_size = ran_on, GROUP_CPU_BATCH
