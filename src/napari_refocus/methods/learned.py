"""The four learned refocusing generators (blind: no defocus level needed).

Each runs the tiled inference of :mod:`napari_refocus.models.predict` with the network of
``weights/<name>.safetensors`` (or a custom file, ``weights=PATH``), loaded through the one
model loader, which keeps one cached instance per (file, device).

**Other objectives.** The generators were trained on synthetic BBBC006 defocus at one sampling,
:data:`TRAINING_OPTICS` (0.65 um pixels, NA 0.5 in air, 451 nm: 0.72 lambda/NA per pixel).
Given ``optics`` (or flat ``pixel_um=``, ``na=`` ...) whose :attr:`~napari_refocus.core.optics.Optics.sampling`
differs from it by 1 % or more, a run is :func:`resample_in_restore_out`: the image is resampled
(anti-aliased) to the training sampling, restored there, and the *restored residual*
(restored - resampled input) is resampled back and added to the native image, so that the
input's own detail finer than the training sampling is kept as it was. Without optics, with a
pixel size alone (NA, wavelength and immersion at their defaults: :func:`pixel_size_only`) or
at the training sampling, the network runs on the image as it is.

**In memory and block by block** both go through :func:`.learned_blocks.iter_restore_window`
(the whole image as one window, or one block): tiles on the whole (resampled) image's grid,
resampling by windows of the global grid, the gate on DelpNet's global patch grid (at any
sampling: :mod:`.canonical_blocks`), so a block of a big image equals the in-memory result bit
for bit on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.matching import sampling_scale
from ..core.optics import Optics
from ..models.predict import DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE
from .base import Method
from .params import Params, option

GENERATORS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")
#: the optics the generators' training pairs were simulated with (``training.pairs.GEN_OPTICS``;
#: the same sampling as DelpNet's, ``methods.defocus.CANONICAL``)
TRAINING_OPTICS = Optics(psf_model="paraxial")
#: a sampling within 1 % of the training one runs the image as it is (< 1 px in 100)
SAMPLING_TOLERANCE = 0.01


@dataclass(frozen=True)
class LearnedParams(Params):
    """Parameters of the learned methods."""

    tile: int = option(DEFAULT_TILE, help=f"tile side, px of the grid the network runs on (default {DEFAULT_TILE}; "
                       "<= 0: the whole image at once)", unit="px")
    overlap: int = option(DEFAULT_OVERLAP, help="tile overlap, px", minimum=0, unit="px")
    batch_size: int | None = option(DEFAULT_BATCH, help="tiles per forward pass (default: 1 on the CPU, the fastest and "
                                    "leanest there; 4 on a GPU, halved on out-of-memory before the CPU takes "
                                    "over)", minimum=1, kind=int)
    precision: str = option("auto", help="autocast: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16",
                            choices=("auto", "fp32", "fp16", "bf16"))
    tta: bool = option(False, help="average the network over 8 flips/rotations (8x slower)")
    weights: str | None = option(None, help="a .safetensors file (default: the shipped weights)")
    optics: Optics | None = option(None, help="the image's optics: when its sampling (pixel in lambda/NA) differs "
                                   "from the training one, the network runs at the training sampling and its "
                                   "restored residual is added to the native image (None, or a pixel size "
                                   "without the NA: run as it is)",
                                   unit="optics")
    never_worse: bool = option(True, help="gate the change per patch by DelpNet's probability that the patch is "
                               "defocused beyond the depth of field: regions in focus come back unchanged")


@dataclass(frozen=True)
class LearnedX2Params(LearnedParams):
    """Parameters of a generator whose output is twice its input (m-deblurgan): its tiles are
    1024 px of *output*, so one tile's activations are about those of an x1 generator's tile
    (its whole-image peak meets 24 B/px from 6144^2 on; BENCHMARKS.md "Memory")."""

    tile: int = option(DEFAULT_TILE // 2, help=f"tile side, px of the grid the network runs on (default "
                       f"{DEFAULT_TILE // 2}: {DEFAULT_TILE} px of its x2 output; <= 0: the whole image at once)",
                       unit="px")


def pixel_size_only(optics: Optics) -> bool:
    """True when ``optics`` differ from :data:`TRAINING_OPTICS` in the pixel size alone (NA,
    wavelength and immersion at their defaults): what a file's or a layer's pixel size gives
    when nothing else is known. That does not fix the sampling in lambda/NA: an objective with
    small pixels has a high NA, and taking NA 0.5 shrinks its images far too much (measured:
    0.5 to 1.7 dB less gain than running them as they are on the 20x/0.75, 40x/0.95 and 60x/1.4
    cases of ``benchmarks/eval_objectives.py``)."""
    return all(getattr(optics, k) == getattr(TRAINING_OPTICS, k) for k in ("na", "wavelength_nm", "refractive_index"))


def training_scale(optics: Optics | None) -> float:
    """Native pixels per training-sampling pixel (``TRAINING_OPTICS.sampling / optics.sampling``);
    exactly 1.0 for no optics, a pixel size alone (:func:`pixel_size_only`) or a sampling within
    :data:`SAMPLING_TOLERANCE` of the training one."""
    if optics is None or pixel_size_only(optics):
        return 1.0
    return sampling_scale(TRAINING_OPTICS, optics, tolerance=SAMPLING_TOLERANCE)


def resample_in_restore_out(image, scale: float, restore):
    """Generator: run ``restore`` (a generator ``image -> restored``, ``r`` x its input's size)
    at the training sampling and bring the result back to the native grid; returns float32.

    ``low = resample(image)`` to ``1 / scale`` of its size (anti-aliased), ``restored =
    restore(low)``, then ``out = image + resample(restored - low)`` to the native shape. For an
    x ``r`` network the output is ``r`` x the native shape: ``out = resample(image) +
    resample(restored - resample(low))``, both to ``r`` x native, where the inner ``resample(low)``
    is ``low`` interpolated to ``restored``'s grid. So the native image contributes all it holds
    (interpolated to the output grid, no finer detail invented), and the network contributes its
    change to the image (deblurring, and detail up to ``r`` x the training sampling).
    """
    from ..core.resample import resample, resized_shape

    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    low = resample(img, shape=resized_shape(img.shape, 1.0 / scale))
    restored = np.asarray((yield from restore(low)), dtype=np.float32)
    r = restored.shape[0] // low.shape[0]
    native = (h * r, w * r)
    base_low = low if r == 1 else resample(low, shape=restored.shape)
    residual = resample(restored - base_low, shape=native)
    base = img if r == 1 else resample(img, shape=native)
    return (base + residual).astype(np.float32)


def gate_optics(optics: Optics | None) -> Optics | None:
    """The optics the never-worse gate's defocus map is made with: None (DelpNet's training
    objective) when the network runs on the image as it is (:func:`training_scale` 1), so that
    the gate judges the image the way the network sees it; else the image's optics."""
    return None if training_scale(optics) == 1.0 else optics


