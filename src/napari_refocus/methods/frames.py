"""Where lbdvd's Richardson-Lucy runs for an objective: the map's classes on a native patch grid.

The defocus map is made at DelpNet's training sampling (:mod:`.defocus`); deconvolution runs at
the image's own resolution, on patches as many native pixels wide as the map's patches, with
the user's PSF at each class's defocus for this objective.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from ..core.optics import Optics
from ..core.tiling import CONTEXT, PATCH, patch_grid


@dataclass(frozen=True)
class RlFrame:
    """Where Richardson-Lucy runs for an objective: native pixels per map pixel, the patch
    grid in native pixels, and the optics with each class's defocus for this objective."""

    scale: float
    optics: Optics
    patch: int
    context: int


@functools.lru_cache(maxsize=16)
def rl_frame(optics: Optics, weights: str | None = None) -> RlFrame:
    """The :class:`RlFrame` of ``optics`` for the map of DelpNet ``weights`` (a .safetensors
    file; None: the shipped one) (cached: the class table takes seconds)."""
    from ..core.matching import matched_optics
    from .defocus import CANONICAL, is_training_objective, map_frame

    if is_training_objective(optics):
        return RlFrame(1.0, optics, PATCH, CONTEXT)  # the paper's frame, exactly as always
    # the map's own classes in um (measured with DelpNet: methods.class_table)
    scale, rl_optics = matched_optics(CANONICAL, optics, table=map_frame(optics, weights=weights)[1])
    return RlFrame(scale, rl_optics, int(round(PATCH * scale)), int(round(CONTEXT * scale)))


@functools.lru_cache(maxsize=16)
def coarse_frame(optics: Optics, weights: str | None = None) -> RlFrame:
    """Where Richardson-Lucy runs for the patches read beyond the top class (:mod:`.deep`): the
    coarse reading's grid in native pixels (patches, context and PSF window :data:`~.deep.COARSE`
    x :func:`rl_frame`'s), with each coarse class's defocus for this objective."""
    from .deep import COARSE, coarse_table

    base = rl_frame(optics, weights)
    size = max(3, int(round(base.optics.psf_size * COARSE)))
    size += 1 - size % 2  # odd: the PSF is centred on a pixel
    table = coarse_table(optics, weights=weights)
    # 3x3 sub-pixel samples: these PSFs are 30-60 px wide, where 5x5 changed them by an L1 distance of
    # 0.002 (22 and 36 um at the default objective) and took 1.4 s instead of ~0.3-0.8 s a level
    rl_optics = dataclasses.replace(base.optics, defocus_table_um=table, n_levels=len(table), psf_size=size,
                                    oversample=min(3, base.optics.oversample))
    scale = COARSE * base.scale
    return RlFrame(scale, rl_optics, int(round(PATCH * scale)), int(round(CONTEXT * scale)))


def native_stride(frame: RlFrame, stride: int) -> int:
    """The native grid's stride for the map's ``stride`` (map pixels)."""
    if frame.scale == 1.0:
        return stride
    return min(max(1, int(round(stride * frame.scale))), frame.patch)


def native_levels(defocus_map, image_shape, frame: RlFrame, stride: int):
    """The map's classes on a native grid of ``frame.patch`` px patches: each native patch
    takes the class of the map patch whose centre is nearest to its own."""
    if frame.scale == 1.0:
        return defocus_map.levels, defocus_map.grid.patch, defocus_map.grid.stride
    grid = patch_grid(image_shape, patch=frame.patch, stride=native_stride(frame, stride))
    g = defocus_map.grid
    idx = []
    for axis in range(2):
        centre = (np.arange(grid.shape[axis]) * grid.stride + (grid.patch - 1) / 2) / frame.scale
        k = np.rint((centre - (g.patch - 1) / 2) / g.stride).astype(int)
        idx.append(np.clip(k, 0, g.shape[axis] - 1))
    return defocus_map.levels[np.ix_(*idx)], grid.patch, grid.stride


def rl_group(frame, *, patch: int, stride: int, padding: str = "reflect") -> int:
    """Patches a side that share one Richardson-Lucy frame (:func:`~napari_refocus.core.rl_groups.group_size`;
    1 with zero padding, which marks unknown pixels patch by patch). Each patch is still
    deconvolved with its own level's PSF and blended as before; what changes is that the patches
    of one level in a group are deconvolved together, each with its real neighbours, in one
    larger transform: ~4x fewer transformed pixels at the paper's grid."""
    from ..core.rl_groups import group_size

    if padding != "reflect":
        return 1
    return group_size(patch=patch, stride=stride, context=frame.context, psf_size=frame.optics.psf_size)
