"""Sample data shipped with the package (real BBBC006 images; see data/ATTRIBUTION.md)."""

from __future__ import annotations

import functools

import numpy as np

from ..core.resources import INFOCUS_SAMPLE as INFOCUS_FILE
from ..core.resources import data_dir

DEFOCUSED_FILE = "bbbc006_b14_s2_w1_z00_defocused.tif"
#: BBBC006 pixel size (20x objective, 2x binning), um
PIXEL_UM = 0.65
SAMPLE_LEVELS = (0.0, 8.0)
SAMPLE_SEED = 0


def infocus_image() -> np.ndarray:
    """Real in-focus BBBC006 phalloidin image (520x696 uint16, plane z_16)."""
    from . import read_image

    return read_image(data_dir() / INFOCUS_FILE)[0]


def real_defocused_image() -> np.ndarray:
    """Real out-of-focus BBBC006 Hoechst image (520x696 uint16, plane z_00, 32 um off)."""
    from . import read_image

    return read_image(data_dir() / DEFOCUSED_FILE)[0]


@functools.lru_cache(maxsize=1)
def _pair():
    from ..core.forward import simulate, tilted_level_field

    gt = infocus_image()
    field = tilted_level_field(gt.shape, low=SAMPLE_LEVELS[0], high=SAMPLE_LEVELS[1])
    blurred = simulate(gt, level_field=field, seed=SAMPLE_SEED)
    for a in (gt, field, blurred):
        a.setflags(write=False)
    return blurred, gt, field


def synthetic_pair():
    """Deterministic (defocused, ground_truth, level_field) made from :func:`infocus_image`.

    The defocus tilts from level 0 (in focus) at the left edge to level 8 (16 um) at the
    right edge, with Poisson noise (seed 0). Arrays are read-only; copy before editing.
    """
    return _pair()


def oracle_level_map(level_field, grid) -> np.ndarray:
    """Per-patch level (rounded mean of a per-pixel level field over each patch's centre)."""
    corners = grid.corners()
    half = grid.stride // 2
    out = np.zeros(grid.shape, dtype=np.int64)
    h, w = level_field.shape
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            y0, x0 = corners[i, j]
            cy, cx = y0 + grid.patch // 2, x0 + grid.patch // 2
            win = level_field[max(0, cy - half) : min(h, cy + half), max(0, cx - half) : min(w, cx + half)]
            if win.size == 0:  # patch centre beyond the image: use the nearest pixels
                win = level_field[min(cy, h - 1) : min(cy, h - 1) + 1, min(cx, w - 1) : min(cx, w - 1) + 1]
            out[i, j] = int(np.rint(win.mean()))
    return out
