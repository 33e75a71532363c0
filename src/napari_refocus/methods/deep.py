"""Defocus beyond DelpNet's top class: a second reading of the image at half its sampling.

DelpNet's top class is 20 um of defocus at the paper's objective (18.7 um with the default
exact PSF), and anything farther reads as that class too: held-out fields blurred at 20, 24, 28
and 32 um read 9.6-9.9 on average. BBBC006's own stacks reach 32 um from focus. Blur is
measured in pixels, so the image resampled to half its size shows a defocus as a blur half as
wide, and the same network tells those depths apart there: 5.1, 6.5, 7.6, 8.8 at 20, 24, 28, 32
um, rising from 0 to 36 um (BENCHMARKS.md, "Defocus beyond the top class").

So where the map has patches at the top class, it reads the image a second time (the *coarse
reading*): the canonical image at twice the pixel (:data:`COARSE`), 84-px patches every 42 px,
the image's own intensity scale, with its own classes in um measured like the map's
(:func:`.class_table.response_table` with ``coarse=2``; at the default objective 22.2, 26.0,
29.5, 32.7, 35.5 um for coarse classes 6..10). A patch of that coarse grid is **deep** when

* the map patch nearest to its centre is at the top class (not background), and
* its coarse class reads a defocus beyond the top class's.

A deep patch's defocus is its coarse class's (:attr:`CoarseReading.defocus_um`); lbdvd
deconvolves it on the coarse grid (native patches twice as wide, the user's PSF at that
defocus; :mod:`.lbdvd`). The map reports it per map patch (:func:`deep_um_on_map`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.optics import BACKGROUND
from ..core.tiling import PATCH, STRIDE, PatchGrid

#: the coarse reading's pixel, in the map's pixels
COARSE = 2
#: DelpNet's top class
TOP = BACKGROUND - 1


@dataclass(frozen=True)
class CoarseReading:
    """DelpNet's second reading of an image at :data:`COARSE` x the map's pixel.

    grid : the patch grid on the coarse canonical image (84/42)
    scale : native image pixels per coarse pixel (``COARSE`` x the map's ``scale``)
    levels : (rows, cols) int64 coarse classes 0..10, or 11 for background
    deep : (rows, cols) bool, the patches read beyond the map's top class (see the module doc)
    defocus_um : the defocus (um) of each coarse class 0..10 for the image's objective
    """

    grid: PatchGrid
    scale: float
    levels: np.ndarray
    deep: np.ndarray
    defocus_um: tuple

    def deep_defocus_um(self) -> np.ndarray:
        """(rows, cols) float32: each deep patch's defocus (um), NaN elsewhere."""
        table = np.append(np.asarray(self.defocus_um, np.float32), np.nan)
        return np.where(self.deep, table[np.clip(self.levels, 0, BACKGROUND)], np.float32(np.nan))

    def provenance(self) -> dict:
        """What the reading found, for a run's provenance (JSON-able)."""
        um = self.deep_defocus_um()[self.deep]
        return {"coarse_pixel": COARSE, "deep_patches": int(self.deep.sum()),
                "patches": int(self.deep.size), "class_defocus_um": [round(float(z), 4) for z in self.defocus_um],
                "deep_defocus_um": [round(float(um.min()), 3), round(float(um.max()), 3)] if um.size else []}


def nearest(n_to: int, to: PatchGrid, frm: PatchGrid, axis: int, *, factor: float, first: int = 0,
            count: int | None = None) -> np.ndarray:
    """For grid lines ``first .. first + count - 1`` of ``frm`` along ``axis``, the line of ``to``
    (``n_to`` lines) whose patch centre is nearest to theirs; ``factor``: ``to``'s pixels per
    pixel of ``frm``."""
    k = np.arange(first, first + (frm.shape[axis] if count is None else count))
    centre = (k * frm.stride + (frm.patch - 1) / 2) * factor
    return np.clip(np.rint((centre - (to.patch - 1) / 2) / to.stride).astype(int), 0, n_to - 1)


def deep_patches(coarse_levels, coarse_table, map_levels, map_table, *, coarse_grid: PatchGrid,
                 map_grid: PatchGrid, coarse_rows=(0, None), coarse_cols=(0, None), map_offset=(0, 0)) -> np.ndarray:
    """Which coarse patches are deep (the module doc's two rules), as a bool array like
    ``coarse_levels``. ``coarse_levels`` hold the grid lines from ``coarse_rows[0]`` /
    ``coarse_cols[0]``; ``map_levels`` the map's lines from ``map_offset`` (a block's part)."""
    levels = np.asarray(coarse_levels)
    ny, nx = levels.shape
    rows = nearest(map_grid.shape[0], map_grid, coarse_grid, 0, factor=COARSE, first=coarse_rows[0], count=ny)
    cols = nearest(map_grid.shape[1], map_grid, coarse_grid, 1, factor=COARSE, first=coarse_cols[0], count=nx)
    under = np.asarray(map_levels)[np.ix_(rows - map_offset[0], cols - map_offset[1])]
    table = np.append(np.asarray(coarse_table, np.float64), -np.inf)  # background: never deep
    beyond = table[np.clip(levels, 0, BACKGROUND)] > float(map_table[TOP]) + 1e-6
    return (under == TOP) & beyond


def deep_um_on_map(reading: CoarseReading | None, map_grid: PatchGrid) -> np.ndarray | None:
    """(rows, cols) float32 of the map's grid: the defocus (um) of the deep coarse patch nearest to
    each map patch's centre, NaN where that patch is not deep; None without a deep patch."""
    if reading is None or not reading.deep.any():
        return None
    um = reading.deep_defocus_um()
    g = reading.grid
    rows = nearest(g.shape[0], g, map_grid, 0, factor=1.0 / COARSE)
    cols = nearest(g.shape[1], g, map_grid, 1, factor=1.0 / COARSE)
    return um[np.ix_(rows, cols)]


def coarse_table(optics, *, weights=None) -> tuple:
    """Each coarse class's defocus (um) for ``optics`` (None: DelpNet's training objective),
    measured with DelpNet (``weights``; None: the shipped one) (:func:`.class_table.response_table`,
    ``coarse=COARSE``)."""
    from .canonical import CANONICAL
    from .class_table import response_table

    return response_table(optics if optics is not None else CANONICAL, coarse=COARSE, weights=weights)


def coarse_grid_of(canonical_shape) -> PatchGrid | None:
    """The coarse reading's grid on a coarse canonical image of ``canonical_shape``, or None when
    it is smaller than one patch (no coarse reading)."""
    if min(canonical_shape) < PATCH:
        return None
    return PatchGrid(tuple(int(n) for n in canonical_shape), patch=PATCH, stride=STRIDE)
