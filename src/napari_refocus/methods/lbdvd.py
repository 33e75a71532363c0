"""LB-DVD (He et al. 2020): a DelpNet defocus map, then depth-variant Richardson-Lucy.

For an objective other than DelpNet's training objective the map is made at the training
sampling (see :mod:`.defocus`), each class becomes the defocus of *this* objective with the same
blur, and Richardson-Lucy runs at the image's native resolution with this objective's PSF at
that defocus, on a patch grid as many native pixels wide as the map's patches.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from ..core.optics import BACKGROUND, Optics
from ..core.tiling import CONTEXT, PATCH, STRIDE, patch_grid
from .base import Method
from .lbdvd_blocks import block_runner
from .params import Params, option


@dataclass(frozen=True)
class LbdvdParams(Params):
    """Parameters of :data:`METHOD` (``lbdvd``)."""

    iterations: int = option(15, help="Richardson-Lucy iterations", minimum=1, maximum=500)
    stride: int = option(STRIDE, help="patch grid step, px (42 = half a patch, seam-free)", minimum=1, maximum=84,
                         unit="px")
    montage_weights: str = option("triangular", help="how patches are blended",
                                  choices=("triangular", "rectangular"))
    padding: str = option("reflect", help="context of patches at the image borders", choices=("reflect", "zeros"))
    tta: bool = option(False, help="average DelpNet over the 8 flips/rotations of each patch (8x slower)")
    weights: str | None = option(None, help="DelpNet .safetensors file (default: the shipped weights)")
    normalise: bool = option(True, help="put intensities on DelpNet's scale first (exposure- and "
                                        "dtype-independent); off = raw 16-bit counts, as in the paper")
    optics: Optics = option(Optics(), help="microscope optics", unit="optics")


@dataclass(frozen=True)
class RlFrame:
    """Where Richardson-Lucy runs for an objective: native pixels per map pixel, the patch
    grid in native pixels, and the optics with each class's defocus for this objective."""

    scale: float
    optics: Optics
    patch: int
    context: int


def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k if k % 2 else k + 1


@functools.lru_cache(maxsize=16)
def rl_frame(optics: Optics) -> RlFrame:
    """The :class:`RlFrame` of ``optics`` (cached: the class matching takes seconds)."""
    from .defocus import CANONICAL, map_frame

    scale, table = map_frame(optics)
    if dataclasses.replace(optics, defocus_table_um=None) == CANONICAL:
        return RlFrame(1.0, optics, PATCH, CONTEXT)  # the paper's frame, exactly as always
    rl_optics = dataclasses.replace(optics, defocus_table_um=table, n_levels=len(table),
                                    psf_size=_odd(optics.psf_size * scale) if scale != 1.0 else optics.psf_size)
    return RlFrame(scale, rl_optics, int(round(PATCH * scale)), int(round(CONTEXT * scale)))


def native_levels(defocus_map, image_shape, frame: RlFrame, stride: int):
    """The map's classes on a native grid of ``frame.patch`` px patches: each native patch
    takes the class of the map patch whose centre is nearest to its own."""
    if frame.scale == 1.0:
        return defocus_map.levels, defocus_map.grid.patch, defocus_map.grid.stride
    nstride = max(1, int(round(stride * frame.scale)))
    grid = patch_grid(image_shape, patch=frame.patch, stride=min(nstride, frame.patch))
    g = defocus_map.grid
    idx = []
    for axis in range(2):
        centre = (np.arange(grid.shape[axis]) * grid.stride + (grid.patch - 1) / 2) / frame.scale
        k = np.rint((centre - (g.patch - 1) / 2) / g.stride).astype(int)
        idx.append(np.clip(k, 0, g.shape[axis] - 1))
    return defocus_map.levels[np.ix_(*idx)], grid.patch, grid.stride


def run(image, params: LbdvdParams, *, device, report, defocus_map=None, stats=None):
    """DelpNet map (unless one is given), then depth-variant RL with each patch's class."""
    from ..core.rl import iter_deconvolve

    frame = rl_frame(params.optics)
    if defocus_map is None:
        from .defocus import iter_defocus_map

        defocus_map = yield from iter_defocus_map(image, weights=params.weights, device=device,
                                                  stride=params.stride, tta=params.tta, optics=params.optics,
                                                  normalise=params.normalise, stats=stats)
    elif not np.allclose(np.multiply(defocus_map.grid.image_shape, defocus_map.scale), np.shape(image), atol=1.5):
        raise ValueError(
            f"the defocus map was made for an image of shape {defocus_map.grid.image_shape}, "
            f"not {np.shape(image)}"
        )
    if defocus_map.weights_sha256:
        report.weights_sha256["delpnet"] = defocus_map.weights_sha256
    report.extras["defocus_map"] = defocus_map
    levels, patch, stride = native_levels(defocus_map, np.shape(image), frame, params.stride)
    return (yield from iter_deconvolve(
        image, level_map=levels, iterations=params.iterations, device=device,
        patch=patch, stride=stride, context=frame.context,
        montage_weights=params.montage_weights, padding=params.padding, optics=frame.optics, report=report,
    ))


def image_stats(sample) -> dict:
    """The whole image's canonical intensity statistics, once per image (big images)."""
    from .defocus import canonical_stats

    return {"stats": canonical_stats(sample)}


METHOD = Method(
    name="lbdvd",
    title="LB-DVD (DelpNet + depth-variant RL)",
    description="Predicts a defocus level per 84x84 patch with DelpNet and deconvolves each "
                "patch with the Born-Wolf PSF of its level (He et al. 2020).",
    schema=LbdvdParams,
    run=run,
    weights=("delpnet",),
    inputs=("defocus_map", "stats"),
    image_stats=image_stats,
    block_runner=block_runner,
    block_multiple=STRIDE,
    form_fields=("iterations", "stride", "tta"),
)
