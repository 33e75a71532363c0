"""The registry of restoration methods, shared by the widgets, the CLI and the benchmarks.

Adding a method = one :class:`Method` entry (plus its model module and weights). Each
method's ``run`` is a generator ``run(image, *, device, progress_stage..., **params)`` that
yields :class:`~napari_refocus._progress.Progress` and returns a :class:`RefocusResult`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.progress import Progress, drain
from ..core.validation import as_image


@dataclass
class RefocusResult:
    """What a method returns: the restored image and how it was made.

    ``image`` is float32 in the input's intensity units; ``upscale`` > 1 means the image is
    that many times larger than the input (a viewer divides the input's scale by it).
    """

    image: np.ndarray
    method: str
    parameters: dict = field(default_factory=dict)
    defocus_map: Any = None
    upscale: int = 1
    seconds: float = 0.0
    weights_sha256: dict = field(default_factory=dict)
    device: str = "cpu"

    def provenance(self) -> dict:
        """A JSON-able record for layer metadata and TIFF descriptions."""
        from .. import __version__

        return {
            "method": self.method,
            "parameters": {k: v for k, v in self.parameters.items() if _jsonable(v)},
            "weights_sha256": self.weights_sha256,
            "napari_refocus_version": __version__,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "upscale": self.upscale,
        }


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))


@dataclass(frozen=True)
class Method:
    """One registered restoration method."""

    name: str
    title: str
    description: str
    run: Callable
    weights: tuple = ()
    upscale: int = 1
    defaults: dict = field(default_factory=dict)
    #: context (input pixels) a block of a big image is read with, for block-by-block runs
    halo: int = 96

    def weights_present(self) -> bool:
        from ..core.resources import weights_dir

        try:
            folder = weights_dir()
        except FileNotFoundError:
            return False
        return all((folder / f"{w}.safetensors").exists() for w in self.weights)


def _weights_hashes(names) -> dict:
    if not names:
        return {}
    from ..models.loader import weights_hash

    return {n: weights_hash(n) for n in names}


# ------------------------------------------------------------------------------ methods
def _run_lbdvd(image, *, device="auto", defocus_map=None, iterations=15, montage_weights="triangular",
               padding="reflect", stride=42, tta=False, optics=None, **optics_kwargs):
    """LB-DVD: DelpNet defocus map, then depth-variant Richardson-Lucy with that map."""
    from ..core.rl import iter_deconvolve

    if defocus_map is None:
        from .defocus import iter_defocus_map

        defocus_map = yield from iter_defocus_map(image, device=device, stride=stride, tta=bool(tta))
    elif tuple(defocus_map.grid.image_shape) != tuple(np.shape(image)):
        raise ValueError(
            f"the defocus map was made for an image of shape {defocus_map.grid.image_shape}, "
            f"not {np.shape(image)}"
        )
    restored = yield from iter_deconvolve(
        image, level_map=defocus_map.levels, iterations=iterations, device=device,
        patch=defocus_map.grid.patch, stride=defocus_map.grid.stride,
        montage_weights=montage_weights, padding=padding, optics=optics, **optics_kwargs,
    )
    return restored, {"defocus_map": defocus_map}


def _run_rl(image, *, device="auto", level=5, iterations=15, optics=None, **optics_kwargs):
    """Depth-invariant Richardson-Lucy with one known defocus level for the whole image."""
    from ..core.rl import iter_deconvolve

    restored = yield from iter_deconvolve(
        image, level=level, iterations=iterations, device=device, optics=optics, **optics_kwargs
    )
    return restored, {}


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (names are unique)."""
    REGISTRY[method.name] = method
    return method


register(Method(
    name="lbdvd",
    title="LB-DVD (DelpNet + depth-variant RL)",
    description="Predicts a defocus level per 84x84 patch with DelpNet and deconvolves each "
                "patch with the Born-Wolf PSF of its level (He et al. 2020).",
    run=_run_lbdvd,
    weights=("delpnet",),
    defaults={"iterations": 15, "stride": 42, "montage_weights": "triangular", "padding": "reflect", "tta": False},
))
register(Method(
    name="rl",
    title="Richardson-Lucy, one known level",
    description="Depth-invariant Richardson-Lucy with the Born-Wolf PSF of one defocus level.",
    run=_run_rl,
    defaults={"level": 5, "iterations": 15},
))


def _register_learned_methods() -> None:
    """The learned generators register themselves when their module is imported."""
    import importlib.util

    if importlib.util.find_spec(f"{__package__}.learned") is not None:
        from . import learned  # noqa: F401


_register_learned_methods()


def list_methods() -> list[Method]:
    """Registered methods, ``lbdvd`` first."""
    return list(REGISTRY.values())


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None


def iter_refocus(image, *, method: str = "lbdvd", device="auto", **params):
    """Generator form of :func:`refocus`: yields Progress, returns a :class:`RefocusResult`."""
    from ..core.devices import resolve_device

    from ..bigimage import is_lazy

    m = get_method(method)
    if not m.weights_present():
        missing = ", ".join(f"{w}.safetensors" for w in m.weights)
        raise ValueError(f"method {method!r} needs weights/{missing}, which is not installed")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    if is_lazy(image):
        # bigger than memory: a lazy dask array, computed block by block when read
        if len(image.shape) != 2 or not np.issubdtype(np.dtype(image.dtype), np.number):
            raise ValueError(f"image must be a 2-D numeric array, got shape {image.shape}, dtype {image.dtype}")
        from ..bigimage import lazy_method

        restored, extra = lazy_method(image, m.name, device=dev, **params), {}
        yield Progress(1, 1, "lazy")
    else:
        arr = as_image(image)
        restored, extra = yield from m.run(arr, device=dev, **params)
    return RefocusResult(
        image=restored if is_lazy(restored) else np.asarray(restored, dtype=np.float32),
        method=m.name,
        parameters={**m.defaults, **params},
        defocus_map=extra.get("defocus_map"),
        upscale=m.upscale,
        seconds=time.perf_counter() - t0,
        weights_sha256=_weights_hashes(m.weights),
        device=str(dev),
    )


def refocus(image, *, method: str = "lbdvd", device="auto", progress=None, **params) -> RefocusResult:
    """Restore an out-of-focus 2-D image (y, x) with a registered method.

    ``method``: a name from :func:`list_methods` ("lbdvd" = DelpNet map + depth-variant
    RL). ``device``: "auto" | "cpu" | "cuda" | "mps". Method parameters are keywords (for
    lbdvd: ``defocus_map=`` to reuse a map, ``iterations``, ``stride``, optics fields).
    ``progress`` is called with every :class:`Progress`. Returns a :class:`RefocusResult`
    whose ``image`` is float32 in the input's units and ``defocus_map`` the map used.
    A dask (or zarr) ``image`` gives a lazy dask ``image``, computed block by block with
    bounded memory when it is read (see :mod:`napari_refocus.chunked`); its ``defocus_map``
    is then None.
    """
    return drain(iter_refocus(image, method=method, device=device, **params), progress)


__all__ = ["Method", "RefocusResult", "REGISTRY", "register", "list_methods", "get_method",
           "refocus", "iter_refocus", "Progress"]
