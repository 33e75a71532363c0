"""OME-Zarr (OME-NGFF) images: reading, their physical metadata and finished-store checks.

Reading takes NGFF 0.1 to 0.5 stores (zarr v2 ``.zattrs`` or zarr v3 ``zarr.json`` with the
``ome`` key): the axes of the first multiscale image become the package's axes letters
(``t, c, z, y, x`` -> ``"TCZYX"``), the level's ``coordinateTransformations`` (the dataset's,
then the multiscale's) give every axis a scale and a translation, and the axis units turn the
x scale into ``pixel_um`` (None when the store names no unit: a scale without a unit is not a
pixel size). :func:`open_ome_zarr` gives level 0 as a dask array, read chunk by chunk, for the
block-by-block path (:mod:`napari_refocus.bigimage`).

napari-refocus writes stores (:mod:`.zarr_write`) under ``<name>.partial`` and renames them
when they are complete; its attributes (``napari_refocus``) carry ``"complete": true`` only
then. A store whose attributes say otherwise is refused here, so an interrupted write is never
taken for a finished one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .read import ImageReadError, _one_line, reading, significant, um_per

#: the NGFF version napari-refocus writes
NGFF_VERSION = "0.4"
#: NGFF's axis order: time, channel, then space (z, y, x)
NGFF_ORDER = "TCZYX"
AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
#: the key of napari-refocus's own attributes (provenance, completion)
ATTRS_KEY = "napari_refocus"
PARTIAL_SUFFIX = ".partial"


def is_zarr_path(path) -> bool:
    """Whether ``path`` names a zarr store (``*.zarr``, e.g. ``image.ome.zarr``; also an
    unfinished ``*.zarr.partial``, which the readers refuse with a message that says so)."""
    name = str(path).rstrip("/\\").lower()
    return name.endswith((".zarr", ".zarr" + PARTIAL_SUFFIX))


def zarr_stem(path) -> str:
    """The name of a store without ``.zarr`` and ``.ome`` (``a.ome.zarr`` -> ``a``)."""
    name = Path(str(path).rstrip("/\\")).name
    for suffix in (".zarr", ".ome"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def partial_path(path) -> Path:
    """Where a store is written until it is complete: ``<name>.partial`` beside it."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def ngff_attrs(group) -> dict:
    """The OME attributes of a zarr group (NGFF 0.5 nests them under ``ome``)."""
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def _open_group(path):
    import zarr

    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    if not path.is_dir():
        raise ImageReadError(path, "not a zarr store (a folder)")
    if path.name.lower().endswith(PARTIAL_SUFFIX):
        raise ImageReadError(path, "an unfinished napari-refocus store (its write was interrupted or is still "
                                   "running); run the same command again to finish it")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a folder that is no store
        raise ImageReadError(path, f"not a zarr store ({type(exc).__name__}: {_one_line(exc)})") from None


def check_complete(group, path) -> dict:
    """napari-refocus's attributes of a store (``{}`` for stores written by others); a
    ValueError when they say the write did not finish."""
    attrs = group.attrs.asdict()
    ours = attrs.get(ATTRS_KEY) or {} if isinstance(attrs, dict) else {}
    if not isinstance(ours, dict):
        raise ImageReadError(path, f"its {ATTRS_KEY!r} attributes are not a JSON object")
    if ours and ours.get("complete") is not True:
        raise ImageReadError(path, "an unfinished napari-refocus store (its write was interrupted); "
                                   "run the same command again to finish it")
    return ours


def _axes(ms: dict, ndim: int) -> tuple[str, list]:
    """(axes letters, units) of a multiscale: NGFF 0.4+ axis objects, 0.3 names, older: the
    last ``ndim`` of TCZYX."""
    axes = ms.get("axes")
    if not axes:
        return NGFF_ORDER[-ndim:], [None] * ndim
    names = [a if isinstance(a, str) else a.get("name", "") for a in axes]
    units = [None if isinstance(a, str) else a.get("unit") for a in axes]
    letters = "".join(n.upper() if len(n) == 1 and n.isalpha() else "Q" for n in names)
    return letters, units


def _compose(transforms, ndim: int, scale, translation):
    """Apply NGFF scale/translation transformations (in order) to ``scale``, ``translation``."""
    for t in transforms or ():
        if t.get("type") == "scale" and "scale" in t:
            s = np.asarray(t["scale"], float)
            scale, translation = scale * s, translation * s
        elif t.get("type") == "translation" and "translation" in t:
            translation = translation + np.asarray(t["translation"], float)
    return scale, translation


def level_transform(ms: dict, level: int, ndim: int) -> tuple[list, list]:
    """(scale, translation) per axis of a multiscale's level: the dataset's transformations,
    then the multiscale's own."""
    scale, translation = np.ones(ndim), np.zeros(ndim)
    scale, translation = _compose(ms["datasets"][level].get("coordinateTransformations"), ndim, scale, translation)
    scale, translation = _compose(ms.get("coordinateTransformations"), ndim, scale, translation)
    return [float(v) for v in scale], [float(v) for v in translation]


