"""Read -> run -> cast -> write: the one pipeline behind ``napari-refocus refocus``, ``batch``
and ``demo --headless``.

* :func:`iter_restore` / :func:`restore_image` - every 2-D plane of an image (Z/T/C stacks
  plane by plane, RGB channel by channel, :mod:`napari_refocus.core.planes`) through a
  registered method, with optional focus triage, cast back to the input dtype; returns a
  :class:`Restored` (pixels, provenance, record).
* :func:`refocus_file` - one file in, one TIFF out: in memory, or block by block into a tiled
  BigTIFF (:func:`~napari_refocus.io.write.refocus_to_tiff`) when an in-memory run would not fit
  (:func:`napari_refocus.core.memory.needs_blocks`) or when asked; returns the record the CLI prints and batch
  writes to its report.
* :func:`demo_headless` - the sample pair through LB-DVD, written as four TIFFs, with metrics.

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
from .optics import OPTICS_FIELDS, cli_optics, given_optics, optics_report
from .read import open_image, read_image, read_info
from .write import atomic_output, check_output, refocus_to_tiff, write_image

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
                return np.repeat(np.repeat(img, m.upscale, 0), m.upscale, 1), None
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
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return False
    return needs_blocks(info["shape"], info["dtype"], method, axes=info["axes"])


def _refocus_blocks(path, out, m, kwargs: dict, *, pixel, axes, float32, device, progress, overwrite,
                    extra=None) -> dict:
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
    refocus_to_tiff(source, out, method=m.name, axes=info["axes"], dtype="float32" if float32 else None,
                    pixel_um=pixel, metadata={"source": str(path), "chunked": True, **provenance, **(extra or {})}, device=dev,
                    progress=progress, protect=[path], overwrite=overwrite, **kwargs)
    seconds = time.perf_counter() - t0
    mpx = float(np.prod(source.shape)) / 1e6
    return {"action": "restored", "chunked": True, "axes": info["axes"], "device": dev, "megapixels": round(mpx, 2),
            "megapixels_per_s": round(mpx / seconds, 3), "seconds_total": round(seconds, 3)}


def refocus_file(path, out, *, method="lbdvd", device="auto", params=None, axes=None, pixel_um=None,
                 optics=None, optics_file=None, float32: bool = False, chunked=None, min_level=None,
                 patch_min_level=None, overwrite: bool = False, progress=None) -> dict:
    """Read ``path``, restore every plane with ``method``, write the TIFF ``out``; returns
    its record (input, output, method, device, action, axes, shape, chunked, focus, seconds;
    the optics used and their sources for a method with optics).

    ``axes`` overrides the file's axes; ``pixel_um`` its pixel size; ``optics`` (``{field:
    value}``) and the JSON ``optics_file`` its optics (see the module docstring). ``chunked``: True/False
    forces block-by-block / in-memory processing, None decides by size. The output keeps the
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
                                            device=device, progress=progress, overwrite=overwrite, extra=sources)}
    image, info = read_image(path, axes=axes)
    t_read = time.perf_counter() - t0
    restored = restore_image(image, axes=info["axes"], method=m, device=device, params=kwargs, float32=float32,
                             min_level=min_level, patch_min_level=patch_min_level, progress=progress)
    t1 = time.perf_counter()
    write_image(out, restored.data, pixel_um=out_um if restored.result is not None else pixel,
                metadata={"source": str(path), **restored.metadata, **sources}, overwrite=overwrite, protect=[path],
                axes=restored.axes)
    t_write = time.perf_counter() - t1
    record.update(restored.record, chunked=False, shape=list(restored.data.shape), seconds_read=round(t_read, 3),
                  seconds_write=round(t_write, 3), seconds_total=round(time.perf_counter() - t0, 3))
    return record


def _read_with_optics(path, optics, optics_file):
    """``(image, info, optics values, sources)`` of a file for the simulate/deconvolve/map commands."""
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
                     optics_file=None, overwrite: bool = False, progress=None) -> dict:
    """DelpNet's defocus map of a 2-D image file for its optics: ``<stem>_levels.tif`` (uint8
    classes on the map's patch grid, 11 = background; the grid's scale, each class's defocus
    in um and the optics in its metadata) and ``<stem>_patches.csv`` (one row per patch, with
    native corners and ``defocus_um``) in ``outdir``; returns the record (files, grid, focus
    level, its defocus in um and certainty, the optics and their sources, seconds)."""
    import csv

    from ..api import defocus_map

    path, outdir = Path(path), Path(outdir)
    levels_path, csv_path = outdir / f"{path.stem}_levels.tif", outdir / f"{path.stem}_patches.csv"
    for out in (levels_path, csv_path):
        check_output(out, overwrite=overwrite, protect=[path])
    image, _, values, sources = _read_with_optics(path, optics, optics_file)
    t0 = time.perf_counter()
    dmap = defocus_map(image, device=device, stride=stride, tta=tta, progress=progress,
                       **given_optics(values, sources))
    seconds = time.perf_counter() - t0
    table = [round(float(z), 4) for z in dmap.defocus_um]
    write_image(levels_path, dmap.levels.astype(np.uint8), metadata={
        "napari_refocus": "defocus-map", "source": str(path), "grid": dmap.grid.as_dict(), "scale": dmap.scale,
        "class_defocus_um": table, "background_value": 11, **optics_report(values, sources)},
        overwrite=overwrite, protect=[path])
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
            **optics_report(values, sources), "seconds": round(seconds, 3)}


def demo_headless(outdir, *, device="auto") -> dict:
    """Defocus the shipped in-focus sample, refocus it with LB-DVD, write the ground truth, the
    input, the result and the level map into ``outdir``; returns the metrics and file names."""
    from ..core.metrics import compare
    from .samples import PIXEL_UM, synthetic_pair

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    blurred, gt, _ = synthetic_pair()
    restored = restore_image(blurred, axes="YX", method="lbdvd", device=device)
    result = restored.result
    files = {}
    layers = (("ground_truth", gt, {}), ("defocused", blurred, {}), ("refocused", restored.data, restored.metadata),
              ("level_map", result.defocus_map.levels.astype(np.uint8), {}))
    for name, arr, extra in layers:
        path = outdir / f"sample_{name}.tif"
        write_image(path, arr, pixel_um=PIXEL_UM if name != "level_map" else None, overwrite=True,
                    metadata={"napari_refocus": "demo", "layer": name, **extra})
        files[name] = str(path)
    report = compare(gt, result.image, blurred)
    level, certainty = result.defocus_map.focus_score_and_certainty()
    report.update({"method": "lbdvd (DelpNet defocus map + depth-variant RL)", "seconds": round(result.seconds, 3),
                   "focus_level": level, "focus_certainty": certainty, "files": files})
    return report
