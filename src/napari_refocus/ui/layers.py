"""Layer helpers: what a layer's axes are, which plane is shown, and where a result goes.

The GUI side only looks at layer metadata (shape, scale, which plane the sliders show);
pixel data is read by :func:`read_plane`, which the widgets call inside their workers.
:func:`add_result_layer` puts a :class:`~napari_refocus.methods.RefocusResult` into a new
layer over its source (scale, translate, provenance) and never touches the source layer.
"""

from __future__ import annotations

import string

import numpy as np

from ..core.planes import rgb_mean


def is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def is_result(layer) -> bool:
    """A layer this plugin computed (it records its method and source layer)."""
    return "method" in layer.metadata and "source_layer" in layer.metadata


def layer_axes(layer) -> str:
    """tifffile-style axes of a layer's data for :mod:`napari_refocus.core.planes`.

    ``"YXS"`` for RGB(A); otherwise the layer's own one-letter axis labels when it has them
    (``axis_labels=("t", "z", "y", "x")`` -> ``"TZYX"``), else ``"YX"`` after the leading
    axes: ``"ZYX"`` for a 3-D layer, unnamed (``Q``) axes before ``Z`` for more.
    """
    ndim = layer_data(layer).ndim
    if layer.rgb:
        return "Q" * (ndim - 3) + "YXS"
    labels = [str(a).upper() for a in (getattr(layer, "axis_labels", None) or ())]
    named = "".join(labels)
    if len(labels) == ndim and len(named) == ndim and named.endswith("YX") and "S" not in named \
            and all(ch in string.ascii_uppercase for ch in named) and len(set(named)) == ndim:
        return named
    lead = ndim - 2
    return ("Q" * (lead - 1) + "Z" if lead else "") + "YX"


def plane_count(layer) -> int:
    """How many 2-D planes a layer's data is restored as (RGB: one per colour channel)."""
    from ..core.planes import plane_indices

    return len(plane_indices(tuple(layer_data(layer).shape), axes=layer_axes(layer)))


def layer_pixel_um(layer) -> tuple[float | None, str]:
    """``(pixel size in um, how it is known)`` from a layer's Y/X scale: ``"units"`` when the
    layer's units are a length (napari's ``layer.units``), ``"assumed"`` when they are not
    (napari's default ``pixel``) and the scale looks like micrometres; ``(None, "")`` for
    napari's default scale 1 without units, a scale that differs between Y and X, or one far
    from any pixel size."""
    from ..io.read import um_per

    s = [float(v) for v in layer.scale[-2:]]
    units = {str(u) for u in tuple(getattr(layer, "units", None) or ())[-2:]}
    factor = um_per(units.pop()) if len(units) == 1 else None
    if abs(s[0] - s[1]) > 1e-9 * max(s) or s[0] <= 0:
        return None, ""
    if factor:
        return s[0] * factor, "units"
    if s[0] != 1.0 and 0.001 <= s[0] <= 100:
        return s[0], "assumed"
    return None, ""


def layer_optics(layer) -> list[tuple[str, dict]]:
    """What a layer says about its optics, most trusted first: ``(source, {field: value})``
    pairs for :func:`napari_refocus.io.optics.merge_optics`. Its scale in length units, then
    its metadata (``optics``: Optics fields, ``pixel_um``; what napari-refocus's samples and
    writer keep), then a scale taken to be in micrometres."""
    from ..io.optics import OPTICS_FIELDS, check_optics_values

    pixel, how = layer_pixel_um(layer)
    md = getattr(layer, "metadata", None) or {}
    stated = list(md["optics"].items()) if isinstance(md.get("optics"), dict) else []
    kept = {}
    for name, value in [*stated, ("pixel_um", md.get("pixel_um"))]:
        try:  # a value of the wrong type or an unknown key is not taken
            if name in OPTICS_FIELDS and name not in kept and value is not None:
                kept.update(check_optics_values({name: value}))
        except ValueError:
            pass
    return [("layer scale", {"pixel_um": pixel} if how == "units" else {}), ("layer metadata", kept),
            ("layer scale (µm assumed)", {"pixel_um": pixel} if how == "assumed" else {})]


