"""An image's empty canvas: found, filled for the methods, given back as it was.

A stitched mosaic's margins and holes, a rotated or registered image's corners and edge strips
are exact zeros, not data. Seen as data, the step from the cells to the zeros is the sharpest
thing in the image: DelpNet reads the patches along it as in focus, Richardson-Lucy rings on
it, and the learned methods' intensity scaling counts the zeros. So the canvas is filled by
reflecting the data across its edge (what every method already does at the image's own
border) before a method runs, and its pixels are set back afterwards.

What counts as canvas: pixels that are exactly 0 and lie in a 0-valued square of
``min_side_px`` (33 px: in a real camera image, noise makes such a square impossible), or in
whole rows or columns of zeros at the image's edge (a registration shift's strip). A
background-subtracted image clipped at 0 can have such squares too; filling them was measured
neutral or better there (BENCHMARKS.md, "Never worse").
"""

from __future__ import annotations

import numpy as np

#: side of the smallest all-zero square that counts as canvas (odd: the opening is centred)
PAD_SIDE_PX = 33
#: how far from the canvas a dark data pixel is taken as the canvas's rim: a rotated or shifted
#: image's edge is a rim of pixels interpolated with the zeros (1 px for bilinear, 2 for cubic)
RIM_PX = 2
#: a rim pixel is darker than this percentile of the data
RIM_PERCENTILE = 1.0


def _edge_strips(zero: np.ndarray) -> np.ndarray:
    """Whole rows and columns of zeros that run in from the image's edge."""
    out = np.zeros(zero.shape, bool)
    for axis in (0, 1):
        full = zero.all(axis=1 - axis)  # a whole row (axis 0) or column (axis 1) of zeros
        n = full.size
        top = int(np.argmin(full)) if not full.all() else n
        bottom = int(np.argmin(full[::-1])) if not full.all() else n
        index = [slice(None), slice(None)]
        if top:
            index[axis] = slice(0, top)
            out[tuple(index)] = True
        if bottom:
            index[axis] = slice(n - bottom, n)
            out[tuple(index)] = True
    return out


def padding_mask(image, *, min_side_px: int = PAD_SIDE_PX, edge_strips: bool = True) -> np.ndarray | None:
    """Boolean mask (y, x) of the empty canvas in a 2-D image, or None when it has none.

    ``min_side_px``: the side of the smallest square of exact zeros that counts (odd).
    ``edge_strips``: also whole rows and columns of zeros at the edge (False for a window of a
    bigger image, whose rows are not the image's). An image that is all zeros has no data to
    fill from: None.
    """
    from scipy import ndimage as ndi

    arr = np.asarray(image)
    zero = arr == 0
    if not zero.any() or zero.all():
        return None
    side = int(min_side_px) | 1  # an odd square: the erosion and the dilation are centred alike
    strips = _edge_strips(zero) if edge_strips else np.zeros(zero.shape, bool)
    # every all-zero square of `side` px holds a whole b x b block of a grid of b-px blocks: without
    # one there is nothing to open, and the filters (~0.25 s a 4 Mpx image with scattered zeros,
    # run once per entry point: the run, its map, the gate's map) are skipped
    b = side // 2
    (h, w), hb, wb = zero.shape, zero.shape[0] // b * b, zero.shape[1] // b * b
    if not (hb and wb and zero[:hb, :wb].reshape(hb // b, b, wb // b, b).all(axis=(1, 3)).any()):
        return strips if strips.any() else None
    core = ndi.minimum_filter(zero.view(np.uint8), size=side, mode="constant", cval=1)
    mask = ndi.maximum_filter(core, size=side, mode="constant", cval=0).view(bool)  # the opening: within zero
    mask |= strips
    return mask if mask.any() else None


def with_rim(mask: np.ndarray, image, *, rim_px: int = RIM_PX) -> np.ndarray:
    """The canvas and its rim: the data pixels within ``rim_px`` of it (a square neighbourhood)
    that are darker than the data's :data:`RIM_PERCENTILE`th percentile, as interpolation with
    the zeros leaves them. A straight cut (a mosaic's margin) has no such rim: its edge pixels
    are data as bright as any, and stay the method's."""
    from scipy import ndimage as ndi

    arr = np.asarray(image)
    if rim_px <= 0:
        return mask
    near = ndi.maximum_filter(mask.view(np.uint8), size=2 * int(rim_px) + 1, mode="constant", cval=0).view(bool)
    near &= ~mask
    low = np.percentile(arr[~mask], RIM_PERCENTILE)
    return mask | (near & (arr < low))


#: rows of the image filled or given back at a time (the index arrays of a band, not of the image)
BAND_ROWS = 256


def fill_padding(image, mask: np.ndarray) -> np.ndarray:
    """float32 copy of ``image`` with its canvas (``mask``) filled by reflecting the data across
    the canvas's edge: each canvas pixel takes the value mirrored through its nearest data pixel,
    or that nearest pixel's value where the mirror point is canvas or outside the image.

    Along a straight edge this is numpy's ``reflect`` padding, bit for bit. Memory: the copy,
    the nearest-pixel indices (int32, 8 bytes a pixel, freed on return) and a band's indices."""
    from scipy import ndimage as ndi

    arr = np.asarray(image)
    h, w = arr.shape
    out = arr.astype(np.float32, copy=True)
    iy, ix = ndi.distance_transform_edt(mask, return_distances=False, return_indices=True)
    for r0 in range(0, h, BAND_ROWS):
        py, px = np.nonzero(mask[r0:r0 + BAND_ROWS])
        py += r0
        qy, qx = iy[py, px], ix[py, px]
        ry, rx = 2 * qy - py, 2 * qx - px
        ok = (ry >= 0) & (ry < h) & (rx >= 0) & (rx < w)
        ok[ok] = ~mask[ry[ok], rx[ok]]
        values = arr[qy, qx].astype(np.float32)
        values[ok] = arr[ry[ok], rx[ok]]
        out[py, px] = values
    return out


def restore_padding(restored: np.ndarray, image, mask: np.ndarray, *, upscale: int = 1) -> np.ndarray:
    """Give a method's output the input's values where ``mask`` (the region it saw filled) is set
    (in place, a band of rows at a time; for an x2 method, ``upscale`` x the mask's size, each
    input pixel repeated) and return it."""
    arr = np.asarray(image)
    for r0 in range(0, mask.shape[0], BAND_ROWS):
        ys, xs = np.nonzero(mask[r0:r0 + BAND_ROWS])
        ys += r0
        values = arr[ys, xs].astype(restored.dtype)
        for dy in range(upscale):
            for dx in range(upscale):
                restored[ys * upscale + dy, xs * upscale + dx] = values
    return restored


def padding_note(mask: np.ndarray) -> str:
    """One line for a result's notes (provenance)."""
    return (f"empty canvas (exact zeros and the dark rim interpolation left), {100 * float(mask.mean()):.1f} % "
            "of the image: filled by reflection for the method, given back as it was")
