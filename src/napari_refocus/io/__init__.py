"""Reading and writing images with tifffile, keeping dtype and pixel size (um).

Writes never replace an input: a path that exists is refused unless ``overwrite=True``,
and the file is written to a temporary name first and renamed into place (atomic).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def read_image(path) -> tuple[np.ndarray, dict]:
    """Read an image file; returns ``(array, info)``.

    ``info`` has ``pixel_um`` (float or None) and ``path``. TIFF (incl. ImageJ and OME
    metadata) through tifffile; PNG and other formats through imageio.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    info = {"path": str(path), "pixel_um": None}
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            arr = tif.asarray()
            info["pixel_um"] = _tiff_pixel_um(tif)
            desc = tif.pages[0].tags.get("ImageDescription")
            if desc is not None and str(desc.value).startswith("{"):
                try:
                    info["metadata"] = json.loads(desc.value)
                except ValueError:
                    pass
    else:
        import imageio.v3 as iio

        try:
            arr = iio.imread(path)
        except Exception as exc:  # noqa: BLE001 - imageio raises many types
            raise ValueError(f"cannot read {path}: {exc}") from None
    return np.asarray(arr), info


def read_pixel_um(path) -> float | None:
    """Pixel size (um) from a TIFF's metadata, without reading its pixels."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _tiff_pixel_um(tif)


def _tiff_pixel_um(tif) -> float | None:
    if tif.is_ome and tif.ome_metadata:
        import re

        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        if m:
            return float(m.group(1))
    page = tif.pages[0]
    res = page.tags.get("XResolution")
    if res is None:
        return None
    num, den = res.value
    if not num:
        return None
    per_unit = num / den  # pixels per unit
    unit = None
    if tif.is_imagej and tif.imagej_metadata:
        unit = str(tif.imagej_metadata.get("unit", "")).lower()
    ru = page.tags.get("ResolutionUnit")
    if unit in ("um", "micron", "\\u00b5m", "µm"):
        return 1.0 / per_unit
    if ru is not None and int(ru.value) == 3:  # centimetre
        return 1e4 / per_unit
    if ru is not None and int(ru.value) == 2 and not unit:  # inch; a plain DPI is not a pixel size
        return None
    return None


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A reader never sees a half-written file, and a killed writer leaves only a hidden
    ``.<name>.*.tmp`` file (removed by the batch runner on restart).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_not_input(path, protect) -> None:
    """ValueError if ``path`` is one of the ``protect`` files (same path or same file)."""
    path = Path(path)
    for p in (p for p in protect if p is not None):
        same = Path(p).resolve() == path.resolve() or (
            Path(p).exists() and path.exists() and os.path.samefile(p, path))
        if same:
            raise ValueError(f"refusing to write over the input file {path}")


def write_image(path, data, *, pixel_um=None, metadata=None, overwrite: bool = False, protect=()):
    """Write a TIFF atomically, keeping ``data``'s dtype and the pixel size (um).

    ``metadata`` (JSON-able dict) goes into the ImageDescription. ``protect``: paths that
    must never be written (the inputs of a job), even with ``overwrite``.
    """
    import tifffile

    path = Path(path)
    check_not_input(path, protect)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; choose another output or pass overwrite")
    data = np.asarray(data)
    kwargs = {}
    meta = dict(metadata or {})
    if pixel_um:
        kwargs["resolution"] = (1e4 / float(pixel_um), 1e4 / float(pixel_um))
        kwargs["resolutionunit"] = "CENTIMETER"
        meta["pixel_um"] = float(pixel_um)
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, data, description=json.dumps(meta, default=str), metadata=None, **kwargs)
    return path