def _multiscale(group, path) -> dict:
    attrs = ngff_attrs(group)
    ms = attrs.get("multiscales") if isinstance(attrs, dict) else None
    if not ms or not isinstance(ms, list) or not isinstance(ms[0], dict) or not ms[0].get("datasets"):
        raise ImageReadError(path, "not an OME-Zarr image (no multiscales metadata)")
    if not isinstance(ms[0]["datasets"], list) or not all(
            isinstance(d, dict) and isinstance(d.get("path"), str) for d in ms[0]["datasets"]):
        raise ImageReadError(path, "its multiscales metadata has datasets without a path")
    return ms[0]


def _level_array(group, path, ms: dict, level: int):
    """The zarr array of a multiscale's ``level``; an ImageReadError naming the store when the
    level or its array is missing or its metadata is damaged."""
    import zarr

    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise ImageReadError(path, f"it has {len(datasets)} pyramid levels, not a level {level}")
    key = datasets[level]["path"]
    try:
        arr = group[key]
    except Exception as exc:  # noqa: BLE001 - zarr: KeyError, its own metadata errors, JSON errors ...
        raise ImageReadError(path, f"level {key!r} is missing or its metadata is damaged "
                                   f"({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(arr, zarr.Array):
        raise ImageReadError(path, f"level {key!r} is a group, not an array")
    if any(int(n) < 0 for n in arr.shape) or any(int(c) < 1 for c in arr.chunks):
        raise ImageReadError(path, f"level {key!r} has a damaged shape {arr.shape} or chunks {arr.chunks}")
    return arr


class _GuardedLevel:
    """A zarr array whose reads raise a one-line ImageReadError naming the store (a damaged
    chunk is found only when the block holding it is read, maybe mid-run)."""

    def __init__(self, arr, path):
        self.arr, self.path = arr, str(path)
        self.shape, self.dtype, self.ndim, self.chunks = arr.shape, arr.dtype, arr.ndim, arr.chunks

    def __getitem__(self, index):
        try:
            return self.arr[index]
        except MemoryError:
            raise ImageReadError(self.path, "a chunk decodes to more bytes than fit in memory") from None
        except Exception as exc:  # noqa: BLE001 - numcodecs, zarr, numpy raise many types
            raise ImageReadError(self.path, f"damaged pixel data ({type(exc).__name__}: {_one_line(exc)})") \
                from None


def read_ome_zarr_info(path, *, level: int = 0) -> dict:
    """The info of an OME-Zarr image (as :func:`~napari_refocus.io.read_info` gives for a TIFF):
    ``path``, ``axes``, ``shape``, ``dtype``, ``pixel_um`` (x scale in um; None without a
    unit), ``optics``/``optics_source``, ``metadata`` (napari-refocus's provenance, if any),
    and ``physical``: ``{letter: {"scale", "translation", "unit"}}`` of the level, ``levels``
    (how many), ``ngff_version``."""
    group = _open_group(path)
    with reading(path):  # damaged metadata of any kind: one line naming the store
        ours = check_complete(group, path)
        ms = _multiscale(group, path)
        arr = _level_array(group, path, ms, level)
        shape, ndim = tuple(int(n) for n in arr.shape), len(arr.shape)
        axes, units = _axes(ms, ndim)
        if len(axes) != ndim:
            raise ImageReadError(path, f"the multiscales metadata names {len(axes)} axes, the array has {ndim}")
        scale, translation = level_transform(ms, level, ndim)
        if not all(np.isfinite(scale)) or min(scale) <= 0 or not all(np.isfinite(translation)):
            raise ImageReadError(path, f"level {level} has a scale {scale} (not all > 0) or translation {translation}")
    physical = {a: {"scale": s, "translation": t, "unit": u}
                for a, s, t, u in zip(axes, scale, translation, units)}
    pixel_um = None
    if "X" in physical:
        factor = um_per(physical["X"]["unit"])
        pixel_um = significant(physical["X"]["scale"] * factor) if factor else None
    optics = {"pixel_um": pixel_um} if pixel_um else {}
    return {"path": str(path), "axes": axes, "shape": shape, "dtype": np.dtype(arr.dtype), "pixel_um": pixel_um,
            "optics": optics, "optics_source": dict.fromkeys(optics, "file"), "metadata": ours,
            "physical": physical, "levels": len(ms["datasets"]),
            "ngff_version": str(ms.get("version", ngff_attrs(group).get("version", "")))}


def open_ome_zarr(path, *, level: int = 0):
    """An OME-Zarr image's ``level`` (0: full resolution) as a lazy dask array (chunks as
    stored) and its info (:func:`read_ome_zarr_info`). ``napari_refocus.refocus`` takes the
    array (2-D) and runs block by block."""
    import dask.array as da

    info = read_ome_zarr_info(path, level=level)
    group = _open_group(path)
    with reading(path):
        arr = _level_array(group, path, _multiscale(group, path), level)
    name = f"ome-zarr-{Path(path).resolve()}-{level}-{Path(path).stat().st_mtime_ns}"
    return da.from_array(_GuardedLevel(arr, path), chunks=arr.chunks, name=name, asarray=True), info


def read_ome_zarr(path, *, level: int = 0) -> tuple[np.ndarray, dict]:
    """An OME-Zarr image's ``level`` read into memory, and its info."""
    data, info = open_ome_zarr(path, level=level)
    with reading(path):
        return np.asarray(data), info


def is_ome_zarr(path) -> bool:
    """Whether ``path`` is a zarr store with OME multiscales metadata (finished or not)."""
    try:
        return bool(ngff_attrs(_open_group(path)).get("multiscales"))
    except ValueError:
        return False
