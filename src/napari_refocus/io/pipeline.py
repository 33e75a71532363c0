"""Read -> run -> cast -> write: the one pipeline behind ``napari-refocus refocus``, ``batch``
and ``demo --headless``.

* :func:`iter_restore` / :func:`restore_image` - every 2-D plane of an image (Z/T/C stacks
  plane by plane, RGB channel by channel, :mod:`napari_refocus.core.planes`) through a
  registered method, with optional focus triage, cast back to the input dtype; returns a
  :class:`Restored` (pixels, provenance, record).
* :func:`refocus_file` - one file in, one TIFF out: in memory, or block by block into a tiled
  BigTIFF (:func:`~napari_refocus.io.write.refocus_to_tiff`) when an in-memory run would not fit
  (:func:`napari_refocus.core.memory.needs_blocks`) or when asked; returns the record for the CLI and batch.

Optics (:mod:`napari_refocus.io.optics`): the values given (keywords, ``optics=``), an optics
file (``optics_file=``), the file's metadata (pixel size; OME objective NA, immersion index,
emission wavelength) and the defaults are merged in that order of precedence; the values that
are not defaults reach a method only if its schema has optics (``method.accepts("na")`` ...),
and the record says what was used and where each value came from. The output TIFF always
records the pixel size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.forward import cast_like
from ..core.planes import iter_map_planes, normalise_axes
from ..core.progress import drain
from ..core.resample import repeat_pixels
from .optics import OPTICS_FIELDS, cli_optics, given_optics, optics_report
from .formats import info_any as read_info, one_plane, open_any as open_image, output_stem, read_any as read_image
from .write import atomic_output, check_output, refocus_to_tiff, write_image
from .zarr import is_zarr_path

@dataclass
class Restored:
    """An image restored by :func:`iter_restore`.

    ``data``: the output (input dtype unless float32 was asked; the input itself when every
    plane was copied by triage), ``axes`` its axes; ``result``: the first restored plane's
    :class:`~napari_refocus.methods.RefocusResult` (None if none was restored); ``metadata``:
    the provenance to store with it; ``record``: action, device, focus and timings.
    """

    data: np.ndarray
    axes: str
    result: object = None
    metadata: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def method_params(method, params=None, *, pixel_um=None, optics=None) -> dict:
    """``params`` for ``method``, plus the image's ``pixel_um`` and the ``optics`` values
    (``{field: value}``) the method's schema takes (and ``params`` does not set). Checked
    against the schema: an unknown name is a ValueError that lists the valid ones."""
    from ..methods.registry import get_method
    from ..methods.run import split_inputs

    m = get_method(method)
    out = dict(params or {})
    extra = {**({"pixel_um": float(pixel_um)} if pixel_um else {}), **(optics or {})}
    out.update({k: v for k, v in extra.items() if k not in out and m.accepts(k)})
    m.parse(**split_inputs(m, out)[0])
    return out


def file_optics(m, params, info: dict, *, flags=None, optics_file=None) -> tuple[dict, dict]:
    """``(method keywords, record)`` of method ``m`` on a file with ``info``: ``params`` plus
    the optics of :func:`~napari_refocus.io.optics.cli_optics` (optics fields in ``params``
    count as flags) when ``m`` takes optics; the record has the optics used and their
    sources then, and ``pixel_um`` (given or from the file; None if unknown) always."""
    params = dict(params or {})
    flags = {**(flags or {}), **{k: params.pop(k) for k in list(params) if k in OPTICS_FIELDS}}
    if not m.accepts("optics"):
        values, sources = cli_optics(flags, optics_file, info, check=False)
        return method_params(m, params), {"pixel_um": values.get("pixel_um")}
    values, sources = cli_optics(flags, optics_file, info)
    given = given_optics(values, sources)
    return method_params(m, params, optics=given), {"pixel_um": given.get("pixel_um"),
                                                    **optics_report(values, sources)}


def below_threshold_untouched(dmap, min_level: int):
    """A copy of a DefocusMap whose patches below ``min_level`` are set to level 0
    (left untouched by depth-variant RL); background stays background."""
    from dataclasses import replace

    from ..core.optics import BACKGROUND

    levels = dmap.levels.copy()
    levels[(levels < min_level) & (levels != BACKGROUND)] = 0
    return replace(dmap, levels=levels)


def _focus(dmaps: list) -> dict:
    """Focus level (the most defocused plane's) and certainty of the planes' defocus maps."""
    scores = [d.focus_score_and_certainty() for d in dmaps]
    levels = [lv for lv, _ in scores if lv == lv]  # NaN: every patch is background
    out = {"focus_level": round(max(levels), 4) if levels else None,
           "focus_certainty": round(float(np.mean([c for _, c in scores])), 4) if scores else None}
    if len(scores) > 1:
        out["focus_levels"] = [None if lv != lv else round(lv, 4) for lv, _ in scores]
    return out


def iter_restore(image, *, axes: str = "YX", method="lbdvd", device="auto", params=None,
                 float32: bool = False, min_level=None, patch_min_level=None):
    """Restore every 2-D plane of ``image`` (a generator: yields Progress, returns
    :class:`Restored`).

    ``params``: the method's keywords (see :func:`method_params`). Triage: with
    ``min_level``, a plane whose DelpNet focus level is below it is copied, not restored (the
    whole input is written unchanged when every plane is); with ``patch_min_level``, lbdvd
    leaves patches below that level untouched. The output is cast back to the input's dtype
    (integers rounded and clipped) unless ``float32``.
    """
    from ..methods.registry import get_method
    from ..methods.run import iter_refocus

    m = get_method(method)
    ax = normalise_axes(axes, np.ndim(image))
    params = dict(params or {})
    takes_map = "defocus_map" in m.inputs
    need_map = min_level is not None or (takes_map and patch_min_level)
    dmaps, results, copied = [], [], []
    clock = {"map": 0.0, "restore": 0.0}

    def job(plane):
        t0 = time.perf_counter()
        extra = {}
        if need_map:
            from ..methods.lbdvd import METHOD as LBDVD, iter_map

            # lbdvd's own map (its optics, stride, TTA, intensity scale); for another method the
            # default map with the image's optics, when that method has them
            if takes_map:
                map_params = m.parse(**params)
            else:
                optics = getattr(m.parse(**params), "optics", None)
                map_params = LBDVD.parse(**({"optics": optics} if optics is not None else {}))
            dmap = yield from iter_map(plane, map_params, device=device)
            dmaps.append(dmap)
            level = dmap.focus_score()
            if min_level is not None and not (level >= min_level):  # NaN (all background): copy
                copied.append(len(dmaps) - 1)
                clock["map"] += time.perf_counter() - t0
                img = np.asarray(plane, np.float32)
                return repeat_pixels(img, m.upscale), None
            if takes_map:
                extra["defocus_map"] = below_threshold_untouched(dmap, int(patch_min_level)) \
                    if patch_min_level else dmap
        t1 = time.perf_counter()
        clock["map"] += t1 - t0
        res = yield from iter_refocus(plane, method=m, device=device, **params, **extra)
        clock["restore"] += time.perf_counter() - t1
        results.append(res)
        return res.image, res

    stack, _ = yield from iter_map_planes(image, job, axes=ax, upscale=m.upscale)
    first = results[0] if results else None
    record = {"method": m.name, "axes": ax, "seconds_map": round(clock["map"], 3),
              "seconds_restore": round(clock["restore"], 3)}
    if dmaps:
        record.update(_focus(dmaps))
    elif first is not None and first.defocus_map is not None:
        record.update(_focus([r.defocus_map for r in results]))
    if first is None and copied:  # every plane in focus: the input, unchanged
        record.update(action="copied (in focus: level below --min-level)", device=None)
        return Restored(np.asarray(image), ax, None, {"napari_refocus": "copied by focus triage"}, record)
    data = stack if float32 else cast_like(stack, np.asarray(image).dtype)
    metadata = first.provenance() if first is not None else {}
    devices = sorted({r.device for r in results})
    if len(devices) > 1:
        metadata.setdefault("notes", []).append(f"planes ran on {', '.join(devices)}")
    if copied:
        metadata.setdefault("notes", []).append(f"planes {copied} copied by focus triage (in focus)")
    record.update(action="restored" if not copied else f"restored {len(results)} planes, copied {len(copied)}",
                  device=first.device if first is not None else None)
    return Restored(data, ax, first, metadata, record)


def restore_image(image, *, progress=None, **kwargs) -> Restored:
    """:func:`iter_restore` run to the end (``progress`` gets every Progress)."""
    return drain(iter_restore(image, **kwargs), progress)


def use_blocks(path, info: dict, chunked, method="lbdvd") -> bool:
    """Whether ``path`` is restored block by block: asked (``chunked=True``), or a TIFF whose
    in-memory run with ``method`` would not fit in the memory available
    (:func:`napari_refocus.core.memory.needs_blocks`; ``chunked=None``)."""
    from ..core.memory import needs_blocks

    if chunked is not None:
        return bool(chunked)
    if is_zarr_path(path):  # a store is read chunk by chunk: never all of it in memory
        return True
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return False
    return needs_blocks(info["shape"], info["dtype"], method, axes=info["axes"])


def _refocus_blocks(path, out, m, kwargs: dict, *, pixel, axes, float32, device, progress, overwrite,
                    extra=None, block=None) -> dict:
    """The block-by-block branch of :func:`refocus_file` (a TIFF read lazily, a tiled BigTIFF out)."""
    from ..core.devices import resolve_device
    from ..methods.base import RefocusResult

    t0 = time.perf_counter()
    source, info = open_image(path, axes=axes)
    dev = str(resolve_device(device))
    provenance = RefocusResult(image=None, method=m.name, parameters=m.parse(**kwargs).as_dict(), upscale=m.upscale,
                               device=dev, notes=["computed block by block (weights hashes not recorded)"]).provenance()
    provenance.pop("seconds")
    pixel = kwargs.pop("pixel_um", pixel)  # refocus_to_tiff gives it to methods that take it
    write = refocus_to_tiff
    if is_zarr_path(out):
        from .zarr_write import refocus_to_ome_zarr

        write, kwargs = refocus_to_ome_zarr, {**kwargs, "physical": _physical(info, pixel)}
    write(source, out, method=m.name, axes=info["axes"], dtype="float32" if float32 else None, pixel_um=pixel,
          metadata={"source": str(path), "chunked": True, **provenance, **(extra or {})}, device=dev, block=block,
          progress=progress, protect=[path], overwrite=overwrite, **kwargs)
    seconds = time.perf_counter() - t0
    mpx = float(np.prod(source.shape)) / 1e6
    return {"action": "restored", "chunked": True, "axes": info["axes"], "device": dev, "megapixels": round(mpx, 2),
            "megapixels_per_s": round(mpx / seconds, 3), "seconds_total": round(seconds, 3)}


def refocus_file(path, out, *, method="lbdvd", device="auto", params=None, axes=None, pixel_um=None,
                 optics=None, optics_file=None, float32: bool = False, chunked=None, min_level=None,
                 patch_min_level=None, overwrite: bool = False, progress=None, block=None) -> dict:
    """Read ``path``, restore every plane with ``method``, write ``out`` (a TIFF, or an OME-Zarr
    store when its name ends in ``.zarr``: :mod:`.zarr_write`); returns
    its record (input, output, method, device, action, axes, shape, chunked, focus, seconds;
    the optics used and their sources for a method with optics).

    ``axes`` overrides the file's axes; ``pixel_um`` its pixel size; ``optics`` (``{field:
    value}``) and the JSON ``optics_file`` its optics (see the module docstring). ``chunked``: True/False
    forces block-by-block / in-memory processing, None decides by size (an OME-Zarr input is
    always read block by block); ``block``: the block side then (default bigimage's). The output keeps the
    input's dtype unless ``float32``, records the pixel size (divided by an upscaling method's
    factor) and the provenance (method, parameters as used, weights hashes, device, source).
    """
    from ..methods.registry import get_method

    path, out = Path(path), Path(out)
    check_output(out, overwrite=overwrite, protect=[path])
    m = get_method(method)
    t0 = time.perf_counter()
    info = read_info(path, axes=axes)
    flags = {**(optics or {}), **({"pixel_um": pixel_um} if pixel_um else {})}
    kwargs, used = file_optics(m, params, info, flags=flags, optics_file=optics_file)
    pixel = used.pop("pixel_um")
    out_um = pixel / m.upscale if pixel else None
    record = {"input": str(path), "output": str(out), "method": m.name, "status": "done", **used}
    sources = {"optics_source": used["optics_source"]} if "optics_source" in used else {}
    if use_blocks(path, info, chunked, m):
        if min_level is not None or patch_min_level:
            raise ValueError("focus triage (min levels) takes images processed in memory, not block by block")
        return {**record, **_refocus_blocks(path, out, m, kwargs, pixel=pixel, axes=axes, float32=float32,
                                            device=device, progress=progress, overwrite=overwrite, extra=sources,
                                            block=block)}
    image, info = read_image(path, axes=axes)
    t_read = time.perf_counter() - t0
    restored = restore_image(image, axes=info["axes"], method=m, device=device, params=kwargs, float32=float32,
                             min_level=min_level, patch_min_level=patch_min_level, progress=progress)
    t1 = time.perf_counter()
    meta = {"source": str(path), **restored.metadata, **sources}
    if is_zarr_path(out):
        from .zarr_write import upscaled, write_ome_zarr

        r = m.upscale if restored.result is not None else 1
        write_ome_zarr(out, restored.data, axes=restored.axes, metadata=meta, overwrite=overwrite, protect=[path],
                       physical=upscaled(_physical(info, pixel, restored.axes), r))
    else:
        write_image(out, restored.data, pixel_um=out_um if restored.result is not None else pixel, metadata=meta,
                    overwrite=overwrite, protect=[path], axes=restored.axes)
    t_write = time.perf_counter() - t1
    record.update(restored.record, chunked=False, shape=list(restored.data.shape), seconds_read=round(t_read, 3),
                  seconds_write=round(t_write, 3), seconds_total=round(time.perf_counter() - t0, 3))
    return record


def _physical(info: dict, pixel, axes=None) -> dict:
    """The input's scale per axis (:func:`.zarr_write.physical_from`): the file's own, with Y/X
    set to ``pixel`` um when that is not the file's pixel size (given by a flag)."""
    from .zarr_write import physical_from

    physical = dict(info.get("physical") or {})
    if pixel and pixel != info.get("pixel_um"):
        physical.update({a: {"scale": float(pixel), "translation": 0.0, "unit": "micrometer"} for a in "YX"})
    return physical_from(axes or info["axes"], pixel_um=pixel, physical=physical)


