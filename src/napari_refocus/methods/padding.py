"""An empty canvas (:mod:`napari_refocus.core.padding`) through a method run and a defocus map:
the method sees the canvas filled, the caller gets it back as it was, and the map says that
nothing was read there (the never-worse gate's weights: :func:`.gate.unchanged_on`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core.optics import BACKGROUND
from ..core.padding import fill_padding, padding_mask, with_rim


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
    levels = dmap.levels.copy()
    size = max(1, int(round(grid.patch * s)))
    corners = np.rint(grid.corners() * s).astype(np.int64)
    for i in range(levels.shape[0]):
        for j in range(levels.shape[1]):
            y, x = corners[i, j]
            part = mask[max(0, y):y + size, max(0, x):x + size]
            if part.size == 0 or part.mean() > 0.5:
                levels[i, j] = BACKGROUND
    return dataclasses.replace(dmap, levels=levels)


def on_canvas(dmap, mask):
    """:func:`mark_map` when there is a canvas (``mask`` not None), else the map as it is."""
    return dmap if mask is None else mark_map(dmap, mask)
