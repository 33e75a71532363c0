"""An empty canvas (:mod:`napari_refocus.core.padding`) through a method run and a defocus map:
the method sees the canvas filled, the caller gets it back as it was, and the map says that
nothing was read there (the never-worse gate's weights: :func:`.gate.unchanged_on`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core.optics import BACKGROUND
from ..core.padding import PAD_SIDE_PX, fill_padding, padding_mask, restore_padding, with_rim
from ..core.tiling import Region


def filled(image):
    """``(image for the method, mask or None)``: ``image`` itself when it has no canvas; else a
    float32 copy whose canvas and rim (:func:`~napari_refocus.core.padding.with_rim`, the mask
    returned) are filled by reflection."""
    mask = padding_mask(image)
    if mask is None:
        return image, None
    mask = with_rim(mask, image)
    return fill_padding(image, mask), mask


def mark_map(dmap, mask: np.ndarray):
    """A copy of a DefocusMap whose patches that are mostly canvas are background (the heat map,
    the CSV and the focus score then skip them, as they skip empty background)."""
    grid, s = dmap.grid, float(dmap.scale)
    size = max(1, int(round(grid.patch * s)))
    corners = np.rint(grid.corners() * s).astype(np.int64)
    h, w = mask.shape
    # each patch's canvas pixels from the mask's summed-area table (its window clipped to the image)
    table = np.zeros((h + 1, w + 1), np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    y0, x0 = np.clip(corners[..., 0], 0, h), np.clip(corners[..., 1], 0, w)
    y1, x1 = np.clip(corners[..., 0] + size, 0, h), np.clip(corners[..., 1] + size, 0, w)
    canvas = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    area = (y1 - y0) * (x1 - x0)
    levels = np.where((area == 0) | (2 * canvas > area), BACKGROUND, dmap.levels)
    return dataclasses.replace(dmap, levels=levels.astype(dmap.levels.dtype))


def on_canvas(dmap, mask):
    """:func:`mark_map` when there is a canvas (``mask`` not None), else the map as it is."""
    return dmap if mask is None else mark_map(dmap, mask)


def sample_filled(sample: np.ndarray, stride: int):
    """``(sample, found)``: a big image's strided sample (``image[::stride, ::stride]``) with its
    canvas filled, for the whole-image statistics the blocks share, and whether it had one."""
    mask = padding_mask(sample, min_side_px=max(3, PAD_SIDE_PX // int(stride)))
    return (sample, False) if mask is None else (fill_padding(sample, with_rim(mask, sample)), True)


#: extra context a block with a canvas is read with (see :func:`canvas_restore`)
FILL_MARGIN_PX = 128


def canvas_restore(restore, *, halo: int, upscale: int):
    """A block function ``restore(source, bounds)`` for an image with an empty canvas: each block
    is read with its halo plus :data:`FILL_MARGIN_PX`, the canvas (exact-zero squares,
    :func:`padding_mask` without the edge-strip rule, which needs whole rows) and its rim are
    filled in that window, the block is restored from it, and its canvas comes back as it was.
    A canvas pixel's fill is its mirror through the nearest data pixel, twice its distance to the
    data away: the margin makes the fill within the halo the whole image's wherever the canvas is
    within half the margin of data. The image in memory is filled from the whole image, so the
    two forms agree near the data, not bit for bit."""
    reach = int(halo) + FILL_MARGIN_PX

    def wrapped(source, bounds):
        y0, y1, x0, x1 = bounds
        h, w = source.shape[-2:]
        ya, yb, xa, xb = max(0, y0 - reach), min(h, y1 + reach), max(0, x0 - reach), min(w, x1 + reach)
        region = np.asarray(source[ya:yb, xa:xb])
        mask = padding_mask(region, edge_strips=False)
        if mask is None:
            return restore(Region(region, (ya, xa), (h, w)), bounds)
        mask = with_rim(mask, region)
        out = np.asarray(restore(Region(fill_padding(region, mask), (ya, xa), (h, w)), bounds), np.float32)
        core = (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))
        return restore_padding(out, region[core], mask[core], upscale=upscale)

    wrapped.halo = reach
    return wrapped
