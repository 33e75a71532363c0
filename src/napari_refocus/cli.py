"""The ``napari-refocus`` command line: parse, call the API, report (JSON on stdout).

Errors exit non-zero with one line on stderr (no traceback), and no command ever writes
over one of its input files.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import sys
import time
from pathlib import Path

PROG = "napari-refocus"


class CliError(Exception):
    """An error to report in one line."""


def _emit(obj) -> None:
    print(json.dumps(obj, default=_json_default), flush=True)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _progress_bar(desc: str, enabled: bool = True):
    """A callback for :class:`Progress` events that drives a tqdm bar on stderr."""
    from .core.progress import progress_bar

    return progress_bar(desc, enabled=enabled, mininterval=0.2)


def _optics_kwargs(args, pixel_um_from_file=None) -> dict:
    kw = {}
    for name in ("wavelength_nm", "na", "refractive_index", "level_step_um"):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    pixel = getattr(args, "pixel_um", None) or pixel_um_from_file
    if pixel:
        kw["pixel_um"] = float(pixel)
    return kw


def _add_optics(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optics (defaults: LB-DVD paper / BBBC006)")
    g.add_argument("--wavelength-nm", dest="wavelength_nm", type=float, help="emission wavelength, nm (451)")
    g.add_argument("--na", type=float, help="numerical aperture (0.5)")
    g.add_argument("--refractive-index", dest="refractive_index", type=float, help="immersion index (1.0)")
    g.add_argument(
        "--pixel-um", dest="pixel_um", type=float,
        help="pixel size in the sample, um (default: from the file, else 0.65)",
    )
    g.add_argument("--level-step-um", dest="level_step_um", type=float, help="defocus per level, um (2)")


def _check_output(out: Path, inputs, overwrite: bool) -> None:
    for i in inputs:
        if i is not None and Path(i).resolve() == Path(out).resolve():
            raise CliError(f"output {out} is the same file as input {i}; refusing to write over an input")
    if Path(out).exists() and not overwrite:
        raise CliError(f"output {out} exists; pass --overwrite or choose another path")


def _read(path):
    from .io import read_image

    if not Path(path).exists():
        raise CliError(f"no such file: {path}")
    return read_image(path)


# --------------------------------------------------------------------------------------
def cmd_simulate(args) -> None:
    from .io import write_image
    from .core.forward import simulate

    _check_output(args.output, [args.input], args.overwrite)
    image, info = _read(args.input)
    optics = _optics_kwargs(args, info["pixel_um"])
    t0 = time.perf_counter()
    out = simulate(
        image, level=args.level, noise=None if args.no_noise else "poisson",
        gain=args.gain, seed=args.seed, **optics,
    )
    meta = {"napari_refocus": "simulate", "level": args.level, "seed": args.seed, "optics": optics}
    write_image(args.output, out, pixel_um=optics.get("pixel_um"), metadata=meta,
                overwrite=args.overwrite, protect=[args.input])
    _emit({"input": args.input, "output": args.output, "level": args.level,
           "seconds": round(time.perf_counter() - t0, 3)})


def cmd_deconvolve(args) -> None:
    import numpy as np

    from .core.rl import iter_deconvolve
    from .core.progress import drain
    from .io import write_image
    from .core.forward import cast_like

    if (args.level is None) == (args.level_map is None):
        raise CliError("give exactly one of --level L or --level-map MAP.tif")
    _check_output(args.output, [args.input, args.level_map], args.overwrite)
    image, info = _read(args.input)
    level_map = None
    if args.level_map is not None:
        level_map = _read(args.level_map)[0]
    optics = _optics_kwargs(args, info["pixel_um"])
    update, close = _progress_bar("deconvolve", not args.quiet)
    t0 = time.perf_counter()
    try:
        out = drain(
            iter_deconvolve(
                image, level=args.level, level_map=level_map, iterations=args.iterations,
                device=args.device, montage_weights=args.montage, padding=args.padding,
                **optics,
            ),
            update,
        )
    finally:
        close()
    seconds = time.perf_counter() - t0
    if not args.float32:
        out = cast_like(out, np.asarray(image).dtype)
    meta = {
        "napari_refocus": "deconvolve", "level": args.level, "level_map": args.level_map,
        "iterations": args.iterations, "montage": args.montage, "optics": optics,
    }
    write_image(args.output, out, pixel_um=optics.get("pixel_um"), metadata=meta,
                overwrite=args.overwrite, protect=[args.input, args.level_map])
    _emit({"input": args.input, "output": args.output, "seconds": round(seconds, 3)})


def cmd_evaluate(args) -> None:
    from .core.metrics import compare

    gt = _read(args.gt)[0]
    pred = _read(args.pred)[0]
    inp = _read(args.input)[0] if args.input else None
    _emit(compare(gt, pred, inp, data_range=args.data_range))


def cmd_demo(args) -> None:
    if args.headless:
        return _demo_headless(args)
    from .ui.demo import run_demo

    run_demo(screenshot=args.screenshot)


def cmd_methods(args) -> None:
    from .core.devices import resolve_device
    from .methods import list_methods

    device = str(resolve_device(args.device))
    for m in list_methods():
        _emit({"method": m.name, "title": m.title, "weights": list(m.weights),
               "weights_present": m.weights_present(), "device": device, "upscale": m.upscale})


def _expand_inputs(inputs):
    from .io.batch import expand_inputs

    return expand_inputs(inputs)


def cmd_defocus_map(args) -> None:
    import csv

    import numpy as np

    from .methods.defocus import iter_defocus_map
    from .core.progress import drain
    from .io import write_image

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in _expand_inputs(args.inputs):
        image, info = _read(path)
        levels_path = outdir / f"{path.stem}_levels.tif"
        csv_path = outdir / f"{path.stem}_patches.csv"
        for out in (levels_path, csv_path):
            _check_output(out, [path], args.overwrite)
        update, close = _progress_bar(f"defocus map {path.name}", not args.quiet)
        t0 = time.perf_counter()
        try:
            dmap = drain(iter_defocus_map(image, device=args.device, stride=args.stride, tta=args.tta), update)
        finally:
            close()
        seconds = time.perf_counter() - t0
        write_image(levels_path, dmap.levels.astype(np.uint8), metadata={
            "napari_refocus": "defocus-map", "source": str(path), "grid": dmap.grid.as_dict(),
            "background_value": 11}, overwrite=args.overwrite, protect=[path])
        rows = dmap.to_rows()
        tmp = csv_path.with_name(f".{csv_path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(csv_path)
        level, certainty = dmap.focus_score_and_certainty()
        _emit({"input": str(path), "levels": str(levels_path), "patches": str(csv_path),
               "grid": list(dmap.grid.shape), "focus_level": None if level != level else level,
               "focus_certainty": certainty, "seconds": round(seconds, 3)})


def _method_params(args, pixel_um=None) -> dict:
    """The method keywords the ``refocus`` options ask for (optics, iterations, level, tta)."""
    from .methods import get_method

    params = _optics_kwargs(args, pixel_um)
    if args.iterations is not None:
        params["iterations"] = args.iterations
    if args.level is not None:
        params["level"] = args.level
    if args.tta:
        if "tta" not in get_method(args.method).defaults:
            raise CliError(f"--tta: method {args.method!r} has no network to augment")
        params["tta"] = True
    return params


def cmd_refocus(args) -> None:
    from .io import write_image
    from .methods import get_method, iter_refocus
    from .core.progress import drain
    from .core.forward import cast_like

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in _expand_inputs(args.inputs):
        out = outdir / f"{path.stem}_refocused.tif"
        _check_output(out, [path], args.overwrite)
        if args.chunked or _pixels_in(path) > CHUNKED_ABOVE:
            _refocus_chunked(path, out, args)
            continue
        image, info = _read(path)
        params = _method_params(args, info["pixel_um"])
        update, close = _progress_bar(f"{args.method} {path.name}", not args.quiet)
        t0 = time.perf_counter()
        try:
            result = drain(iter_refocus(image, method=args.method, device=args.device, **params), update)
        finally:
            close()
        t_run = time.perf_counter() - t0
        data = result.image if args.float32 else cast_like(result.image, image.dtype)
        pixel = params.get("pixel_um")
        t1 = time.perf_counter()
        write_image(out, data, pixel_um=pixel / result.upscale if pixel else None,
                    metadata={"source": str(path), **result.provenance()},
                    overwrite=args.overwrite, protect=[path])
        line = {"input": str(path), "output": str(out), "method": result.method, "device": result.device,
                "seconds": {"read_and_run": round(t_run, 3), "write": round(time.perf_counter() - t1, 3)}}
        if result.defocus_map is not None:
            level, certainty = result.defocus_map.focus_score_and_certainty()
            line.update(focus_level=None if level != level else level, focus_certainty=certainty)
        _emit(line)


CHUNKED_ABOVE = 64 * 2**20  # pixels; larger images are read lazily and written block by block


def _pixels_in(path) -> int:
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return 0
    import tifffile

    with tifffile.TiffFile(path) as tif:
        shape = tif.series[0].shape
    return int(np.prod(shape[-2:])) if shape else 0


def _refocus_chunked(path, out, args) -> None:
    """Big TIFF: read through tifffile's zarr store, restored block by block, tiled BigTIFF out."""
    import tifffile
    import zarr

    from .bigimage import refocus_to_tiff
    from .io import read_pixel_um

    source = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if len(source.shape) != 2:
        raise CliError(f"{path}: expected a 2-D image, got shape {source.shape}")
    params = _method_params(args, read_pixel_um(path))
    pixel = params.pop("pixel_um", None)
    update, close = _progress_bar(f"{args.method} (blocks) {path.name}", not args.quiet)
    t0 = time.perf_counter()
    try:
        refocus_to_tiff(source, out, method=args.method, dtype=None if not args.float32 else "float32",
                        pixel_um=pixel, metadata={"source": str(path), "method": args.method, "chunked": True,
                                                  "parameters": {**params, "pixel_um": pixel}},
                        device=args.device, progress=update, protect=[path], **params)
    finally:
        close()
    seconds = time.perf_counter() - t0
    mpx = np.prod(source.shape) / 1e6
    _emit({"input": str(path), "output": str(out), "method": args.method, "chunked": True,
           "megapixels": round(float(mpx), 2), "seconds": round(seconds, 3),
           "megapixels_per_s": round(float(mpx / seconds), 3)})


