"""Writing images: TIFF with the dtype, axes, pixel size (um) and provenance kept.

Writes never replace an input: a path that exists is refused unless ``overwrite=True``, an
input of the job (``protect=``) is refused always, and the file is written to a temporary
name first and renamed into place (atomic). :func:`refocus_to_tiff` writes a method's result
block by block into a tiled BigTIFF, so an image bigger than memory never is in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.planes import default_axes, normalise_axes
from ..core.resample import repeat_pixels


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
            raise ValueError(f"refusing to write over an input file: {path}")


def check_output(path, *, overwrite: bool = False, protect=()) -> Path:
    """The checks every writer makes before it starts: never an input, never an existing file
    unless ``overwrite``. Returns ``path`` as a Path."""
    path = Path(path)
    check_not_input(path, protect)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; choose another output or pass overwrite")
    return path


def infer_axes(shape) -> str:
    """Axes of an array written without ``axes=``: (..., Y, X), or (..., Y, X, S) when the last
    dimension has 3 or 4 samples (RGB, RGBA), as tifffile would store it."""
    rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    return default_axes(len(shape), rgb=rgb)


def tiff_layout(shape, axes: str) -> dict:
    """tifffile keywords for an array with ``axes``: RGB(A) photometric for 3 or 4 samples
    (alpha as an extra sample; planar when S precedes Y), grey-level otherwise."""
    n_s = shape[axes.index("S")] if "S" in axes else 0
    if n_s not in (3, 4):
        return {"photometric": "minisblack"}
    out = {"photometric": "rgb"}
    if n_s == 4:
        out["extrasamples"] = ["unassalpha"]
    if axes.index("S") < axes.index("Y"):
        out["planarconfig"] = "separate"
    return out


def resolution_kwargs(pixel_um) -> dict:
    """The TIFF resolution tags for a pixel size in um (pixels per centimetre)."""
    if not pixel_um:
        return {}
    per_cm = 1e4 / float(pixel_um)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def description(metadata, *, axes: str, pixel_um=None) -> dict:
    """The JSON description (tifffile's shaped metadata: ``axes`` plus the provenance)."""
    meta = json.loads(json.dumps(dict(metadata or {}), default=str))
    meta.pop("shape", None)  # tifffile writes the shape itself
    meta["axes"] = axes
    if pixel_um:
        meta["pixel_um"] = float(pixel_um)
    return meta


def write_image(path, data, *, pixel_um=None, metadata=None, overwrite: bool = False, protect=(),
                axes: str | None = None):
    """Write a TIFF atomically, keeping ``data``'s dtype, its axes and the pixel size (um).

    ``axes`` names the dimensions (``"ZYX"``, ``"YXS"`` ...; default :func:`infer_axes`);
    they are stored so that :func:`~napari_refocus.io.read_image` gives them back, RGB(A)
    samples as an RGB TIFF. ``metadata`` (JSON-able dict) goes into the ImageDescription.
    ``protect``: paths that must never be written (the inputs of a job), even with
    ``overwrite``.
    """
    import tifffile

    path = check_output(path, overwrite=overwrite, protect=protect)
    data = np.asarray(data)
    axes = normalise_axes(axes, data.ndim) if axes is not None else infer_axes(data.shape)
    meta = description(metadata, axes=axes, pixel_um=pixel_um)
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, data, metadata=meta, **tiff_layout(data.shape, axes),
                         **resolution_kwargs(pixel_um))
    return path


# ------------------------------------------------------------------ block by block (big images)
class PlaneView:
    """One 2-D (Y, X) plane of an n-D array, read lazily: ``view[ys, xs]`` reads only that
    region of the source (for the block-by-block executor)."""

    ndim = 2

    def __init__(self, source, index: tuple):
        self.source = source
        self.index = tuple(index)
        self._y = self.index.index(slice(None))
        self.shape = tuple(int(source.shape[i]) for i, v in enumerate(self.index) if v == slice(None))
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, key):
        ys, xs = key
        idx = list(self.index)
        idx[self._y], idx[self._y + 1] = ys, xs
        return np.asarray(self.source[tuple(idx)])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:, :], dtype=dtype)


