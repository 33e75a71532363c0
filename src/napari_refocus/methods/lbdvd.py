"""LB-DVD (He et al. 2020): a DelpNet defocus map, then depth-variant Richardson-Lucy.

For an objective other than DelpNet's training objective the map is made at the training
sampling (see :mod:`.defocus`), each class becomes the defocus of *this* objective with the same
blur, and Richardson-Lucy runs at the image's native resolution with this objective's PSF at
that defocus, on a patch grid as many native pixels wide as the map's patches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..core.optics import Optics
from ..core.tiling import STRIDE
from . import gate, lbdvd_global
from .base import Method
from .frames import native_levels, rl_frame, rl_group
from .map_choice import is_auto
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
    never_worse: bool = option(True, help="deconvolve a patch only as far as DelpNet's probabilities support and "
                               "weight the change by the probability that it is defocused beyond the depth of "
                               "field: regions in focus come back unchanged")
    beyond_top: bool = option(True, help="read top-class patches again at half the sampling and deconvolve "
                              "those beyond the top class at the defocus read there (to ~36 um instead of "
                              "20 at the paper's objective)")


def iter_map(image, params: LbdvdParams, *, device, stats=None, report=None):
    """The defocus map lbdvd makes with ``params`` (its weights, stride, TTA, optics and
    intensity scale): a generator yielding Progress, returning a DefocusMap. Triage uses the
    same map, so a plane is judged on the grid it is deconvolved on. ``report`` learns of an
    out-of-memory fallback (smaller batches, then the CPU)."""
    from .defocus import iter_defocus_map

    return (yield from iter_defocus_map(image, weights=params.weights, device=device, stride=params.stride,
                                        tta=params.tta, optics=params.optics, normalise=params.normalise,
                                        stats=stats, report=report, beyond_top=params.beyond_top))


def run(image, params: LbdvdParams, *, device, report, defocus_map=None, stats=None):
    """DelpNet map (unless one is given), then depth-variant RL with each patch's class."""
    from ..core.rl import iter_deconvolve

    from .defocus import DefocusMap

    if defocus_map is None and not gate.map_fits(np.shape(image), params.optics):
        pads = gate.mirror_padding(np.shape(image), params.optics)
        if pads is not None:  # else too long to mirror: the map's one-line error below
            return (yield from run_mirrored(image, pads, params, device=device, report=report))
    if defocus_map is None:
        defocus_map = yield from iter_map(image, params, device=device, stats=stats, report=report)
    elif not isinstance(defocus_map, DefocusMap):  # e.g. the level array alone: it lacks the grid and optics
        raise ValueError(f"defocus_map must be a DefocusMap from napari_refocus.defocus_map(), "
                         f"got {type(defocus_map).__name__}")
    # the map's image was resampled to whole pixels: a side may differ by up to half a map pixel
    elif not np.allclose(np.multiply(defocus_map.grid.image_shape, defocus_map.scale), np.shape(image),
                         atol=1.0 + defocus_map.scale / 2):
        raise ValueError(
            f"the defocus map was made for an image of shape {defocus_map.grid.image_shape}, "
            f"not {np.shape(image)}"
        )
    if is_auto(params.optics):  # the map's pixel was chosen with the map (.map_choice): RL follows it
        optics = dataclasses.replace(params.optics, map_pixel_um=defocus_map.optics.get("map_pixel_um"))
        params = dataclasses.replace(params, optics=optics)
        report.note(defocus_map.choice)
    frame = rl_frame(params.optics, params.weights)  # the classes of the map's own network
    if defocus_map.weights_sha256:
        report.weights_sha256["delpnet"] = defocus_map.weights_sha256
    report.extras["defocus_map"] = defocus_map
    run_map = defocus_map
    if params.never_worse:  # deconvolve only as far as the evidence supports (methods.gate)
        beyond = gate.defocused_classes(defocus_map.defocus_um, defocus_map.optics)
        run_map = dataclasses.replace(defocus_map, levels=gate.gate_levels(defocus_map.probabilities,
                                                                           defocus_map.levels, beyond))
    levels, patch, stride = native_levels(run_map, np.shape(image), frame, params.stride)
    restored = yield from iter_deconvolve(
        image, level_map=levels, iterations=params.iterations, device=device,
        patch=patch, stride=stride, context=frame.context,
        montage_weights=params.montage_weights, padding=params.padding, optics=frame.optics, report=report,
        group=rl_group(frame, patch=patch, stride=stride, padding=params.padding),
    )
    reading = defocus_map.coarse if params.beyond_top else None
    if reading is not None and reading.deep.any():
        yield from iter_deep_pass(image, restored, reading, params, device=device, report=report)
    if not params.never_worse:
        return restored
    weights = gate.gate_of_map(defocus_map)
    w = blend_in_place(image, restored, weights)
    gate.record(report, w, weights.threshold_um)
    return restored


