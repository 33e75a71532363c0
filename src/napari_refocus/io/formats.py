"""Which reader a path goes to, and the names of outputs.

* OME-Zarr stores (``*.zarr``): :mod:`.zarr` (lazy, chunk by chunk);
* ``.czi``, ``.nd2``, ``.lif``: bioio (:mod:`.bioio_reader`, the ``formats`` extra);
* everything else (TIFF, OME-TIFF, ImageJ TIFF, PNG ...): :mod:`.read`.

Every reader gives ``(array, info)`` with the same ``info`` keys (``axes``, ``pixel_um``,
``optics``, ``optics_source``; ``physical`` where the format states a scale per axis).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.planes import normalise_axes, rgb_mean
from .bioio_reader import is_bioio_path, open_bioio, read_bioio
from .read import open_image, read_image, read_info
from .zarr import is_zarr_path, open_ome_zarr, read_ome_zarr, read_ome_zarr_info, zarr_stem

#: the output formats of refocus, batch and defocus-map
FORMATS = ("tiff", "ome-zarr")
SUFFIX = {"tiff": ".tif", "ome-zarr": ".ome.zarr"}


def _axes(info: dict, shape, axes) -> dict:
    if axes is not None:
        info = {**info, "axes": normalise_axes(axes, len(shape))}
    return info


def _reader(path, *, axes, lazy: bool):
    if is_zarr_path(path):
        data, info = (open_ome_zarr if lazy else read_ome_zarr)(path)
    elif is_bioio_path(path):
        data, info = (open_bioio if lazy else read_bioio)(path)
    else:
        return (open_image if lazy else read_image)(path, axes=axes)
    return data, _axes(info, data.shape, axes)


def read_any(path, *, axes: str | None = None):
    """``(array in memory, info)`` of any supported file or store."""
    return _reader(path, axes=axes, lazy=False)


def open_any(path, *, axes: str | None = None):
    """``(array, info)``: lazy (read block by block) for OME-Zarr, TIFF and bioio files."""
    return _reader(path, axes=axes, lazy=True)


def info_any(path, *, axes: str | None = None) -> dict:
    """``info`` with ``shape`` and ``dtype`` (OME-Zarr and TIFF without reading pixels)."""
    if is_zarr_path(path):
        info = read_ome_zarr_info(path)
    elif is_bioio_path(path):
        data, info = open_bioio(path)
    else:
        return read_info(path, axes=axes)
    return _axes(info, info["shape"], axes)


def output_stem(path) -> str:
    """The name outputs of ``path`` start with: ``a.ome.zarr`` -> ``a``; a file's stem
    (``a.tif`` -> ``a``, as the outputs have always been named)."""
    return zarr_stem(path) if is_zarr_path(path) else Path(path).stem


def output_name(path, suffix: str = "_refocused", fmt: str = "tiff") -> str:
    """``<stem><suffix>.tif`` or ``<stem><suffix>.ome.zarr`` of an input ``path``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return f"{output_stem(path)}{suffix}{SUFFIX[fmt]}"


def one_plane(path, image, axes: str):
    """The 2-D image a defocus map is read from: an RGB image's mean colour (as the Defocus map
    widget reads it); a stack is a one-line error pointing to the commands made for stacks."""
    if len(axes) == 3 and axes.endswith("S"):
        return rgb_mean(image)
    if np.ndim(image) != 2:
        raise ValueError(f"defocus-map reads one 2-D image; {path} has axes {axes or '?'} and shape "
                         f"{tuple(np.shape(image))}: 'napari-refocus triage' ranks a z-stack's planes, "
                         f"'refocus' restores every plane")
    return image
