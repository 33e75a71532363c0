"""Microscope formats read through bioio (CZI, ND2, LIF), when the user installed them.

``pip install "napari-refocus[formats]"`` installs bioio with the CZI, ND2 and LIF readers;
without them a file with one of these suffixes is a one-line error naming that extra. The
image (first scene) comes as bioio gives it: a dask array in bioio's dimension order
(``TCZYX``, ``TCZYXS`` for RGB) with its physical pixel sizes in micrometres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BIOIO_SUFFIXES = (".czi", ".nd2", ".lif")
EXTRA = "napari-refocus[formats]"


def is_bioio_path(path) -> bool:
    """Whether ``path`` has a suffix read through bioio."""
    return Path(path).suffix.lower() in BIOIO_SUFFIXES


def _bioimage(path):
    path = Path(path)
    try:
        from bioio import BioImage
    except ImportError:
        raise ValueError(f"reading {path.suffix} files needs bioio and its readers: "
                         f"pip install \"{EXTRA}\"") from None
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    try:
        return BioImage(path)
    except Exception as exc:  # noqa: BLE001 - a missing reader plugin, a damaged file ...
        raise ValueError(f"cannot read {path} with bioio ({exc}); the readers come with "
                         f"pip install \"{EXTRA}\"") from None


def _info(path, img, shape, dtype) -> dict:
    axes = str(img.dims.order).upper()
    sizes = img.physical_pixel_sizes  # (Z, Y, X) in um, None where unknown
    physical = {}
    for letter, value in zip("ZYX", (sizes.Z, sizes.Y, sizes.X)):
        if value and letter in axes:
            physical[letter] = {"scale": float(value), "translation": 0.0, "unit": "micrometer"}
    pixel_um = float(sizes.X) if sizes.X else None
    optics = {"pixel_um": pixel_um} if pixel_um else {}
    return {"path": str(path), "axes": axes, "shape": tuple(int(n) for n in shape), "dtype": np.dtype(dtype),
            "pixel_um": pixel_um, "optics": optics, "optics_source": dict.fromkeys(optics, "file"),
            "physical": physical}


def open_bioio(path):
    """The file's first scene as a lazy dask array and its info (``axes``, ``pixel_um``,
    ``physical``, ``shape``, ``dtype``)."""
    img = _bioimage(path)
    data = img.dask_data
    return data, _info(path, img, data.shape, data.dtype)


def read_bioio(path) -> tuple[np.ndarray, dict]:
    """The file's first scene in memory and its info."""
    data, info = open_bioio(path)
    return np.asarray(data), info
