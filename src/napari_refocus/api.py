"""The public functions that take any image: eager (numpy) or lazy (dask, zarr).

This is the one place where an image in memory and a bigger-than-memory one are told apart:
arrays in memory go to :mod:`napari_refocus.methods`, lazy ones to the block-by-block executor
:mod:`napari_refocus.bigimage`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .core.progress import Progress
from .core.tiling import PATCH, STRIDE


def is_lazy(image) -> bool:
    """True for arrays processed block by block (dask, zarr)."""
    mod = type(image).__module__
    return mod.startswith("dask") or mod.startswith("zarr")


def check_weights_file(path, *, like: str) -> None:
    """A custom weights file for a network whose shipped weights are ``like``: it must exist
    and be a complete safetensors file holding the same architecture (else a one-line
    ValueError naming the file and what is wrong; FileNotFoundError when it is missing).
    Only the header is read; nothing is ever unpickled."""
    from .models.loader import check_architecture, resolve_path

    check_architecture(resolve_path(path), like)


def check_method_params(method, params: dict) -> dict:
    """``params`` of a registered method (or its name) checked before any work, with the same
    errors the CLI and the widgets get: unknown names (a ValueError naming the valid ones),
    every value against :data:`napari_refocus.core.validation.RULES` (positive sizes,
    ranges), an optics mapping's fields and a custom ``weights=`` file. Returns ``params``."""
    from .core.validation import check_keywords, check_optics_mapping, check_options
    from .methods.registry import get_method
    from .methods.run import split_inputs

    m = get_method(method)
    raw, _ = split_inputs(m, params)
    where = f"method {m.name!r}"
    check_keywords(raw, m.parameter_names, where=where)
    check_options({k: v for k, v in raw.items() if k != "optics"}, where=where)
    if isinstance(raw.get("optics"), dict):
        check_optics_mapping(raw["optics"])
    if raw.get("weights") is not None and m.weights:
        check_weights_file(raw["weights"], like=m.weights[0])
    return params


def refocus(image, *, method="lbdvd", device="auto", progress=None, axes=None, **params):
    """Restore an out-of-focus 2-D image (y, x) with a registered method.

    Parameters
    ----------
    image : (Y, X) array of intensities (numpy), or a dask/zarr array (bigger than memory).
    method : str
        A name from :func:`list_methods` ("lbdvd" = DelpNet map + depth-variant RL).
    device : "auto" | "cpu" | "cuda" | "mps"
    progress : callable, optional, called with every :class:`~napari_refocus.Progress`.
    axes : str, optional
        For a stack or an RGB image in memory, its axes in tifffile's letters (``"ZYX"``,
        ``"TCYX"``, ``"YXS"`` for RGB/RGBA): every 2-D (Y, X) plane is restored on its own
        (RGBA alpha copied), and the result has the input's axes. Default: a 2-D image.
    **params
        The method's parameters (see ``get_method(name).describe()``; unknown names are a
        ValueError listing the valid ones), optics fields (``pixel_um=``, ``na=`` ...) for the
        physics methods, and ``defocus_map=`` (lbdvd) to reuse a map.

    Returns
    -------
    RefocusResult
        ``image`` is float32 in the input's units (``upscale`` x larger for x2 methods); for a
        lazy input it is a lazy dask array computed block by block when read, and
        ``defocus_map`` is None.

    Examples
    --------
    >>> import napari_refocus as nr
    >>> result = nr.refocus(image, method="rl", level=4, pixel_um=0.65)  # doctest: +SKIP
    """
    from .methods.registry import get_method
    from .methods.run import check_weights, refocus_array, split_inputs

    check_method_params(method, params)
    if not is_lazy(image):
        if axes is not None and axes.upper() != "YX":
            return _refocus_planes(image, axes=axes, method=method, device=device, progress=progress, **params)
        if axes is None and np.ndim(image) > 2:  # say how to run a stack, not only that it is not 2-D
            raise ValueError(f"image is {np.ndim(image)}-D with shape {np.shape(image)}: give axes= (e.g. 'ZYX' for a "
                             "stack, 'YXS' for RGB) to restore every 2-D plane, or pass one plane")
        return refocus_array(image, method=method, device=device, progress=progress, **params)
    from .bigimage import prepare
    from .methods.base import RefocusResult

    m = get_method(method)
    raw, inputs = split_inputs(m, params)
    if inputs:
        raise ValueError(f"{', '.join(inputs)} cannot be given for an image processed block by block")
    parsed = m.parse(**raw)
    if getattr(parsed, "weights", None) is None:
        check_weights(m)
    if len(image.shape) != 2 or not np.issubdtype(np.dtype(image.dtype), np.number):
        raise ValueError(f"image must be a 2-D numeric array, got shape {image.shape}, dtype {image.dtype}")
    t0 = time.perf_counter()
    run = prepare(image, m, parsed, device=device)
    restored = run.lazy()
    if progress:
        progress(Progress(1, 1, "lazy"))
    return RefocusResult(image=restored, method=m.name, parameters=parsed.as_dict(), upscale=m.upscale,
                         seconds=time.perf_counter() - t0, device=str(run.device),
                         notes=[f"computed block by block ({run.block} px) when read", *run.notes])