def get_generator(name_or_path, device="cpu", *, like: str | None = None):
    """The cached, eval-mode network of a generator name or weights path on ``device``; with
    ``like`` (the method's name) a custom file holding another network is a one-line error."""
    from ..models.loader import load_model

    return load_model(name_or_path, device, like=like)


def _make_run(name: str):
    def run(image, params: LearnedParams, *, device, report, stats=None, map_stats=None):
        from .gated import iter_gated

        def restore(img):
            return (yield from _restore(img, params, device=device, report=report, stats=stats))

        if not params.never_worse:
            return (yield from restore(image))
        return (yield from iter_gated(image, restore, device=device, report=report, optics=gate_optics(params.optics),
                                      map_stats=map_stats))

    def _restore(image, params: LearnedParams, *, device, report, stats=None):
        from ..models.predict import intensity_stats
        from .learned_blocks import iter_restore_window

        source = params.weights or name
        model = get_generator(source, device, like=name)
        report.used_weights(name, model)
        scale = training_scale(params.optics)
        if scale == 1.0 and params.optics is not None and pixel_size_only(params.optics) \
                and abs(params.optics.pixel_um / TRAINING_OPTICS.pixel_um - 1.0) >= SAMPLING_TOLERANCE:
            report.fallbacks.append(
                f"{name} ran at the image's own sampling: a pixel size alone ({params.optics.pixel_um:g} um, "
                "NA, wavelength and immersion at their defaults) does not give the sampling in lambda/NA; "
                "give na= (and wavelength_nm=, refractive_index=) to run it at its training sampling")
        # the native image's intensity normalisation (as every block of a big image uses)
        stats = intensity_stats(image) if stats is None else tuple(float(v) for v in stats)
        # the whole image as one window: the same code, and so the same numbers, as a block
        out = yield from iter_restore_window(
            lambda d: model if d == device else get_generator(source, d, like=name), np.asarray(image),
            scale=scale, stats=stats, device=device, tile=params.tile, overlap=params.overlap,
            batch_size=params.batch_size, precision=params.precision, tta=params.tta, report=report,
            stage=f"{name}: tiles" if scale == 1.0 else f"{name}: tiles at the training sampling")
        if scale != 1.0:  # RunReport's notes channel (run.py puts report.fallbacks into RefocusResult.notes)
            report.fallbacks.append(
                f"{name} ran at its training sampling ({TRAINING_OPTICS.sampling:.3f} lambda/NA per pixel; the image: "
                f"{params.optics.sampling:.3f}): the image resampled by {1 / scale:.3f}, the restored residual "
                "resampled back and added to the native image")
        return out

    run.__name__ = f"run_{name.replace('-', '_')}"
    return run


