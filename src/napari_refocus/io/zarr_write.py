"""Writing OME-Zarr (NGFF 0.4, zarr v2 format): results, their pyramid and defocus maps.

Every store is written under ``<name>.partial`` (:func:`~napari_refocus.io.zarr.partial_path`)
and renamed to its name only when it is complete, with ``"complete": true`` in its
``napari_refocus`` attributes, so a reader never takes an interrupted write for a finished
one. :func:`refocus_to_ome_zarr` writes a method's result block by block (one block in memory,
as :func:`~napari_refocus.io.write.refocus_to_tiff` does) and records after every block how
far it got: the same job started again resumes an interrupted store at the next block, a
different job rewrites it. Blocks are chunk-aligned, so a block is either written whole or
written again.

Physical metadata: ``physical = {letter: {"scale", "translation", "unit"}}`` of the input
(:func:`physical_from`); the output's Y/X pixels are ``upscale`` x smaller and shifted so that
they cover the input's pixels (:func:`upscaled`), and every pyramid level ``k`` (2 x 2 means
of the one below, until both sides are under :data:`PYRAMID_BELOW` pixels) has ``2**k`` x the
scale and its pixel centres where the means put them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.resample import repeat_pixels
from ..core.validation import check_value
from .write import check_output
from .zarr import ATTRS_KEY, AXIS_TYPES, NGFF_ORDER, NGFF_VERSION, partial_path

#: pyramid levels are added until both sides are below this many pixels
PYRAMID_BELOW = 1024
#: the largest chunk side (chunks divide the written blocks)
MAX_CHUNK = 1024
PROGRESS_NAME = "napari_refocus_progress.json"
UM = "micrometer"


# ---------------------------------------------------------------------- axes and metadata
def ngff_axes(axes: str) -> tuple[str, list[int]]:
    """(the output's axes in NGFF order, for each the index of that axis in ``axes``). RGB
    samples (``S``) become the channel axis ``C``."""
    letters = axes.upper().replace("S", "C")
    bad = sorted({a for a in letters if a not in NGFF_ORDER})
    if bad or len(set(letters)) != len(letters):
        raise ValueError(f"OME-Zarr output takes the axes T, C, Z, Y, X once each (S as C); got {axes}")
    order = "".join(a for a in NGFF_ORDER if a in letters)
    return order, [letters.index(a) for a in order]


def physical_from(axes: str, *, pixel_um=None, physical=None) -> dict:
    """``{letter: {"scale", "translation", "unit"}}`` for ``axes`` (S counted as C): the input's
    own (an OME-Zarr's ``info["physical"]``), else Y/X of ``pixel_um`` micrometres."""
    out = {}
    for a in axes.upper().replace("S", "C"):
        given = dict((physical or {}).get(a) or {})
        if not given and a in "YX" and pixel_um:
            given = {"scale": float(pixel_um), "translation": 0.0, "unit": UM}
        out[a] = {"scale": float(given.get("scale", 1.0)), "translation": float(given.get("translation", 0.0)),
                  "unit": given.get("unit")}
    return out


def upscaled(physical: dict, r: int) -> dict:
    """The physical metadata of an ``r`` x upscaled result: Y/X pixels ``r`` x smaller, the
    first one's centre moved so that the ``r`` x ``r`` output pixels tile each input pixel."""
    out = {a: dict(v) for a, v in physical.items()}
    for a in "YX":
        s = out[a]["scale"]
        out[a].update(scale=s / r, translation=out[a]["translation"] - s * (r - 1) / (2 * r))
    return out


def _level(physical: dict, axes: str, k: int) -> list:
    """The coordinateTransformations of pyramid level ``k`` (2**k x coarser in Y, X)."""
    f = [2.0 ** k if a in "YX" else 1.0 for a in axes]
    scale = [physical[a]["scale"] * fa for a, fa in zip(axes, f)]
    shift = [physical[a]["translation"] + physical[a]["scale"] * (fa - 1) / 2 for a, fa in zip(axes, f)]
    out = [{"type": "scale", "scale": scale}]
    if any(shift):
        out.append({"type": "translation", "translation": shift})
    return out


def multiscales(axes: str, physical: dict, n_levels: int, *, name: str, kind: str = "mean") -> list:
    """The NGFF 0.4 ``multiscales`` attribute of a pyramid of ``n_levels`` levels."""
    ax = []
    for a in axes:
        entry = {"name": a.lower(), "type": AXIS_TYPES[a]}
        if physical[a].get("unit"):
            entry["unit"] = physical[a]["unit"]
        ax.append(entry)
    datasets = [{"path": str(k), "coordinateTransformations": _level(physical, axes, k)} for k in range(n_levels)]
    return [{"version": NGFF_VERSION, "name": name, "axes": ax, "datasets": datasets, "type": kind}]


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(dict(obj or {}), default=str))


def pyramid_shapes(shape) -> list[tuple]:
    """The shapes of the pyramid levels of an array (Y, X the last two axes)."""
    shapes = [tuple(int(n) for n in shape)]
    while max(shapes[-1][-2:]) >= PYRAMID_BELOW:
        last = shapes[-1]
        shapes.append(last[:-2] + tuple(-(-n // 2) for n in last[-2:]))
    return shapes


def chunk_side(block_px: int) -> int:
    """The largest divisor of ``block_px`` up to :data:`MAX_CHUNK` (blocks stay chunk-aligned)."""
    return next(d for d in range(min(MAX_CHUNK, block_px), 0, -1) if block_px % d == 0)


# ---------------------------------------------------------------------------- the store
def _create(store: Path, shape, dtype, chunk: int):
    """A fresh zarr v2 group at ``store`` with the level-0 array ``"0"``."""
    import zarr

    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    chunks = (1,) * (len(shape) - 2) + (chunk, chunk)
    group.create_array("0", shape=tuple(shape), chunks=chunks, dtype=np.dtype(dtype), fill_value=0,
                       chunk_key_encoding={"name": "v2", "separator": "/"})
    return group


def _downsample(block: np.ndarray, *, label: bool) -> np.ndarray:
    """2 x 2 means of the last two axes (an odd edge averages the pixels it has), or every
    other pixel for a label image."""
    if label:
        return block[..., ::2, ::2]
    b = np.asarray(block, np.float64)
    h, w = b.shape[-2:]
    pad = [(0, 0)] * (b.ndim - 2) + [(0, h % 2), (0, w % 2)]
    b = np.pad(b, pad, mode="edge")  # an edge row/column repeated: its mean is its own value
    return b.reshape(*b.shape[:-2], b.shape[-2] // 2, 2, b.shape[-1] // 2, 2).mean(axis=(-3, -1))


def build_pyramid(group, *, label: bool = False, tile: int = 2048) -> int:
    """Add levels ``1, 2, ...`` to ``group`` from its level ``"0"`` (read ``2 * tile`` pixels
    square at a time); returns the number of levels."""
    from ..core.forward import cast_like

    base = group["0"]
    shapes = pyramid_shapes(base.shape)
    chunk = base.chunks[-1]
    for k in range(1, len(shapes)):
        src = group[str(k - 1)]
        dst = group.create_array(str(k), shape=shapes[k], chunks=(1,) * (len(shapes[k]) - 2) + (chunk, chunk),
                                 dtype=base.dtype, fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                                 overwrite=True)
        h, w = shapes[k][-2:]
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                part = np.asarray(src[..., 2 * y0:2 * (y0 + tile), 2 * x0:2 * (x0 + tile)])
                dst[..., y0:y0 + tile, x0:x0 + tile] = cast_like(_downsample(part, label=label), base.dtype)
    return len(shapes)


def _finish(group, store: Path, path: Path, attrs: dict) -> Path:
    """Write the final attributes (complete) and move the store to ``path``."""
    group.attrs.update(attrs)
    (store / PROGRESS_NAME).unlink(missing_ok=True)
    if path.exists():  # overwrite was allowed (check_output): the old one goes only now
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(store, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(store, path)
    return path


def _attrs(axes, physical, n_levels, *, name, metadata, kind="mean", extra=None) -> dict:
    return {"multiscales": multiscales(axes, physical, n_levels, name=name, kind=kind), **(extra or {}),
            ATTRS_KEY: {**_jsonable(metadata), "complete": True}}


def write_ome_zarr(path, data, *, axes: str, pixel_um=None, physical=None, metadata=None, overwrite: bool = False,
                   protect=(), label: bool = False, extra_attrs=None, add=None) -> Path:
    """Write an image in memory as an OME-Zarr store with its pyramid (atomic).

    ``axes`` name ``data``'s dimensions (transposed to NGFF's T, C, Z, Y, X order; S becomes
    C); ``physical`` (or ``pixel_um``) their scales (:func:`physical_from`); ``metadata`` the
    provenance (``napari_refocus`` attributes); ``label``: a label image (every other pixel
    in the pyramid); ``extra_attrs``: more root attributes; ``add(group, store)``: adds more
    to the store before it is finished (still under its ``.partial`` name).
    """
    path = check_output(path, overwrite=overwrite, protect=protect)
    out_axes, perm = ngff_axes(axes)
    data = np.transpose(np.asarray(data), perm)
    phys = physical_from(axes, pixel_um=pixel_um, physical=physical)
    store = partial_path(path)
    shutil.rmtree(store, ignore_errors=True)
    group = _create(store, data.shape, data.dtype, MAX_CHUNK)
    group.attrs.update({ATTRS_KEY: {"complete": False}})
    group["0"][...] = data
    n = build_pyramid(group, label=label)
    if add is not None:
        add(group, store)
    attrs = _attrs(out_axes, phys, n, name=path.name, metadata=metadata, kind="nearest" if label else "mean",
                   extra=extra_attrs)
    return _finish(group, store, path, attrs)


# ------------------------------------------------------------------ block by block, resumable
def _save_state(file: Path, state: dict) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, file)


def _resume_or_create(store: Path, key: str, shape, dtype, chunk: int):
    """(group, units already written): the partial store of the same job (``key``), else a new one."""
    import zarr

    state_file = store / PROGRESS_NAME
    if store.exists():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("key") == key:
            return zarr.open_group(str(store), mode="r+"), int(state.get("done", 0))
        shutil.rmtree(store)  # another job's, or one killed before it recorded anything
    group = _create(store, shape, dtype, chunk)
    group.attrs.update({ATTRS_KEY: {"complete": False}})
    _save_state(state_file, {"key": key, "done": 0})
    return group, 0


@dataclass
class _BlockJob:
    """One method on every plane of ``source`` (dimensions ``axes``), block by block."""

    source: object
    method: object
    params: dict
    axes: str
    r: int
    dtype: np.dtype
    block: int
    device: object
    key: str = ""

    def __post_init__(self):
        from ..bigimage import block_bounds

        shape = tuple(int(n) for n in self.source.shape)
        self.out_axes, self.perm = ngff_axes(self.axes)
        self.out_shape = tuple(shape[i] * (self.r if self.axes[i] in "YX" else 1) for i in self.perm)
        self.lead = [i for i, a in enumerate(self.axes) if a not in "YX"]
        self.pages = list(np.ndindex(*[shape[i] for i in self.lead]))
        s = self.axes.find("S")
        self.alpha_at = s if s >= 0 and shape[s] == 4 else None
        self.bounds = block_bounds((shape[self.axes.index("Y")], shape[self.axes.index("X")]), self.block)

    def _target(self, idx, bounds) -> tuple:
        """Where a block of the plane ``idx`` (an index of the source) goes in the output."""
        y0, y1, x0, x1 = (v * self.r for v in bounds)
        return tuple(slice(y0, y1) if self.axes[i] == "Y" else slice(x0, x1) if self.axes[i] == "X" else idx[i]
                     for i in self.perm)

    def write(self, level0, store: Path, done: int, progress=None) -> None:
        """Write every block after the first ``done`` into ``level0``, recording each in ``store``."""
        from ..bigimage import prepare
        from ..core.forward import cast_like
        from ..core.planes import ALPHA
        from ..core.progress import Progress
        from .write import PlaneView

        n, total, unit = len(self.bounds), len(self.pages) * len(self.bounds), 0
        for page in self.pages:
            if unit + n <= done:
                unit += n
                continue
            idx = [slice(None)] * len(self.axes)
            for i, v in zip(self.lead, page):
                idx[i] = v
            view = PlaneView(self.source, tuple(idx))
            copy = self.alpha_at is not None and idx[self.alpha_at] == ALPHA
            run = None if copy else prepare(view, self.method, self.params, device=self.device, block=self.block)
            for b in self.bounds:
                if unit < done:
                    unit += 1
                    continue
                y0, y1, x0, x1 = b
                out = repeat_pixels(view[y0:y1, x0:x1], self.r) if copy else run.restore(view, b)
                level0[self._target(idx, b)] = cast_like(out, self.dtype)
                unit += 1
                _save_state(store / PROGRESS_NAME, {"key": self.key, "done": unit})
                if progress:
                    progress(Progress(unit, total, f"{self.method.name}: blocks"))


def refocus_to_ome_zarr(source, path, *, method: str = "lbdvd", axes: str | None = None, dtype=None, pixel_um=None,
                        physical=None, metadata=None, block: int | None = None, device="auto", progress=None,
                        protect=(), overwrite: bool = True, **params) -> Path:
    """A registered method on ``source``, written block by block into an OME-Zarr store.

    As :func:`~napari_refocus.io.write.refocus_to_tiff` (``source`` numpy, dask or zarr with
    the dimensions ``axes`` names; every 2-D plane through
    :func:`napari_refocus.bigimage.prepare`, one block in memory; RGBA alpha copied;
    ``pixel_um`` given to a method that takes it), plus: the store has the input's axes in
    NGFF order, its ``physical`` metadata (or ``pixel_um``) made ``upscale`` x finer, a
    pyramid, and ``metadata`` as its provenance. Restartable: the same call after a kill
    continues from the last block written (see the module docstring).
    """
    from ..bigimage import DEFAULT_BLOCK, balanced_block
    from ..core.planes import normalise_axes
    from ..methods.registry import get_method
    from .write import infer_axes

    path = check_output(path, overwrite=overwrite, protect=protect)
    shape = tuple(int(n) for n in source.shape)
    ax = normalise_axes(axes, len(shape)) if axes is not None else infer_axes(shape)
    if ax.index("X") != ax.index("Y") + 1:
        raise ValueError(f"block-by-block writing takes Y followed by X, got axes {ax}")
    m = get_method(method)
    if pixel_um and m.accepts("pixel_um"):
        params = {**params, "pixel_um": float(pixel_um)}
    block = check_value("block", block)  # the shared rule: a positive integer (a raw StopIteration before)
    block = int(block or balanced_block(shape, m.block_multiple, DEFAULT_BLOCK))  # no thin last block by default
    job = _BlockJob(source, m, params, ax, int(m.upscale), np.dtype(dtype or source.dtype), block, device)
    # the same job (provenance, parameters, input, output) resumes a partial store; another rewrites it
    job.key = json.dumps({"metadata": _jsonable(metadata), "method": m.name, "params": _jsonable(params),
                          "shape": shape, "axes": ax, "dtype": job.dtype.str, "block": job.block},
                         sort_keys=True, default=str)
    store = partial_path(path)
    group, done = _resume_or_create(store, job.key, job.out_shape, job.dtype, chunk_side(job.block * job.r))
    try:
        job.write(group["0"], store, done, progress)
    except Exception:
        if not done and json.loads((store / PROGRESS_NAME).read_text()).get("done", 0) == 0:
            shutil.rmtree(store, ignore_errors=True)  # refused before any block (a bad parameter ...): no trace
        raise
    n = build_pyramid(group)
    phys = upscaled(physical_from(ax, pixel_um=pixel_um, physical=physical), job.r)
    meta = {**_jsonable(metadata), "input_axes": ax, "block": job.block}
    return _finish(group, store, path, _attrs(job.out_axes, phys, n, name=path.name, metadata=meta))


# ------------------------------------------------------------------------------ defocus maps
def _label_colors(n_levels: int) -> list:
    """RGBA (0..255) of each label value: level k + 1, blue (in focus) to red; 0 = background."""
    out = []
    for k in range(n_levels):
        f = k / max(1, n_levels - 1)
        out.append({"label-value": k + 1, "rgba": [int(255 * f), int(96 * (1 - abs(2 * f - 1))), int(255 * (1 - f)), 255]})
    return out


def write_defocus_map(path, dmap, *, physical=None, pixel_um=None, metadata=None, overwrite: bool = False,
                      protect=()) -> Path:
    """A :class:`~napari_refocus.methods.defocus.DefocusMap` as an OME-Zarr store on its patch grid.

    The root image holds the classes (0..10, 11 = background; uint8) as the TIFF map does; its
    scale and translation put one cell per patch over the image it was made from (``physical``
    of that image's Y/X, or ``pixel_um``), centred on the patch centre, ``stride x map scale``
    image pixels wide (the same placement as the widget's overlay). ``labels/defocus`` is the
    same grid as an NGFF label image (value = class + 1, 0 = background, so napari shows it as
    a labels layer) with each value's level and defocus in um as properties.
    """
    from ..core.optics import BACKGROUND

    phys = physical_from("YX", pixel_um=pixel_um, physical=physical)
    s = np.array([phys["Y"]["scale"], phys["X"]["scale"]])
    t = np.array([phys["Y"]["translation"], phys["X"]["translation"]])
    scale, translation = dmap.grid.layer_transform(s * dmap.scale, t + s * (dmap.scale - 1) / 2)
    grid = {a: {"scale": sc, "translation": tr, "unit": phys[a]["unit"]} for a, sc, tr in zip("YX", scale, translation)}
    levels = np.asarray(dmap.levels).astype(np.uint8)
    labels = np.where(levels == BACKGROUND, 0, levels + 1).astype(np.uint8)
    props = [{"label-value": k + 1, "level": k, "defocus_um": round(float(z), 4)} for k, z in enumerate(dmap.defocus_um)]

    def add_labels(group, store):
        group.create_group("labels").attrs.update({"labels": ["defocus"]})
        sub = _create(store / "labels" / "defocus", labels.shape, np.uint8, MAX_CHUNK)
        sub["0"][...] = labels
        sub.attrs.update({"multiscales": multiscales("YX", grid, 1, name="defocus", kind="nearest"),
                          "image-label": {"version": NGFF_VERSION, "colors": _label_colors(len(props)),
                                          "properties": props, "source": {"image": "../../"}}})

    return write_ome_zarr(path, levels, axes="YX", physical=grid, metadata=metadata, overwrite=overwrite,
                          protect=protect, label=True, add=add_labels)
