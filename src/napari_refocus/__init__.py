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
- :class:`CancelToken`, :func:`cancel_scope`, :class:`Cancelled` - stop a running call from
  another thread (it raises ``Cancelled`` within one RL iteration or network layer)
"""

from importlib import import_module

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-refocus")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

# These modules import only numpy at load time (torch, scipy and scikit-image inside their
# functions), so importing them here is cheap. It must be eager: ``simulate`` and ``metrics``
# are both submodules and functions, and a lazily bound name would be replaced by the
# submodule as soon as anything imported ``napari_refocus.simulate`` directly.
from .core.progress import Cancelled, CancelToken, Progress, cancel_scope
from .core.rl import deconvolve, iter_deconvolve
from .io import read_image, write_image
from .core.metrics import compare, metrics
from .core.optics import BACKGROUND, Optics, psf_bank
from .core.forward import simulate, tilted_level_field, undulating_level_field
from .core.tiling import PatchGrid, patch_grid

_EAGER = ["Cancelled", "CancelToken", "Progress", "cancel_scope", "deconvolve", "iter_deconvolve", "read_image",
          "write_image", "compare", "metrics", "BACKGROUND", "Optics", "psf_bank", "simulate", "tilted_level_field",
          "undulating_level_field", "PatchGrid", "patch_grid"]

_LAZY = {
    "refocus": "api",
    "defocus_map": "api",
    "is_lazy": "api",
    "iter_refocus": "methods.run",
    "list_methods": "methods.registry",
    "get_method": "methods.registry",
    "RefocusResult": "methods.base",
    "iter_defocus_map": "methods.defocus",
    "DefocusMap": "methods.defocus",
}

__all__ = sorted(_EAGER + list(_LAZY)) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
