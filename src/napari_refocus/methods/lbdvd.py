"""LB-DVD (He et al. 2020): a DelpNet defocus map, then depth-variant Richardson-Lucy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.optics import Optics
from ..core.tiling import STRIDE
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
    optics: Optics = option(Optics(), help="microscope optics", unit="optics")


def run(image, params: LbdvdParams, *, device, report, defocus_map=None):
    """DelpNet map (unless one is given), then depth-variant RL with each patch's level."""
    from ..core.rl import iter_deconvolve

    if defocus_map is None:
        from .defocus import iter_defocus_map

        defocus_map = yield from iter_defocus_map(image, weights=params.weights, device=device,
                                                  stride=params.stride, tta=params.tta)
    elif tuple(defocus_map.grid.image_shape) != tuple(np.shape(image)):
        raise ValueError(
            f"the defocus map was made for an image of shape {defocus_map.grid.image_shape}, "
            f"not {np.shape(image)}"
        )
    if defocus_map.weights_sha256:
        report.weights_sha256["delpnet"] = defocus_map.weights_sha256
    report.extras["defocus_map"] = defocus_map
    return (yield from iter_deconvolve(
        image, level_map=defocus_map.levels, iterations=params.iterations, device=device,
        patch=defocus_map.grid.patch, stride=defocus_map.grid.stride,
        montage_weights=params.montage_weights, padding=params.padding, optics=params.optics, report=report,
    ))


METHOD = Method(
    name="lbdvd",
    title="LB-DVD (DelpNet + depth-variant RL)",
    description="Predicts a defocus level per 84x84 patch with DelpNet and deconvolves each "
                "patch with the Born-Wolf PSF of its level (He et al. 2020).",
    schema=LbdvdParams,
    run=run,
    weights=("delpnet",),
    inputs=("defocus_map",),
    block_runner=block_runner,
    block_multiple=STRIDE,
    form_fields=("iterations", "stride", "tta"),
)
