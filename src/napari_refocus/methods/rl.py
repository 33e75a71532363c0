"""Depth-invariant Richardson-Lucy with one known defocus level for the whole image."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.optics import Optics
from .base import Method
from .params import Params, option


@dataclass(frozen=True)
class RlParams(Params):
    """Parameters of :data:`METHOD` (``rl``)."""

    level: int = option(5, help="defocus level of the whole image (level x level_step_um from focus)",
                        minimum=0)
    iterations: int = option(15, help="Richardson-Lucy iterations", minimum=1, maximum=500)
    optics: Optics = option(Optics(), help="microscope optics", unit="optics")

    def __post_init__(self):
        super().__post_init__()
        if self.level > self.optics.n_levels - 1:
            raise ValueError(f"level must be an integer in 0..{self.optics.n_levels - 1}, got {self.level!r}")


def run(image, params: RlParams, *, device, report):
    """Richardson-Lucy of the whole image with the PSF of ``params.level``."""
    from ..core.rl import iter_deconvolve

    return (yield from iter_deconvolve(image, level=params.level, iterations=params.iterations, device=device,
                                       optics=params.optics, report=report))


METHOD = Method(
    name="rl",
    title="Richardson-Lucy, one known level",
    description="Depth-invariant Richardson-Lucy with the Born-Wolf PSF of one defocus level, over the whole "
                "image: no never-worse gate (regions in focus are deconvolved too); for a known defocus.",
    schema=RlParams,
    run=run,
    form_fields=("level", "iterations"),
    canvas_per_block=True,  # it reads no whole-image sample to find a canvas in (bigimage.prepare)
)
