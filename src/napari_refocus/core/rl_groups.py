"""Depth-variant Richardson-Lucy with neighbouring patches of one level in one frame.

The patches of one level within each ``group`` x ``group`` block of the patch grid are
deconvolved together: one FFT frame holds their union plus the context, and each patch's central
part is cut out of it. Each patch still gets its own level's PSF and the same triangular blend;
it sees more of its real neighbours; and when a block holds one level, the transforms cover about
a quarter of the pixels of one frame per patch (:func:`group_size`). The order in which frames are
run and patches added (:func:`group_jobs`) does not depend on which part of the grid is asked
for, so lbdvd's block form (:mod:`napari_refocus.methods.lbdvd_global`) takes the same float32
sums as the image in memory.
"""

from __future__ import annotations

import numpy as np

from .devices import resolve_device, run_chunked
from .optics import BACKGROUND, Optics
from .otf import fft_size, otf_bank
from .progress import Progress
from .rl_batch import CPU_BATCH, MIN_BATCH, richardson_lucy_batch
from .tiling import PatchGrid, patch_view, take_patches

#: the largest FFT frame (pixels a side) :func:`group_size` lets a group of patches share
GROUP_FRAME_MAX = 256


def group_frame(group: int, *, patch: int, stride: int, context: int, psf_size: int) -> int:
    """The FFT frame side of ``group`` x ``group`` neighbouring patches deconvolved together."""
    return fft_size((group - 1) * stride + patch + 2 * context + psf_size // 2)


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


def group_jobs(levels, grid_shape, group: int, rows=None, cols=None, *, group_cols: int):
    """``[(group number, level, patch numbers)]``: one Richardson-Lucy frame per level present in
    each group (levels 1..10; level 0 and background are left as they are), in the order
    everything is run and added (group, level, patch), which does not depend on which part of
    the grid is asked for. ``levels``: the levels of patches ``rows = (r0, r1)``, ``cols``
    (inclusive; default all) of a grid of ``grid_shape``; patch numbers are local to that part.
    Group numbers are row-major on :func:`group_grid`, ``group_cols`` columns wide."""
    lv = np.asarray(levels).reshape(-1)
    r0 = (rows or (0,))[0]
    c0, c1 = cols or (0, grid_shape[1] - 1)
    ncols = c1 - c0 + 1
    gcols = int(group_cols)
    ii, jj = np.divmod(np.arange(lv.size), ncols)
    ii, jj = ii + r0, jj + c0
    key = (ii // group) * gcols + jj // group
    work = (lv > 0) & (lv != BACKGROUND)
    order = np.lexsort((np.arange(lv.size), lv, key))
    jobs = {}
    for n in order[work[order]]:
        jobs.setdefault((int(key[n]), int(lv[n])), []).append(int(n))
    return [(g, L, np.asarray(p)) for (g, L), p in jobs.items()]


def iter_deconvolve_grouped(take_group, jobs, put, *, offsets, patch: int, size: int, context: int,
                            iterations: int, device, initial: str, boundary: str, batch_size, optics, report=None):
    """Run :func:`group_jobs`' frames: ``take_group(group numbers)`` gives their context-padded
    frames ``(n, size, size)``; for each patch of a job, ``put([patch number], its central
    patch x patch part)`` in job order. ``offsets(patch numbers)``: ``(dy, dx)`` of each patch in
    its group's frame (before the context). A generator yielding Progress per chunk of frames."""
    import torch

    optics = optics or Optics()
    dev = resolve_device(device)
    if batch_size is None:
        # 256-px frames hold 4x a 128-px frame's memory: 2 in flight, not 8
        batch_size = max(MIN_BATCH, CPU_BATCH // 4) if dev.type == "cpu" else 256
    shape = (fft_size(size + optics.psf_size // 2),) * 2

    def work(start, stop, dev_):
        chunk = jobs[start:stop]
        idx = np.array([g for g, _, _ in chunk])
        lv = np.array([L for _, L, _ in chunk])
        if len(idx) < MIN_BATCH:  # with a copy of its frame: see MIN_BATCH
            idx = np.concatenate([idx, np.repeat(idx[-1:], MIN_BATCH - len(idx))])
            lv = np.concatenate([lv, np.repeat(lv[-1:], MIN_BATCH - len(lv))])
        frame = (0, shape[1] - size, 0, shape[0] - size)
        obs = torch.nn.functional.pad(take_group(idx).to(dev_), frame)
        mask = None
        if boundary == "normalized":
            mask = torch.nn.functional.pad(torch.ones_like(obs[:1, :size, :size]), frame)
        needed, which = np.unique(lv, return_inverse=True)
        otf = otf_bank(optics, shape, dev_, needed)[torch.from_numpy(which.ravel()).to(dev_)]
        est = richardson_lucy_batch(obs, otf, iterations, mask=mask, initial=initial)
        return est[:stop - start, :size, :size].to("cpu")

    total = max(1, len(jobs))
    yield Progress(0, total, "deconvolve")
    done = 0
    for stop, frames in run_chunked(work, len(jobs), batch_size=batch_size, device=dev, report=report):
        for (_, _, patches), est in zip(jobs[done:stop], frames):
            for n, (dy, dx) in zip(patches.tolist(), offsets(patches)):
                put([n], est[None, context + dy:context + dy + patch, context + dx:context + dx + patch])
        done = stop
        yield Progress(done, total, "deconvolve")


def grouped_into(acc, padded, grid, levels, *, group, context, iterations, device, initial, boundary, batch_size,
                  optics, report):
    """:func:`iter_deconvolve`'s grouped depth-variant pass into the Accumulator ``acc``: the
    unchanged patches first, then :func:`group_jobs`' frames, read from ``padded`` (the image
    padded for :func:`group_grid`, which reaches further than the patch grid)."""
    ggrid = group_grid(grid, group)
    gview = patch_view(padded, ggrid, context)
    view = patch_view(padded, grid, context)[:grid.shape[0], :grid.shape[1]]
    p, s = grid.patch, grid.stride
    crop = slice(context, context + p)
    as_is = np.flatnonzero((levels == 0) | (levels == BACKGROUND))
    for start in range(0, len(as_is), 1024):
        index = as_is[start:start + 1024]
        acc.add(index, take_patches(view, index)[:, crop, crop])
    cols = grid.shape[1]

    def offsets(patches):
        i, j = np.divmod(np.asarray(patches), cols)
        return list(zip(((i % group) * s).tolist(), ((j % group) * s).tolist()))

    yield from iter_deconvolve_grouped(
        lambda index: take_patches(gview, index), group_jobs(levels, grid.shape, group, group_cols=ggrid.shape[1]), acc.add, offsets=offsets,
        patch=p, size=ggrid.patch + 2 * context, context=context, iterations=iterations, device=device,
        initial=initial, boundary=boundary, batch_size=batch_size, optics=optics, report=report)