def _refocus_planes(image, *, axes, method, device, progress, **params):
    """:func:`refocus` of every 2-D plane of an nD/RGB array (the core's plane driver)."""
    from .core.planes import iter_map_planes
    from .core.progress import drain
    from .methods.registry import get_method
    from .methods.run import iter_refocus

    m = get_method(method)

    def job(plane):
        res = yield from iter_refocus(plane, method=m, device=device, **params)
        return res.image, res

    t0 = time.perf_counter()
    stack, first = drain(iter_map_planes(image, job, axes=axes, upscale=m.upscale), progress)
    first.image, first.seconds = stack, time.perf_counter() - t0
    first.notes = list(first.notes) + [f"every 2-D plane of a {axes} array restored on its own; "
                                       "parameters, weights and device are those of the first plane"]
    first.defocus_map = None if stack.ndim > 2 else first.defocus_map
    return first


def defocus_map(image, *, weights=None, device="auto", stride: int = STRIDE, batch_size: int = 256,
                progress=None, tta: bool = False, optics=None, normalise: bool = True, beyond_top: bool = True,
                **optics_fields):
    """Defocus class (0..10, 11 = background) and defocus (um) of every 84x84 patch of a 2-D image.

    Parameters
    ----------
    image : (Y, X) array of intensities in any dtype, exposure or scale; or a dask/zarr array,
        read block by block (the map is the same as for the image in memory).
    weights : None for the shipped ``weights/delpnet.safetensors``, or a .safetensors path.
    device : "auto" | "cpu" | "cuda" | "mps".
    stride : grid step in map pixels (1..84; 42 = half a patch, the LB-DVD default).
    batch_size : patches per forward pass.
    progress : optional callback receiving :class:`~napari_refocus.Progress`.
    tta : average DelpNet over the 8 flips/rotations of each patch (8x slower).
    optics, **optics_fields : the objective the image was taken with (an ``Optics`` and/or its
        fields: ``na=``, ``pixel_um=``, ``refractive_index=``, ``wavelength_nm=``,
        ``psf_model=``); default: DelpNet's training objective.
    normalise : put intensities on DelpNet's scale first (default; False = raw 16-bit counts).
    beyond_top : where patches are at the top class, read the image again at half its sampling
        and give those it reads farther the defocus read there (``DefocusMap.coarse``; to ~36 um
        at the paper's objective instead of 20).

    Returns
    -------
    DefocusMap
        ``levels`` on the map's grid (``scale`` native pixels per map pixel) and
        ``defocus_um``: each class as a defocus of this objective.
    """
    from .core.optics import resolve_optics
    from .core.validation import check_keywords, check_optics_mapping, check_options
    from .core.validation import optics_fields as fields
    from .methods.defocus import defocus_map_array

    own = ("weights", "device", "stride", "batch_size", "progress", "tta", "optics", "normalise", "beyond_top")
    check_keywords(optics_fields, own + fields(), where="defocus_map")  # names the valid ones
    check_options({"stride": stride, "batch_size": batch_size, **optics_fields}, where="defocus_map")
    if isinstance(optics, dict):
        check_optics_mapping(optics)
        optics = resolve_optics(None, **optics)
    if weights is not None:
        check_weights_file(weights, like="delpnet")
    if optics is not None or optics_fields:
        optics = resolve_optics(optics, **optics_fields)
    if is_lazy(image):
        if len(image.shape) != 2 or min(image.shape) < PATCH:
            raise ValueError(f"image must be 2-D and at least {PATCH}x{PATCH}, got shape {image.shape}")
        from .bigimage import DEFAULT_BLOCK, whole_image_sample
        from .methods.lbdvd import METHOD as LBDVD
        from .methods.lbdvd_blocks import chunked_defocus_map

        from .bigimage import resolve_params

        chose = ""
        params = None
        if optics is not None:  # map_pixel_um="auto": chosen once, as lbdvd's blocks choose it
            params = LBDVD.parse(optics=optics, stride=stride, tta=tta, normalise=normalise, beyond_top=beyond_top,
                                 weights=None if weights is None else str(weights))
            params, chose = resolve_params(image, LBDVD, params, device=device)
            optics = params.optics
        # the same whole-image intensity statistics lbdvd's blocks use
        sample, s = whole_image_sample(image, DEFAULT_BLOCK)
        stats = LBDVD.image_stats(sample, params=params, sample_stride=s)["stats"] if normalise else None
        dm = chunked_defocus_map(image, block=DEFAULT_BLOCK, weights=weights, device=device, stride=stride,
                                 progress=progress, stats=stats, tta=tta, batch_size=batch_size, optics=optics,
                                 beyond_top=beyond_top)
        return dataclasses.replace(dm, choice=chose) if chose else dm
    return defocus_map_array(image, weights=weights, device=device, stride=stride, batch_size=batch_size,
                             progress=progress, tta=tta, optics=optics, normalise=normalise, beyond_top=beyond_top)
