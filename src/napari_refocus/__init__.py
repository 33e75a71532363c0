"""napari-refocus: make out-of-focus microscopy images in focus again.

Public API (arrays in, arrays out; scikit-image style). Heavy modules (torch, models) are
imported only when a function is first used, so napari's plugin discovery stays fast.

- :func:`psf_bank` - Born-Wolf depth-variant PSFs
- :func:`simulate` - in-focus -> defocused (+ Poisson noise)
- :func:`deconvolve` - batched torch Richardson-Lucy, depth-invariant or depth-variant
- :func:`defocus_map` - DelpNet defocus level per 84x84 patch (heat map)
- :func:`refocus` - run a registered method (``lbdvd`` = defocus map + depth-variant RL)
- :func:`metrics` - PSNR / SSIM / PCC with an explicit data range
- :func:`read_image`, :func:`write_image` - tifffile I/O with pixel size
"""

from importlib import import_module

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-refocus")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

_LAZY = {
    "psf_bank": "optics",
    "Optics": "optics",
    "BACKGROUND": "optics",
    "simulate": "simulate",
    "tilted_level_field": "simulate",
    "undulating_level_field": "simulate",
    "deconvolve": "deconvolution",
    "iter_deconvolve": "deconvolution",
    "patch_grid": "tiling",
    "PatchGrid": "tiling",
    "metrics": "metrics",
    "compare": "metrics",
    "read_image": "io",
    "write_image": "io",
    "Progress": "_progress",
    "refocus": "methods",
    "iter_refocus": "methods",
    "list_methods": "methods",
    "RefocusResult": "methods",
    "defocus_map": "defocus",
    "iter_defocus_map": "defocus",
    "DefocusMap": "defocus",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
