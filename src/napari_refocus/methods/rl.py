"""Depth-invariant Richardson-Lucy with one known defocus level for the whole image.

The level is the user's; by default (``never_worse``) the result is gated by DelpNet's map like
the learned methods' (:mod:`.gated`): regions the map reads as in focus, or blurred less than
two depths of field, come back as they went in, so a level given for a defocused cell does not
deconvolve its in-focus neighbours (or an image that was in focus after all). rl's gate also asks
the map for at least :data:`LEVEL_SHARE` of the defocus it is told: deconvolving with a PSF much
wider than a region's blur makes it worse, so a level far above what the map reads is not applied
there. ``never_worse=False`` deconvolves every pixel at that level: the benchmarks' "told the
distance" reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.optics import Optics
from .base import Method, RunReport, window_runner
from .params import Params, option

#: context pixels a block of a big image reads beyond its bounds for Richardson-Lucy
HALO = 96
#: the gate counts a patch as needing rl's level where DelpNet reads at least this share of the
#: level's defocus (and two depths of field). Why 2/3: on held-out BBBC006 fields rl told 10 um
#: lost 6.9 dB on 4 um of blur, 3.4 dB on 6 um and +0.0 on 8 um (``benchmarks/rl_never_worse.py``,
#: ungated): a PSF up to ~1.3x the blur's is harmless, 1.7x is not
LEVEL_SHARE = 2.0 / 3.0


@dataclass(frozen=True)
class RlParams(Params):
    """Parameters of :data:`METHOD` (``rl``)."""

    level: int = option(5, help="defocus level of the whole image (level x level_step_um from focus)",
                        minimum=0)
    iterations: int = option(15, help="Richardson-Lucy iterations", minimum=1, maximum=500)
    optics: Optics = option(Optics(), help="microscope optics", unit="optics")
    never_worse: bool = option(True, help="gate the change per patch by DelpNet's probability that the patch is "
                               "defocused beyond two depths of field and 2/3 of the level's defocus: regions in "
                               "focus, or blurred far less than the level, come back unchanged")

    def __post_init__(self):
        super().__post_init__()
        if self.level > self.optics.n_levels - 1:
            raise ValueError(f"level must be an integer in 0..{self.optics.n_levels - 1}, got {self.level!r}")


def run(image, params: RlParams, *, device, report, map_stats=None):
    """Richardson-Lucy of the whole image with the PSF of ``params.level``, gated by DelpNet's map
    of the image at ``params.optics`` unless ``never_worse`` is off (``map_stats``: the whole
    image's canonical statistics when ``image`` is a block of it)."""
    from .gated import iter_gated

    def restore(img):
        return (yield from _deconvolve(img, params, device=device, report=report))

    if not params.never_worse:
        return (yield from restore(image))
    return (yield from iter_gated(image, restore, device=device, report=report, optics=params.optics,
                                  map_stats=map_stats, at_least_um=at_least_um(params)))


def at_least_um(params: RlParams) -> float:
    """The defocus (um) DelpNet must read for rl's level to be applied: :data:`LEVEL_SHARE` of it."""
    return LEVEL_SHARE * params.optics.defocus_um(params.level)


def _deconvolve(image, params: RlParams, *, device, report):
    from ..core.rl import iter_deconvolve

    return (yield from iter_deconvolve(image, level=params.level, iterations=params.iterations, device=device,
                                       optics=params.optics, report=report))


def image_stats(sample, *, params=None, sample_stride: int = 1) -> dict:
    """The canonical statistics of the gate's map, once per image (big images)."""
    from .gated import map_stats_of

    return {"map_stats": map_stats_of(sample, optics=params.optics if params is not None else Optics(),
                                      sample_stride=sample_stride)}


def block_runner(params: RlParams, *, device, map_stats=None):
    """Each block: Richardson-Lucy on the block and :data:`HALO` pixels of context around it
    (clipped to the image), then the gate on the whole image's patch grid (:func:`.gated.block_gate`),
    so that a block gets the same weights as the image in memory."""
    from ..core.progress import drain
    from .gated import block_gate

    gate = block_gate(never_worse=params.never_worse, device=device, map_stats=map_stats, upscale=1,
                      optics=params.optics, at_least_um=at_least_um(params))

    # Richardson-Lucy on the block and its context, ungated: the gate reads the whole image's grid
    window = window_runner(lambda region: drain(_deconvolve(region, params, device=device, report=RunReport(device))),
                           halo=HALO)

    def restore(source, bounds):
        out = np.ascontiguousarray(window(source, bounds))
        return out if gate is None else gate(source, bounds, out)

    restore.halo = HALO if gate is None else max(HALO, gate.halo)
    return restore


METHOD = Method(
    name="rl",
    title="Richardson-Lucy, one known level",
    description="Depth-invariant Richardson-Lucy with the Born-Wolf PSF of one defocus level, over the whole "
                "image; gated by DelpNet's map (never worse): regions in focus, or blurred far less than the level, "
                "come back unchanged. For a known defocus.",
    schema=RlParams,
    run=run,
    halo=HALO,
    inputs=("map_stats",),
    image_stats=image_stats,
    block_runner=block_runner,
    form_fields=("level", "iterations", "never_worse"),
)