def _read_with_optics(path, optics, optics_file, *, lazy: bool = False):
    """``(image, info, optics values, sources)`` of a file for the simulate/deconvolve/map
    commands; ``lazy``: an OME-Zarr store stays on disk, its single plane read block by block."""
    if lazy and is_zarr_path(path):
        image, info = open_image(path)
        if sum(n > 1 for n in image.shape[:-2]):
            raise ValueError(f"{path} has axes {info['axes']} {tuple(image.shape)}: a defocus map takes one 2-D plane")
        image = image.reshape(image.shape[-2:])
    else:
        image, info = read_image(path)
    values, sources = cli_optics(optics, optics_file, info)
    return image, info, values, sources


def simulate_file(path, out, *, level: int, noise="poisson", gain: float = 1.0, seed=None, optics=None,
                  optics_file=None, overwrite: bool = False) -> dict:
    """Defocus the in-focus image ``path`` to ``level`` (Born-Wolf PSF, Poisson ``noise``) into
    ``out``, with the optics given (``optics``, ``optics_file``) or stated by the file."""
    from ..core.forward import simulate

    check_output(out, overwrite=overwrite, protect=[path])
    image, _, values, sources = _read_with_optics(path, optics, optics_file)
    t0 = time.perf_counter()
    blurred = simulate(image, level=level, noise=noise, gain=gain, seed=seed, **given_optics(values, sources))
    meta = {"napari_refocus": "simulate", "level": level, "seed": seed, **optics_report(values, sources)}
    write_image(out, blurred, pixel_um=values["pixel_um"], metadata=meta, overwrite=overwrite, protect=[path])
    return {"input": str(path), "output": str(out), "level": level, **optics_report(values, sources),
            "seconds": round(time.perf_counter() - t0, 3)}