def refocus_to_tiff(source, path, *, method: str = "lbdvd", axes: str | None = None, dtype=None,
                    pixel_um=None, metadata=None, block: int | None = None, device="auto", progress=None,
                    protect=(), overwrite: bool = True, **params):
    """A registered method on ``source``, written block by block into a tiled BigTIFF (atomic).

    ``source`` (numpy, dask, zarr, tifffile's zarr store) has the dimensions ``axes`` names
    (default: :func:`infer_axes`); Y and X must be its last two axes before an optional
    ``S``. Every plane is restored with :func:`napari_refocus.bigimage.iter_method_blocks`; the
    TIFF's tiles are its blocks, so one block per colour sample is held in memory at a time.
    An RGBA alpha sample is copied. ``pixel_um`` is the input's pixel size: the method gets it
    if its schema has optics, the TIFF records it (divided by the method's upscale).
    ``dtype``: the output's (default the source's; integers are rounded and clipped).
    """
    import tifffile

    from ..bigimage import DEFAULT_BLOCK, iter_method_blocks
    from ..core.forward import cast_like
    from ..core.planes import ALPHA
    from ..core.progress import Progress
    from ..methods.registry import get_method

    path = check_output(path, overwrite=overwrite, protect=protect)
    shape = tuple(int(n) for n in source.shape)
    ax = normalise_axes(axes, len(shape)) if axes is not None else infer_axes(shape)
    if not ax.rstrip("S").endswith("YX") or ax.count("S") and not ax.endswith("S"):
        raise ValueError(f"block-by-block writing takes axes ending in YX or YXS, got {ax}")
    m = get_method(method)
    block = int(block or DEFAULT_BLOCK)
    dtype = np.dtype(dtype or source.dtype)
    r = int(m.upscale)
    if pixel_um and m.accepts("pixel_um"):
        params = {**params, "pixel_um": float(pixel_um)}
    n_s = shape[-1] if ax.endswith("S") else 0
    lead = shape[: len(ax) - 2 - (1 if n_s else 0)]
    h, w = shape[len(lead)], shape[len(lead) + 1]
    samples = [c for c in range(n_s) if not (n_s == 4 and c == ALPHA)] or [None]
    pages = list(np.ndindex(*lead))
    tile_shape = (block * r, block * r) + ((n_s,) if n_s else ())

    def plane(page, c):
        return PlaneView(source, (*page, slice(None), slice(None)) + ((c,) if c is not None else ()))

    def tiles():
        for k, page in enumerate(pages):
            gens = [iter_method_blocks(plane(page, c), m.name, device=device, block=block, **params)
                    for c in samples]
            for parts in zip(*gens, strict=True):  # every sample's blocks come in bigimage.block_bounds order
                y0, y1, x0, x1 = parts[0][1]
                tile = np.zeros(tile_shape, dtype)
                for c, (prog, _, restored) in zip(samples, parts):
                    view = tile[: restored.shape[0], : restored.shape[1]]
                    view[..., c if c is not None else slice(None)] = cast_like(restored, dtype)
                if n_s == 4:
                    alpha = np.asarray(plane(page, ALPHA)[y0:y1, x0:x1])
                    alpha = repeat_pixels(alpha, r)
                    tile[: alpha.shape[0], : alpha.shape[1], ALPHA] = cast_like(alpha, dtype)
                if progress:
                    progress(Progress(k * prog.total + prog.done, len(pages) * prog.total, prog.stage))
                yield tile

    out_shape = (*lead, h * r, w * r) + ((n_s,) if n_s else ())
    out_um = pixel_um / r if pixel_um else None
    meta = description(metadata, axes=ax, pixel_um=out_um)
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=out_shape, dtype=dtype, tile=(block * r, block * r), bigtiff=True,
                         metadata=meta, **tiff_layout(out_shape, ax), **resolution_kwargs(out_um))
    return path
