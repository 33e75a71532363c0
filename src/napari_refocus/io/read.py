"""Reading images: pixels, their axes and the pixel size in micrometres.

TIFF (plain, OME-TIFF, ImageJ hyperstacks) through tifffile; PNG and other formats through
imageio. Every reader returns ``(array, info)`` where ``info`` has

* ``path``
* ``axes`` - a tifffile-style axes string over the array's dimensions (``"YX"``, ``"ZYX"``,
  ``"YXS"`` for RGB(A) samples, ``"TCZYX"`` ...; see :mod:`napari_refocus.core.planes`);
  tifffile's unnamed axes (``Q``, ``I``) become ``Z`` when there is exactly one of them.
* ``pixel_um`` - from the OME ``PhysicalSizeX`` with its unit, the ImageJ resolution and
  unit, or the TIFF resolution in pixels per centimetre; None when the file does not say
  (a resolution in dots per inch is a print setting, not a pixel size).
* ``optics`` - ``{field: value}`` of the :class:`~napari_refocus.core.optics.Optics` fields the
  file states: ``pixel_um`` as above and, from OME metadata (:func:`ome_optics`), the
  objective's ``na``, the immersion's ``refractive_index`` and the first channel's emission
  ``wavelength_nm``; ``optics_source`` says ``"file"`` for each of them.
* ``metadata`` - the JSON ImageDescription written by :func:`~napari_refocus.io.write_image`
  (provenance), when there is one.

A file that cannot be read (truncated, damaged, pixel data outside the file, a header
describing more pixels than fit in memory) raises :class:`ImageReadError`, a ``ValueError``
whose one-line message names the file, never a reader library's own exception.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from ..core.planes import default_axes, normalise_axes

TIFF_SUFFIXES = (".tif", ".tiff")
#: micrometres per unit, for the units OME and ImageJ files use for lengths
UM_PER_UNIT = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4,
    "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6,
}
_UNNAMED = ("Q", "I")


class ImageReadError(ValueError):
    """A file that cannot be read as an image; ``path`` is the file, the message one line."""

    def __init__(self, path, why: str):
        self.path = str(path)
        super().__init__(f"cannot read {path}: {' '.join(str(why).split())}")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def reading(path):
    """Turn any failure while reading ``path`` into :class:`ImageReadError` (one line)."""
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "its header describes more pixels than fit in memory") from None
    except Exception as exc:  # noqa: BLE001 - tifffile, struct, zlib, imagecodecs ... raise many types
        raise ImageReadError(path, f"damaged or not an image file ({type(exc).__name__}: {_one_line(exc)})") \
            from None


def check_tiff(path: Path, tif, *, in_memory: bool) -> None:
    """Reject a TIFF whose first series cannot be read as it claims: no image, pixel data
    beyond the end of the file (truncated, or wrong strip/tile offsets), or, to be read into
    memory (``in_memory``), more bytes than the memory available."""
    if not tif.series:
        raise ImageReadError(path, "no image in the file")
    series = tif.series[0]
    if any(int(n) <= 0 for n in series.shape):
        raise ImageReadError(path, f"the image has an empty shape {tuple(series.shape)}")
    size = path.stat().st_size
    for page in series.pages:
        if page is None:
            continue
        handle = getattr(getattr(page, "parent", None), "filehandle", None)
        if handle is not None and Path(str(handle.path)).resolve() != path.resolve():
            continue  # a page in another file of a multi-file OME series
        expected = int(np.prod(getattr(page, "chunked", ()) or (0,)))
        if expected and len(page.dataoffsets) < expected:  # e.g. a damaged ImageWidth
            raise ImageReadError(path, f"its {'x'.join(map(str, page.shape))} image needs {expected} tiles or "
                                       f"strips, the file has {len(page.dataoffsets)}: damaged")
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if count and offset + count > size:
                raise ImageReadError(path, f"pixel data at bytes {offset}..{offset + count} lie beyond the end of "
                                           f"the file ({size} bytes): truncated or damaged")
        # uncompressed pixels need all their bytes: fewer means a header with the wrong size
        # (which would make the reader allocate, and fill with zeros, pixels that do not exist);
        # packed bits (a 1-bit mask: 8 pixels a byte) are not counted in whole bytes, so not checked
        if getattr(page, "compression", None) == 1 and getattr(page, "bitspersample", 8) % 8 == 0 \
                and sum(page.databytecounts) < page.nbytes:
            raise ImageReadError(path, f"a {'x'.join(map(str, page.shape))} image of {page.dtype} needs "
                                       f"{page.nbytes} bytes, the file holds {sum(page.databytecounts)}: damaged")
    if in_memory:
        from ..core.memory import available_bytes

        need = int(series.nbytes)
        if need > available_bytes():
            raise ImageReadError(path, f"the image needs {need / 1e9:.1f} GB, more than the memory available")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    return path


def read_image(path, *, axes: str | None = None) -> tuple[np.ndarray, dict]:
    """Read an image file into memory; returns ``(array, info)`` (see the module docstring).

    ``axes`` overrides the axes found in the file (it must name every dimension).
    """
    path = _existing(path)
    if _is_tiff(path):
        import tifffile

        with reading(path), tifffile.TiffFile(path) as tif:
            check_tiff(path, tif, in_memory=True)
            arr = np.asarray(tif.series[0].asarray())
            info = _tiff_info(path, tif)
    else:
        import imageio.v3 as iio

        try:
            arr = np.asarray(iio.imread(path))
        except Exception as exc:  # noqa: BLE001 - imageio raises many types
            # imageio's own words come from whichever plugin tried last (for a text file:
            # "unpack_from requires a buffer ..."): say first what the file is not
            raise ImageReadError(path, f"not an image file that TIFF, OME-Zarr or imageio's readers know "
                                       f"({_one_line(exc)})") from None
        info = {"path": str(path), "pixel_um": None, "axes": _guess_axes(arr.shape), "optics": {},
                "optics_source": {}}
    return arr, _with_axes(info, arr.shape, axes)


def open_image(path, *, axes: str | None = None):
    """A TIFF opened lazily (a zarr array over tifffile's store: read block by block) and its
    info; other formats are read into memory. Returns ``(array, info)``."""
    path = _existing(path)
    if not _is_tiff(path):
        return read_image(path, axes=axes)
    import tifffile
    import zarr

    with reading(path):
        with tifffile.TiffFile(path) as tif:
            check_tiff(path, tif, in_memory=False)
            info = _tiff_info(path, tif)
        store = _guarded(tifffile.imread(path, aszarr=True, series=0, level=0), path)
        source = zarr.open(store, mode="r")
    return source, _with_axes(info, source.shape, axes)


_GUARDED: dict = {}


def _guarded(store, path):
    """tifffile's zarr store with its chunk reads turned into :class:`ImageReadError`: a
    damaged tile of a big image is found only when the block holding it is read, mid-run."""
    base = type(store)
    cls = _GUARDED.get(base)
    if cls is None:
        async def get(self, key, prototype, byte_range=None):
            try:
                return await base.get(self, key, prototype, byte_range)
            except NotImplementedError:  # zarr asks for what the store cannot do: not damage
                raise
            except Exception as exc:  # noqa: BLE001 - imagecodecs, zlib, struct ... raise many types
                raise ImageReadError(self._napari_refocus_path,
                                     f"damaged pixel data in {key} ({type(exc).__name__}: {_one_line(exc)})") \
                    from None

        cls = _GUARDED[base] = type(f"Guarded{base.__name__}", (base,), {"get": get})
    store.__class__ = cls
    store._napari_refocus_path = str(path)
    return store


def read_info(path, *, axes: str | None = None) -> dict:
    """``info`` of a TIFF (plus ``shape`` and ``dtype``) without reading its pixels; other
    formats are read."""
    path = _existing(path)
    if not _is_tiff(path):
        arr, info = read_image(path, axes=axes)
        return {**info, "shape": arr.shape, "dtype": arr.dtype}
    import tifffile

    with reading(path), tifffile.TiffFile(path) as tif:
        check_tiff(path, tif, in_memory=False)
        info = _tiff_info(path, tif)
        shape, dtype = tuple(tif.series[0].shape), np.dtype(tif.series[0].dtype)
    return {**_with_axes(info, shape, axes), "shape": shape, "dtype": dtype}


def _with_axes(info: dict, shape, axes) -> dict:
    info = dict(info)
    if axes is not None:  # the caller's axes: a wrong one is the caller's ValueError
        info["axes"] = normalise_axes(axes, len(shape))
        return info
    try:
        info["axes"] = normalise_axes(info["axes"], len(shape))
    except ValueError as exc:  # the file's own axes contradict its shape: a damaged file
        raise ImageReadError(info["path"], f"its axes do not fit its pixels ({exc})") from None
    return info


def _tiff_info(path: Path, tif) -> dict:
    info = {"path": str(path), "pixel_um": tiff_pixel_um(tif), "axes": tiff_axes(tif.series[0].axes)}
    optics = ome_optics(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else {}
    if info["pixel_um"] is not None:
        optics["pixel_um"] = info["pixel_um"]
    info.update(optics=optics, optics_source=dict.fromkeys(optics, "file"))
    desc = tif.pages[0].tags.get("ImageDescription")
    if desc is not None and str(desc.value).startswith("{"):
        try:
            info["metadata"] = json.loads(desc.value)
        except ValueError:
            pass
    return info


def tiff_axes(axes: str) -> str:
    """tifffile's ``series.axes`` as the plane driver takes them: one unnamed axis (``Q`` or
    ``I``, e.g. pages of a plain multi-page TIFF) becomes ``Z`` if there is no ``Z`` yet."""
    axes = axes.upper()
    unnamed = [a for a in axes if a in _UNNAMED]
    if len(unnamed) == 1 and "Z" not in axes:
        axes = axes.replace(unnamed[0], "Z")
    return axes


def _guess_axes(shape) -> str:
    """Axes of a PNG/JPEG-like array: (Y, X), or (Y, X, S) with 2 to 4 samples (grey or
    colour, with or without alpha)."""
    rgb = len(shape) == 3 and shape[-1] in (2, 3, 4)
    axes = default_axes(len(shape), rgb=rgb)
    return tiff_axes(axes)


# ------------------------------------------------------------------------------- pixel size
def um_per(unit) -> float | None:
    """Micrometres per ``unit`` (``"nm"``, ``"µm"``, ``"micron"``, ``"mm"`` ...), None if unknown."""
    if unit is None:
        return None
    return UM_PER_UNIT.get(str(unit).strip().lower())


def significant(value: float) -> float:
    """``value`` to 12 significant digits: a size read as a resolution (pixels per unit, a ratio
    of integers) or converted from another unit carries binary noise (1 / (1 / 0.325) is
    0.32499999999999996), which no microscope's calibration has and which the CLI's JSON, the
    widgets and the provenance would otherwise print. Every number read from OME metadata (sizes,
    NA, refractive index, wavelength) goes through it."""
    return float(f"{value:.12g}")


def tiff_pixel_um(tif) -> float | None:
    """Pixel size in um of an open ``tifffile.TiffFile`` (OME, then ImageJ, then TIFF tags)."""
    if tif.is_ome and tif.ome_metadata:
        size = ome_pixel_um(tif.ome_metadata)
        if size is not None:
            return size
    page = tif.pages[0]
    res = page.tags.get("XResolution")
    if res is None:
        return None
    num, den = res.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        factor = um_per(tif.imagej_metadata["unit"])
        return significant(factor / per_unit) if factor else None
    ru = page.tags.get("ResolutionUnit")
    if ru is not None and int(ru.value) == 3:  # centimetre
        return significant(1e4 / per_unit)
    return None  # inch (a print resolution) or no unit


def _ome(ome_xml: str) -> dict:
    """The OME-XML document as tifffile's ``xml2dict`` gives it (``{}`` when malformed)."""
    import tifffile

    try:
        return tifffile.xml2dict(ome_xml).get("OME", {}) or {}
    except Exception:  # noqa: BLE001 - malformed XML: no metadata rather than no image
        return {}