def run_mirrored(image, pads, params: LbdvdParams, *, device, report):
    """:func:`run` of an image smaller than one DelpNet patch at its sampling (a crop of one
    cell): run on the image mirrored by ``pads`` (:func:`.gate.mirror_padding`: out to one
    patch; mirroring keeps its blur, and is how Richardson-Lucy meets an edge anyway), the
    image's own pixels kept. The map, of the mirrored image, is not returned (its grid is not
    the image's)."""
    img = np.asarray(image)
    padded = np.pad(img, pads, mode="symmetric")
    restored = yield from run(padded, params, device=device, report=report)
    out = np.ascontiguousarray(gate.unmirror(restored, pads, img.shape))
    report.extras["defocus_map"] = None
    g = report.extras.get("gate")
    if g is not None:
        w = np.ascontiguousarray(gate.unmirror(np.asarray(g["weights"]), pads, img.shape))
        g.update(weights=w, changed_fraction=float((w > gate.CHANGED_ABOVE).mean()) if w.size else 0.0)
    report.fallbacks.append(f"lbdvd ran on the image mirrored to one DelpNet patch ({padded.shape[0]}x"
                            f"{padded.shape[1]} px): the image is smaller than one patch at its pixel size; its map "
                            "is not returned")
    return out


def _whole_small(image, pads, params: LbdvdParams, device):
    """The in-memory result of an image below one patch (:func:`run_mirrored`), for the blocks."""
    from ..core.progress import drain
    from .base import RunReport

    return drain(run_mirrored(image, pads, params, device=device, report=RunReport(device)))


def block_runner(params, *, device, stats=None):
    """lbdvd's ``Method.block_runner`` (:func:`.lbdvd_global.block_runner`); an image below one
    patch is run whole, as in memory."""
    return lbdvd_global.block_runner(params, device=device, stats=stats, small=_whole_small)


#: rows of the image whose gate weights and blend are computed at once (bounded temporaries)
BAND = 256


def iter_deep_pass(image, restored, reading, params, *, device, report):
    """Deconvolve the patches read beyond the top class (:mod:`.deep`) at their coarse class's
    defocus, on the coarse grid, and put them into ``restored`` (the usual result, overwritten):
    ``restored = B + (1 - D) (restored - input)``, where ``B`` is that pass (the input where no
    patch is deep) and ``D`` the deep patches' share of the montage weight (0..1): inside a deep
    region its pass alone, outside it the usual result, a convex blend between them."""
    from ..core.progress import relabel
    from ..core.rl import iter_deconvolve
    from ..core.tiling import patch_grid
    from .frames import coarse_frame

    frame = coarse_frame(params.optics, params.weights)
    levels, patch, stride = native_levels(_Levels(np.where(reading.deep, reading.levels, 0), reading.grid),
                                          np.shape(image), frame, STRIDE)
    if not (levels > 0).any():  # no native patch takes a deep coarse patch's class
        return
    deep = yield from relabel(iter_deconvolve(
        image, level_map=levels, iterations=params.iterations, device=device, patch=patch, stride=stride,
        context=frame.context, montage_weights=params.montage_weights, padding=params.padding,
        optics=frame.optics, report=report, group=rl_group(frame, patch=patch, stride=stride, padding=params.padding),
    ), "deconvolve beyond the top class")
    d = lbdvd_global.deep_share(patch_grid(np.shape(image), patch=patch, stride=stride), levels,
                                params.montage_weights)
    for r0 in range(0, np.shape(image)[0], BAND):
        rows = slice(r0, r0 + BAND)
        lbdvd_global.combine(restored[rows], image[rows], deep[rows], d[rows])
    um = reading.deep_defocus_um()[reading.deep]
    report.extras["beyond_top"] = reading.provenance()
    report.note(f"beyond the top class: {int(reading.deep.sum())} coarse patches read at "
                f"{float(um.min()):.1f}-{float(um.max()):.1f} um (half-sampling reading) and deconvolved there")


@dataclass(frozen=True)
class _Levels:
    """A map's levels and grid, as :func:`.frames.native_levels` reads them."""

    levels: np.ndarray
    grid: object


def blend_in_place(image, restored, weights) -> np.ndarray:
    """:func:`gate.blend` of ``restored`` (this run's own float32 array, overwritten) with the
    input, band by band: ``restored = input + w * (restored - input)`` with the same float32
    operations, so the values are :func:`gate.blend`'s. Returns the weights ``w`` (float32, the
    image's shape) of :meth:`gate.Gate.weights`, each band computed on its own, so the only
    whole-image arrays are the result and ``w`` (no float32 copy of the input, no temporaries)."""
    h, wd = np.shape(image)
    w = np.empty((h, wd), np.float32)
    for r0 in range(0, h, BAND):
        r1 = min(h, r0 + BAND)
        w[r0:r1] = weights.weights((h, wd), bounds=(r0, r1, 0, wd))
        base = np.asarray(image[r0:r1], dtype=np.float32)
        out = restored[r0:r1]
        out -= base
        out *= w[r0:r1]
        out += base
    return w


def image_stats(sample, *, params=None, sample_stride: int = 1) -> dict:
    """The canonical image's intensity statistics, once per image (big images), from ``sample``
    (the whole image, or every ``sample_stride``-th row and column): resampled to DelpNet's
    sampling for ``params.optics`` first, as the image is in memory."""
    from .gated import map_stats_of

    return {"stats": map_stats_of(sample, optics=params.optics if params is not None else None,
                                  sample_stride=sample_stride)}


METHOD = Method(
    name="lbdvd",
    title="LB-DVD (DelpNet + depth-variant RL)",
    description="Predicts a defocus level per 84x84 patch with DelpNet and deconvolves each "
                "patch with the Born-Wolf PSF of its level (He et al. 2020).",
    schema=LbdvdParams,
    run=run,
    weights=("delpnet", "delpnet-objectives"),  # the second: maps of other samplings (canonical.map_weights)
    inputs=("defocus_map", "stats"),
    image_stats=image_stats,
    block_runner=block_runner,
    form_fields=("iterations", "stride", "tta", "never_worse"),
)