def cmd_batch(args) -> None:
    from .io.batch import run_batch

    params = _optics_kwargs(args)
    if args.iterations is not None:
        params["iterations"] = args.iterations
    if args.level is not None:
        params["level"] = args.level
    report = run_batch(
        args.inputs, args.outdir, method=args.method, scheduler=args.scheduler, workers=args.workers,
        device=args.device, min_level=args.min_level, patch_min_level=args.patch_min_level,
        params=params, progress=not args.quiet,
    )
    _emit({k: v for k, v in report.items() if k != "records"})


def cmd_triage(args) -> None:
    from .methods.triage import best_focus_plane

    stack, _ = _read(args.input)
    for rec in best_focus_plane(stack, z_axis=args.z_axis, channel_axis=args.channel_axis,
                                device=args.device, use_delpnet=not args.no_delpnet):
        _emit({"input": args.input, **rec})


def cmd_train(args) -> None:
    if args.model == "delpnet":
        from .training.train_delpnet import train_delpnet

        given = [n for n in ("minutes", "steps", "from_zstack", "init", "lr", "set") if getattr(args, n) is not None]
        if given:
            raise CliError("train delpnet: " + ", ".join("--" + n.replace("_", "-") for n in given)
                           + " only apply to the learned generators (delpnet takes --epochs)")
        kwargs = {"device": args.device, "seed": args.seed, "resume": not args.no_resume}
        if args.epochs is not None:
            kwargs["epochs"] = args.epochs
        if args.data_root:
            kwargs["data_root"] = args.data_root
        if args.num_threads is not None:
            kwargs["num_threads"] = args.num_threads
        result = train_delpnet(args.out, **kwargs)
    else:
        from .methods import get_method

        get_method(args.model)  # a clear error for an unknown name
        try:
            from .training.train_generators import train_generator
        except ImportError as exc:
            raise CliError(f"no training recipe for {args.model!r}: {exc}") from None
        if args.epochs is not None:
            raise CliError(f"train {args.model}: --epochs is for delpnet; a generator takes --minutes or --steps")
        kwargs = {"device": args.device, "seed": args.seed, "resume": not args.no_resume}
        for name in ("minutes", "steps", "from_zstack", "init", "num_threads", "lr"):
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)
        for item in args.set or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CliError(f"--set expects KEY=VALUE, got {item!r}")
            try:
                kwargs[key] = json.loads(value)
            except json.JSONDecodeError:
                kwargs[key] = value
        result = train_generator(args.model, args.out, **kwargs)
    _emit(result if isinstance(result, dict) else {"out": str(args.out)})