def deconvolve_file(path, out, *, level=None, level_map=None, iterations: int = 15, device="auto",
                    montage_weights="triangular", padding="reflect", optics=None, optics_file=None,
                    float32: bool = False, overwrite: bool = False, progress=None) -> dict:
    """Richardson-Lucy of the image ``path`` with one ``level`` or the per-patch levels of the
    TIFF ``level_map``, into ``out`` (the input's dtype unless ``float32``)."""
    from ..core.rl import iter_deconvolve

    check_output(out, overwrite=overwrite, protect=[path, level_map])
    image, _, values, sources = _read_with_optics(path, optics, optics_file)
    levels = None
    if level_map is not None:
        levels, map_info = read_image(level_map)
        if float((map_info.get("metadata") or {}).get("scale", 1.0)) != 1.0:
            raise ValueError(f"{level_map} was made on a resampled grid (another objective than DelpNet's); "
                             "restore with `napari-refocus refocus --method lbdvd` and the same optics")
    t0 = time.perf_counter()
    restored = drain(iter_deconvolve(image, level=level, level_map=levels, iterations=iterations, device=device,
                                     montage_weights=montage_weights, padding=padding,
                                     **given_optics(values, sources)), progress)
    seconds = time.perf_counter() - t0
    meta = {"napari_refocus": "deconvolve", "level": level, "level_map": None if level_map is None else str(level_map),
            "iterations": iterations, "montage": montage_weights, **optics_report(values, sources)}
    write_image(out, restored if float32 else cast_like(restored, image.dtype), pixel_um=values["pixel_um"],
                metadata=meta, overwrite=overwrite, protect=[path, level_map])
    return {"input": str(path), "output": str(out), **optics_report(values, sources), "seconds": round(seconds, 3)}