def image_stats(image, *, params: LearnedParams | None = None, sample_stride: int = 1) -> dict:
    """``{"stats": (lo, scale), "map_stats": ...}``: the intensity normalisation of a whole
    image, and the canonical statistics of DelpNet's map (the gate, at the sampling ``params``
    give it), which every block of a big image then uses instead of its own
    (``Method.image_stats``; ``image``: the whole image or every ``sample_stride``-th pixel)."""
    from ..models.predict import intensity_stats
    from .gated import map_stats_of

    return {"stats": intensity_stats(image),
            "map_stats": map_stats_of(image, optics=gate_optics(params.optics if params is not None else None),
                                      sample_stride=sample_stride)}


def _method(name: str, title: str, description: str, upscale: int = 1) -> Method:
    from .learned_blocks import block_runner_of, halo

    schema = LearnedX2Params if upscale == 2 else LearnedParams
    # the halo of the default tiling at the image's own sampling; a block runner states its own
    # (``restore.halo``: it depends on the tile size and the sampling)
    default_halo = halo(tile=schema().tile, overlap=DEFAULT_OVERLAP, multiple=64, scale=1.0)
    return Method(name=name, title=title, description=description, schema=schema, run=_make_run(name),
                  weights=(name,), upscale=upscale, halo=default_halo, inputs=("stats", "map_stats"),
                  image_stats=image_stats,
                  block_runner=block_runner_of(name, upscale, training_scale=training_scale, gate_optics=gate_optics,
                                               # looked up at each call (tests replace get_generator)
                                               get_generator=lambda *a, **k: get_generator(*a, **k)),
                  form_fields=("tta", "never_worse"))


METHODS = (
    _method("comi-cyclegan", "COMI CycleGAN (learned)",
            "ResNet encoder/decoder generator trained as a CycleGAN on synthetic BBBC006 defocus "
            "(COMI, seed 000). Blind: no defocus level needed."),
    _method("refocus-unet", "ReFocus U-Net (learned)",
            "U-Net with a ResNet encoder and a feature loss (ReFocus, seed 001). Blind."),
    _method("m-deblurgan", "M-Deblurgan, x2 (learned)",
            "Deblurring encoder-decoder + optimal approximation + x2 super-resolution module "
            "(M-Deblurgan, seed 002). The output is twice as large as the input.", upscale=2),
    _method("h2t-msunet", "Head-to-tail multi-scale U-Net (learned)",
            "K U-Nets at K scales, coarse decoder features fused into the next finer encoder, "
            "multi-scale loss (seed 004). Blind."),
)