def _demo_headless(args) -> None:
    """Defocus the shipped in-focus sample, refocus it with LB-DVD, write the layers, print metrics."""
    import numpy as np

    from .io import write_image
    from .api import refocus
    from .core.metrics import compare
    from .io.samples import PIXEL_UM, synthetic_pair
    from .core.forward import cast_like

    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    blurred, gt, _ = synthetic_pair()
    result = refocus(blurred, method="lbdvd", device=args.device)
    files = {}
    layers = (("ground_truth", gt), ("defocused", blurred), ("refocused", cast_like(result.image, gt.dtype)),
              ("level_map", result.defocus_map.levels.astype(np.uint8)))
    for name, arr in layers:
        path = outdir / f"sample_{name}.tif"
        meta = {"napari_refocus": "demo", "layer": name}
        if name == "refocused":
            meta.update(result.provenance())
        write_image(path, arr, pixel_um=PIXEL_UM if name != "level_map" else None, metadata=meta, overwrite=True)
        files[name] = str(path)
    report = compare(gt, result.image, blurred)
    level, certainty = result.defocus_map.focus_score_and_certainty()
    report.update({"method": "lbdvd (DelpNet defocus map + depth-variant RL)", "seconds": round(result.seconds, 3),
                   "focus_level": level, "focus_certainty": certainty, "files": files})
    _emit(report)


# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: "--level" must never silently mean "--level-step-um"
    p = argparse.ArgumentParser(prog=PROG, description="Refocus out-of-focus microscopy images.",
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(*a, **kw):
        return _add(*a, allow_abbrev=False, **kw)

    sub.add_parser = add_parser

    s = sub.add_parser("simulate", help="defocus an in-focus image (Born-Wolf PSF + Poisson noise)")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--level", type=int, required=True, help="defocus level 0..10 (2 um each)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--gain", type=float, default=1.0, help="photon counts per intensity unit (1)")
    s.add_argument("--no-noise", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    _add_optics(s)
    s.set_defaults(func=cmd_simulate)

    d = sub.add_parser("deconvolve", help="Richardson-Lucy with a level or a per-patch level map")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--level", type=int, help="one defocus level 0..10 for the whole image")
    d.add_argument("--level-map", help="TIFF of levels on the 84/42 patch grid (11 = background)")
    d.add_argument("--iterations", type=int, default=15)
    d.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    d.add_argument("--montage", default="triangular", choices=["triangular", "rectangular"])
    d.add_argument("--padding", default="reflect", choices=["reflect", "zeros"])
    d.add_argument("--float32", action="store_true", help="write float32 instead of the input dtype")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_optics(d)
    d.set_defaults(func=cmd_deconvolve)

    e = sub.add_parser("evaluate", help="PSNR / SSIM / PCC against a ground truth (JSON)")
    e.add_argument("--gt", required=True)
    e.add_argument("--pred", required=True)
    e.add_argument("--input", help="the degraded input, to report its metrics and the gains")
    e.add_argument("--data-range", type=float, default=None, help="default: gt.max() - gt.min()")
    e.set_defaults(func=cmd_evaluate)

    ms = sub.add_parser("methods", help="list restoration methods, their weights and device")
    ms.add_argument("--device", default="auto")
    ms.set_defaults(func=cmd_methods)

    dm = sub.add_parser("defocus-map", help="DelpNet defocus level per 84x84 patch")
    dm.add_argument("inputs", nargs="+", help="files, folders or globs")
    dm.add_argument("-o", "--outdir", required=True)
    dm.add_argument("--device", default="auto")
    dm.add_argument("--stride", type=int, default=42)
    dm.add_argument("--tta", action="store_true",
                    help="average DelpNet over the 8 flips/rotations of each patch (8x slower, more accurate)")
    dm.add_argument("--overwrite", action="store_true")
    dm.add_argument("-q", "--quiet", action="store_true")
    dm.set_defaults(func=cmd_defocus_map)

    rf = sub.add_parser("refocus", help="restore images with a registered method")
    rf.add_argument("inputs", nargs="+", help="files, folders or globs")
    rf.add_argument("-o", "--outdir", required=True)
    rf.add_argument("--method", default="lbdvd")
    rf.add_argument("--device", default="auto")
    rf.add_argument("--iterations", type=int)
    rf.add_argument("--level", type=int, help="for --method rl: the defocus level")
    rf.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average the method's network over 8 flips/rotations (8x slower)")
    rf.add_argument("--float32", action="store_true", help="write float32 instead of the input dtype")
    rf.add_argument("--chunked", action="store_true",
                    help="read lazily and write a tiled TIFF block by block (automatic above 64 Mpx)")
    rf.add_argument("--overwrite", action="store_true")
    rf.add_argument("-q", "--quiet", action="store_true")
    _add_optics(rf)
    rf.set_defaults(func=cmd_refocus)

    b = sub.add_parser("batch", help="refocus many images on a dask cluster (restartable)")
    b.add_argument("inputs", nargs="+", help="files, folders or globs")
    b.add_argument("-o", "--outdir", required=True)
    b.add_argument("--method", default="lbdvd")
    b.add_argument("--scheduler", help="address of a dask.distributed scheduler (default: a local cluster)")
    b.add_argument("--workers", type=int, default=1, help="local cluster worker processes (1)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--iterations", type=int)
    b.add_argument("--level", type=int, help="for --method rl: the defocus level")
    b.add_argument("--min-level", type=float, default=None,
                   help="triage: copy images whose focus level is below this instead of restoring them")
    b.add_argument("--patch-min-level", type=int, default=None,
                   help="triage: leave patches below this level untouched")
    b.add_argument("-q", "--quiet", action="store_true")
    _add_optics(b)
    b.set_defaults(func=cmd_batch)

    tg = sub.add_parser("triage", help="best-focus plane of a z-stack, per channel")
    tg.add_argument("input")
    tg.add_argument("--z-axis", type=int, default=0)
    tg.add_argument("--channel-axis", type=int, default=None)
    tg.add_argument("--device", default="auto")
    tg.add_argument("--no-delpnet", action="store_true", help="only the model-free sharpness measure")
    tg.set_defaults(func=cmd_triage)

    tr = sub.add_parser("train", help="train a model (delpnet) and write its weights")
    tr.add_argument("model", help="delpnet, or a learned method: comi-cyclegan, refocus-unet, m-deblurgan, h2t-msunet")
    tr.add_argument("--out", default="weights", help="output folder for <model>.safetensors")
    tr.add_argument("--epochs", type=int, default=None, help="delpnet: training epochs (80)")
    tr.add_argument("--device", default="auto")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--data-root", help="folder with the shared data sets (default ../shared/data)")
    tr.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    tr.add_argument("--minutes", type=float, help="generators: training time budget")
    tr.add_argument("--steps", type=int, help="generators: optimiser steps")
    tr.add_argument("--from-zstack", dest="from_zstack", help="generators: fine-tune on real pairs from this z-stack")
    tr.add_argument("--init", help="generators: start from these weights (.safetensors)")
    tr.add_argument("--lr", type=float, help="generators: peak learning rate (default: the method's)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="generators: override a training setting, e.g. --set adv_weight=0.005 (JSON values)")
    tr.add_argument("--threads", dest="num_threads", type=int,
                    help="torch CPU threads (default: all cores)")
    tr.set_defaults(func=cmd_train)

    m = sub.add_parser("demo", help="open napari with the sample pair (or --headless: run on it)")
    m.add_argument("--headless", action="store_true", help="no GUI: write results to --out, print metrics")
    m.add_argument("--out", default="refocus-demo", help="output folder for --headless")
    m.add_argument("--device", default="auto")
    m.add_argument("--screenshot", help="render the window to this PNG and exit")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except (CliError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
