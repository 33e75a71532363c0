"""The four learned refocusing generators (blind: no defocus level or optics needed).

Each runs :func:`napari_refocus.models.predict.iter_predict_tiled` with the network of
``weights/<name>.safetensors`` (or a custom file, ``weights=PATH``), loaded through the one
model loader, which keeps one cached instance per (file, device).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.predict import DEFAULT_OVERLAP, DEFAULT_TILE
from .base import Method
from .params import Params, option

GENERATORS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")


@dataclass(frozen=True)
class LearnedParams(Params):
    """Parameters of the learned methods."""

    tile: int = option(DEFAULT_TILE, help="tile side, px (<= 0: the whole image at once)", unit="px")
    overlap: int = option(DEFAULT_OVERLAP, help="tile overlap, px", minimum=0, unit="px")
    batch_size: int = option(4, help="tiles per forward pass", minimum=1)
    precision: str = option("auto", help="autocast: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16",
                            choices=("auto", "fp32", "fp16", "bf16"))
    tta: bool = option(False, help="average the network over 8 flips/rotations (8x slower)")
    weights: str | None = option(None, help="a .safetensors file (default: the shipped weights)")


def get_generator(name_or_path, device="cpu"):
    """The cached, eval-mode network of a generator name or weights path on ``device``."""
    from ..models.loader import load_model

    return load_model(name_or_path, device)


def _make_run(name: str):
    def run(image, params: LearnedParams, *, device, report, stats=None):
        from ..models.predict import iter_predict_tiled

        source = params.weights or name
        model = get_generator(source, device)
        report.used_weights(name, model)
        return (yield from iter_predict_tiled(
            lambda d: model if d == device else get_generator(source, d), image, device=device,
            tile=params.tile, overlap=params.overlap, batch_size=params.batch_size, precision=params.precision,
            stage=f"{name}: tiles", tta=params.tta, stats=stats, report=report,
        ))

    run.__name__ = f"run_{name.replace('-', '_')}"
    return run


def image_stats(image) -> dict:
    """``{"stats": (lo, scale)}``: the intensity normalisation of a whole image, which every
    block of a big image then uses instead of its own (``Method.image_stats``)."""
    from ..models.predict import normalise

    return {"stats": normalise(image)[1]}


def _method(name: str, title: str, description: str, upscale: int = 1, halo: int = 96) -> Method:
    return Method(name=name, title=title, description=description, schema=LearnedParams, run=_make_run(name),
                  weights=(name,), upscale=upscale, halo=halo, inputs=("stats",), image_stats=image_stats,
                  form_fields=("tta",))


METHODS = (
    _method("comi-cyclegan", "COMI CycleGAN (learned)",
            "ResNet encoder/decoder generator trained as a CycleGAN on synthetic BBBC006 defocus "
            "(COMI, seed 000). Blind: no defocus level needed."),
    _method("refocus-unet", "ReFocus U-Net (learned)",
            "U-Net with a ResNet encoder and a feature loss (ReFocus, seed 001). Blind.",
            # its deepest features see far: with 96 px of context a block's edges differ from the
            # in-memory result by ~17 counts on average (700x950 test image), with 256 px by ~3
            halo=256),
    _method("m-deblurgan", "M-Deblurgan, x2 (learned)",
            "Deblurring encoder-decoder + optimal approximation + x2 super-resolution module "
            "(M-Deblurgan, seed 002). The output is twice as large as the input.", upscale=2),
    _method("h2t-msunet", "Head-to-tail multi-scale U-Net (learned)",
            "K U-Nets at K scales, coarse decoder features fused into the next finer encoder, "
            "multi-scale loss (seed 004). Blind."),
)
