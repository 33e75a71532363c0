"""The four learned refocusing generators as registered methods.

Importing this module registers ``comi-cyclegan``, ``refocus-unet``, ``m-deblurgan`` (x2
output) and ``h2t-msunet`` in :data:`napari_refocus.methods.REGISTRY` (``methods.py`` imports
it at its end). Each runs :func:`napari_refocus.inference.iter_predict_tiled` with the network
of ``weights/<name>.safetensors`` (a custom weights file with ``weights=PATH``).
"""

from __future__ import annotations

import functools

from ..models.predict import DEFAULT_OVERLAP, DEFAULT_TILE
from . import Method, register

GENERATORS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")


@functools.lru_cache(maxsize=8)
def _cached(path_str: str, mtime: float):
    from ..training.train_generators import load_generator

    return load_generator(path_str, "cpu")


def get_generator(name_or_path):
    """The (cached, CPU, eval-mode) network of a generator name or weights path."""
    from ..models.loader import resolve_path

    path = resolve_path(name_or_path).resolve()
    return _cached(str(path), path.stat().st_mtime)


def _make_run(name: str):
    def run(image, *, device="auto", tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, batch_size=4, precision="auto", weights=None,
            tta=False, **_):
        from ..models.predict import iter_predict_tiled

        model = get_generator(weights or name)
        restored = yield from iter_predict_tiled(
            model, image, device=device, tile=int(tile), overlap=int(overlap), batch_size=int(batch_size),
            precision=precision, stage=f"{name}: tiles", tta=bool(tta),
        )
        return restored, {}

    run.__name__ = f"run_{name.replace('-', '_')}"
    return run


_DEFAULTS = {"tile": DEFAULT_TILE, "overlap": DEFAULT_OVERLAP, "batch_size": 4, "precision": "auto", "tta": False}



def _register(name: str, title: str, description: str, upscale: int = 1) -> None:
    register(Method(name=name, title=title, description=description, run=_make_run(name),
                    weights=(name,), upscale=upscale, defaults=dict(_DEFAULTS)))


_register("comi-cyclegan", "COMI CycleGAN (learned)",
          "ResNet encoder/decoder generator trained as a CycleGAN on synthetic BBBC006 defocus "
          "(COMI, seed 000). Blind: no defocus level needed.")
_register("refocus-unet", "ReFocus U-Net (learned)",
          "U-Net with a ResNet encoder and a feature loss (ReFocus, seed 001). Blind.")
_register("m-deblurgan", "M-Deblurgan, x2 (learned)",
          "Deblurring encoder-decoder + optimal approximation + x2 super-resolution module "
          "(M-Deblurgan, seed 002). The output is twice as large as the input.", upscale=2)
_register("h2t-msunet", "Head-to-tail multi-scale U-Net (learned)",
          "K U-Nets at K scales, coarse decoder features fused into the next finer encoder, "
          "multi-scale loss (seed 004). Blind.")

__all__ = ["GENERATORS", "get_generator"]
