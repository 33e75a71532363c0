"""napari writer: one image layer -> TIFF with its pixel size and provenance (npe2 writer).

Never writes over the file a layer was read from (nor the file its source layer came from).
No Qt imports here; napari is only looked at if it is already imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _jsonable(value):
    """``value`` with everything that is not JSON-able left out (e.g. a DefocusMap object)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v2 = _jsonable(v)
            if v2 is not _SKIP:
                out[str(k)] = v2
        return out
    if isinstance(value, (list, tuple)):
        return [v for v in (_jsonable(x) for x in value) if v is not _SKIP]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return _SKIP


_SKIP = object()


def _pixel_um(meta: dict):
    scale = meta.get("scale")
    if scale is None or len(scale) < 2:
        return None
    sy, sx = (float(v) for v in list(scale)[-2:])
    if sx <= 0 or sx == 1.0 and sy == 1.0:
        return None  # napari's default scale is not a pixel size
    return sx


def _protected_paths(meta: dict) -> list[str]:
    """Files this layer (or the layer it was computed from) was read from."""
    paths = []
    md = meta.get("metadata") or {}
    for key in ("source_path", "path"):
        if md.get(key):
            paths.append(str(md[key]))
    if meta.get("source_path"):
        paths.append(str(meta["source_path"]))
    napari = sys.modules.get("napari")
    if napari is not None and meta.get("name"):
        try:
            viewer = napari.current_viewer()
        except Exception:  # noqa: BLE001
            viewer = None
        if viewer is not None and meta["name"] in viewer.layers:
            src = getattr(viewer.layers[meta["name"]], "source", None)
            if getattr(src, "path", None):
                paths.append(str(src.path))
    return paths


def write_tiff(path: str, data, meta: dict) -> list[str]:
    """Write one image layer as TIFF: pixel size from ``meta['scale']`` (um), provenance
    (``meta['metadata']``) as JSON in the TIFF description. Returns ``[path]``.

    An existing file is replaced (napari's save dialog asked already), except the file the
    layer (or its source layer) was read from, which is refused with a ValueError.
    """
    from ..io import write_image

    meta = dict(meta or {})
    if meta.get("multiscale"):  # a pyramid: its full-resolution level, the one its scale describes
        data = data[0]
    description = _jsonable(dict(meta.get("metadata") or {}))
    description.setdefault("layer_name", meta.get("name"))
    out = write_image(Path(path), data, pixel_um=_pixel_um(meta), metadata=description,
                      overwrite=True, protect=_protected_paths(meta))
    return [str(out)]