def layer_data(layer):
    """The array a widget works on: a multiscale (pyramid) layer's full-resolution level, the
    one its scale, translate and data coordinates refer to; else ``layer.data``. Not read here:
    level 0 of a pyramid is usually a lazy dask or zarr array."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def displayed_plane_index(viewer, layer) -> tuple:
    """Index into :func:`layer_data` of the 2-D plane shown now (``()`` for a 2-D layer)."""
    data = layer_data(layer)
    lead = data.ndim - (3 if layer.rgb else 2)
    if lead <= 0:
        return ()
    pos = np.asarray(layer.world_to_data(viewer.dims.point))
    return tuple(int(np.clip(np.round(pos[ax]), 0, data.shape[ax] - 1)) for ax in range(lead))


def read_plane(data, index: tuple = (), rgb: bool = False, window=None) -> np.ndarray:
    """One 2-D plane of ``data`` (RGB: mean of the colour channels), read now.

    Call it in a worker: ``data`` may be a dask or zarr array. ``window`` = ``(y0, y1, x0,
    x1)`` reads only that part of the plane.
    """
    yx = (slice(window[0], window[1]), slice(window[2], window[3])) if window else ()
    plane = np.asarray(data[(*index, *yx)])
    if rgb:
        plane = rgb_mean(plane)
    return plane


def result_transform(scale, translate, upscale: int = 1):
    """(scale, translate) of a result whose last two axes are ``upscale`` x finer.

    Keeps the pixel areas aligned: input pixel k covers [t + (k-1/2)s, t + (k+1/2)s], and
    its ``upscale`` output pixels tile exactly that interval.
    """
    scale = np.asarray(scale, dtype=float).copy()
    translate = np.asarray(translate, dtype=float).copy()
    if upscale and upscale != 1:
        s = scale[-2:]
        new = s / upscale
        translate[-2:] = translate[-2:] - s / 2 + new / 2
        scale[-2:] = new
    return tuple(scale), tuple(translate)


def source_path(layer) -> str | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else None


def display_limits(stack) -> tuple[float, float] | None:
    """Contrast limits of a result in memory (its range), None for a lazy one (reading its
    range would compute all of it). Call it in the worker: on a 4096x4096 result it takes tens
    of ms, which the GUI thread would otherwise stall for in :func:`add_result_layer`."""
    from ..api import is_lazy

    if is_lazy(stack):
        return None
    lo, hi = float(np.min(stack)), float(np.max(stack))
    return lo, (hi if hi > lo else lo + 1)


def placed_like(source, scale, translate) -> dict:
    """``scale``, ``translate`` and the source's rotate, shear and affine for a layer of the
    source's ndim drawn over it (a result, an upscaled result, a defocus map). napari maps data
    to world as ``affine(R @ Sh @ diag(scale) @ d + translate)``; ``translate`` here is given as
    if the source were neither rotated nor sheared, so its offset from the source's translate is
    turned by ``R @ Sh`` (without it an x2 result or a map of a rotated layer lay off its source)."""
    from napari.utils.transforms import Affine

    linear = Affine(rotate=source.rotate, shear=source.shear, ndim=source.ndim).linear_matrix
    origin = np.asarray(source.translate, dtype=float)
    shift = np.asarray(translate, dtype=float) - origin
    return {"scale": tuple(scale), "translate": tuple(origin + linear @ shift), "rotate": source.rotate,
            "shear": source.shear, "affine": source.affine.affine_matrix}


def add_result_layer(viewer, source, stack, result, extra: dict | None = None, *, limits=None):
    """Add ``stack`` as a new image layer over ``source``; returns the new layer.

    Name ``"{source} [{method}]"``, the source's scale and translate (adjusted for an
    upscaling method), its colormap, and the provenance in ``metadata``. ``limits``: the
    contrast limits from :func:`display_limits` computed in the worker (else computed here).
    """
    from ..api import is_lazy

    rgb = bool(source.rgb) and stack.ndim == source.data.ndim
    nd = stack.ndim - (1 if rgb else 0)  # a single plane of a stack keeps the last two axes
    scale, translate = result_transform(source.scale[-nd:], source.translate[-nd:], result.upscale)
    meta = dict(result.provenance())
    meta["source_layer"] = source.name
    path = source_path(source)
    if path:
        meta["source_path"] = path
    meta.update(extra or {})
    kwargs = dict(name=f"{source.name} [{result.method}]", scale=scale, translate=translate,
                  metadata=meta, rgb=rgb)
    if nd == source.ndim:  # a rotated, sheared or affine-placed source: the result lies where it lies
        kwargs.update(placed_like(source, scale, translate))
    if rgb or is_lazy(stack):  # a lazy result's range would compute all of it
        kwargs["contrast_limits"] = tuple(float(c) for c in source.contrast_limits)
    else:
        kwargs["contrast_limits"] = tuple(limits) if limits is not None else display_limits(stack)
    if not rgb:
        kwargs["colormap"] = source.colormap.name
    for key in ("axis_labels", "units"):
        value = getattr(source, key, None)
        if value is not None:
            kwargs[key] = tuple(value)[-nd:]
    return viewer.add_image(stack, **kwargs)