def defocus_map_file(path, outdir, *, device="auto", stride: int = 42, tta: bool = False, optics=None,
                     optics_file=None, overwrite: bool = False, progress=None, fmt: str = "tiff") -> dict:
    """DelpNet's defocus map of a 2-D image file for its optics: ``<stem>_levels.tif`` (uint8
    classes on the map's patch grid, 11 = background; the grid's scale, each class's defocus
    in um and the optics in its metadata) and ``<stem>_patches.csv`` (one row per patch, with
    native corners and ``defocus_um``) in ``outdir``; returns the record (files, grid, focus
    level, its defocus in um and certainty, the optics and their sources, seconds). ``fmt="ome-zarr"``:
    ``<stem>_levels.ome.zarr`` instead, the map on its patch grid with the scale and translation
    that lay it over the image (:func:`.zarr_write.write_defocus_map`). An OME-Zarr input is
    read block by block."""
    import csv

    from ..api import defocus_map
    from .formats import output_name

    path, outdir = Path(path), Path(outdir)
    levels_path = outdir / output_name(path, "_levels", fmt)
    csv_path = outdir / f"{output_stem(path)}_patches.csv"
    for out in (levels_path, csv_path):
        check_output(out, overwrite=overwrite, protect=[path])
    image, info, values, sources = _read_with_optics(path, optics, optics_file, lazy=True)
    image, t0 = one_plane(path, image, info.get("axes") or ""), time.perf_counter()  # RGB: its mean colour
    dmap = defocus_map(image, device=device, stride=stride, tta=tta, progress=progress, **given_optics(values, sources))
    seconds = time.perf_counter() - t0
    table = [round(float(z), 4) for z in dmap.defocus_um]
    shared = {"beyond_top": dmap.coarse.provenance() if dmap.coarse is not None else None,  # methods.deep
              **optics_report(values, sources), "map_choice": dmap.choice or None}  # map_pixel_um="auto"
    meta = {"napari_refocus": "defocus-map", "source": str(path), "grid": dmap.grid.as_dict(), "scale": dmap.scale,
            "class_defocus_um": table, "background_value": 11, **shared}
    if fmt == "ome-zarr":
        from .zarr_write import write_defocus_map

        write_defocus_map(levels_path, dmap, physical=_physical(info, values["pixel_um"], "YX"), metadata=meta,
                          overwrite=overwrite, protect=[path])
    else:
        write_image(levels_path, dmap.levels.astype(np.uint8), metadata=meta, overwrite=overwrite, protect=[path])
    rows = dmap.to_rows()
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    level, certainty = dmap.focus_score_and_certainty()
    focus_um = dmap.focus_defocus_um()
    return {"input": str(path), "levels": str(levels_path), "patches": str(csv_path), "grid": list(dmap.grid.shape),
            "scale": dmap.scale, "class_defocus_um": table, "focus_level": None if level != level else level,
            "focus_defocus_um": None if focus_um != focus_um else round(focus_um, 4), "focus_certainty": certainty,
            **shared, "seconds": round(seconds, 3)}