def _as_list(node) -> list:
    return node if isinstance(node, list) else ([] if node is None else [node])


def _number(value, factor=1.0) -> float | None:
    try:
        value = float(value) * factor
    except (TypeError, ValueError):
        return None
    return significant(value) if 0 < value < float("inf") else None  # NaN fails both


def _length(value, unit, *, default_unit: str) -> float | None:
    """An OME length in um (None if missing, not positive or in an unknown unit)."""
    factor = um_per(unit if unit is not None else default_unit)
    return _number(value, factor) if factor else None


def ome_pixel_um(ome_xml: str, image: int = 0) -> float | None:
    """``PhysicalSizeX`` of an image of an OME-XML document, converted to um.

    The unit is ``PhysicalSizeXUnit`` (OME's default: um); an unknown unit gives None.
    """
    images = _as_list(_ome(ome_xml).get("Image"))
    pixels = (images[image] if image < len(images) else {}).get("Pixels") or {}
    return _length(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"), default_unit="µm")


#: refractive index of OME's ``Objective@Immersion`` media
IMMERSION_INDEX = {"oil": 1.515, "water": 1.333, "waterdipping": 1.333, "glycerol": 1.47, "air": 1.0}


def _objective(ome: dict, image: dict) -> dict:
    """The objective an image was taken with: the one ``ObjectiveSettings@ID`` names, else
    the only objective of its instrument, else the only one in the document."""
    instruments = _as_list(ome.get("Instrument"))
    every = [o for ins in instruments for o in _as_list(ins.get("Objective"))]
    wanted = (image.get("ObjectiveSettings") or {}).get("ID")
    if wanted is not None:
        return next((o for o in every if o.get("ID") == wanted), {})
    ref = (image.get("InstrumentRef") or {}).get("ID")
    mine = [o for ins in instruments if ins.get("ID") == ref for o in _as_list(ins.get("Objective"))]
    for candidates in (mine, every):
        if len(candidates) == 1:
            return candidates[0]
    return {}


def ome_optics(ome_xml: str, image: int = 0, channel: int = 0) -> dict:
    """The optics an OME-XML document states for an image: ``{field: value}`` with

    * ``na`` - the objective's ``LensNA`` (the objective ``Image/ObjectiveSettings@ID``
      names, else the single objective),
    * ``refractive_index`` - ``ObjectiveSettings@RefractiveIndex``, else the index of the
      objective's ``Immersion`` medium (:data:`IMMERSION_INDEX`),
    * ``wavelength_nm`` - the channel's ``EmissionWavelength`` with its unit (OME's default nm),
    * ``pixel_um`` - ``PhysicalSizeX`` with its unit.

    Only the values the document states (and that are valid) are returned.
    """
    ome = _ome(ome_xml)
    images = _as_list(ome.get("Image"))
    if image >= len(images):
        return {}
    img = images[image]
    objective = _objective(ome, img)
    pixels = img.get("Pixels") or {}
    channels = _as_list(pixels.get("Channel"))
    ch = channels[channel] if channel < len(channels) else {}
    emission = _length(ch.get("EmissionWavelength"), ch.get("EmissionWavelengthUnit"), default_unit="nm")
    immersion = IMMERSION_INDEX.get(str(objective.get("Immersion", "")).strip().lower())
    out = {
        "na": _number(objective.get("LensNA")),
        "refractive_index": _number((img.get("ObjectiveSettings") or {}).get("RefractiveIndex")) or immersion,
        "wavelength_nm": emission * 1e3 if emission else None,
        "pixel_um": ome_pixel_um(ome_xml, image),
    }
    return {k: v for k, v in out.items() if v is not None}
