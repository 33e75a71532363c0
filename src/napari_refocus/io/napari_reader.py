"""napari's reader for the OME-Zarr stores napari-refocus writes: every level where it belongs.

napari-ome-zarr (0.10) applies only the first coordinate transformation of a store's level 0,
its scale: the translation after it is dropped. napari-refocus's stores carry translations that
matter: an x2 result's pixels are shifted by a quarter of an input pixel so that each input
pixel is tiled by its 2 x 2 output pixels, and a defocus map's cells are centred on their patches.
Opened through napari-ome-zarr they land off their input by those amounts. This reader (an npe2
``readers`` contribution, no Qt) takes the stores whose attributes hold ``napari_refocus``
(finished ones: :func:`.zarr.check_complete`) and gives napari each level-0 scale *and*
translation (:func:`.zarr.read_ome_zarr_info`, the same numbers the command line reads), with
the pyramid as a lazy multiscale layer. A defocus-map store opens as its NGFF label image (one
label per level, transparent background) on the patch grid.

Every other store is left to napari-ome-zarr (:func:`get_reader` returns None for it).
"""

from __future__ import annotations

from pathlib import Path

from .zarr import (
    ATTRS_KEY,
    _level_array,
    _multiscale,
    _open_group,
    is_zarr_path,
    read_ome_zarr_info,
    zarr_stem,
)

#: napari's layer keywords taken from an axis' unit (napari understands pint's names)
_UNIT_NAMES = {"micrometer", "nanometer", "millimeter", "meter", "angstrom"}


def _single(path):
    if isinstance(path, (list, tuple)):
        return path[0] if len(path) == 1 else None
    return path


def get_reader(path):
    """npe2 reader hook: :func:`read_store` for a finished napari-refocus OME-Zarr store, else
    None (other stores, files, damaged stores: napari then tries the other readers)."""
    path = _single(path)
    if path is None or not is_zarr_path(path) or not Path(path).is_dir():
        return None
    try:
        attrs = _open_group(path).attrs.asdict()
    except ValueError:
        return None
    ours = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    return read_store if isinstance(ours, dict) and ours.get("complete") is True else None


def _levels(path, group=None) -> list:
    """Every pyramid level of the store at ``path`` as a lazy dask array (finest first)."""
    import dask.array as da

    group = group if group is not None else _open_group(path)
    ms = _multiscale(group, path)
    return [da.from_zarr(_level_array(group, path, ms, k)) for k in range(len(ms["datasets"]))]


def layer_placement(info: dict) -> dict:
    """napari keywords that put level 0 of a store where its metadata says: ``scale``,
    ``translate`` (the NGFF translation of each axis), ``axis_labels`` and ``units`` (when every
    axis has one napari knows)."""
    phys = [info["physical"][a] for a in info["axes"]]
    kwargs = {"scale": tuple(p["scale"] for p in phys), "translate": tuple(p["translation"] for p in phys),
              "axis_labels": tuple(a.lower() for a in info["axes"])}
    units = [p["unit"] for p in phys]
    if all(u in _UNIT_NAMES for u in units):
        kwargs["units"] = tuple(units)
    return kwargs


def read_store(path) -> list[tuple]:
    """Layer data tuples of a napari-refocus store: the image (multiscale when it has a
    pyramid) placed by :func:`layer_placement`, or for a defocus map its label image."""
    path = str(_single(path)).rstrip("/\\")
    info = read_ome_zarr_info(path)
    group = _open_group(path)
    name = zarr_stem(path)
    meta = {ATTRS_KEY: info["metadata"], "physical": info["physical"], "source_path": path}
    labels = Path(path) / "labels" / "defocus"
    if labels.is_dir():  # a defocus map: its label image (value = level + 1, 0 = background)
        sub = read_ome_zarr_info(labels)
        data = _levels(labels)
        return [(data[0], {"name": f"{name} defocus map", "metadata": meta, "opacity": 0.55,
                           **layer_placement(sub)}, "labels")]
    data = _levels(path, group)
    kwargs = {"name": name, "metadata": meta, **layer_placement(info)}
    if "C" in info["axes"]:  # colour channels (an RGB input's samples) as one layer per channel
        c = info["axes"].index("C")
        kwargs["channel_axis"] = c
        for key in ("scale", "translate", "axis_labels", "units"):
            if key in kwargs:
                kwargs[key] = tuple(v for k, v in enumerate(kwargs[key]) if k != c)
    return [(data if len(data) > 1 else data[0], {**kwargs, "multiscale": len(data) > 1}, "image")]
