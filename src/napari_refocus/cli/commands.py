"""The commands: each parses nothing, calls the API or :mod:`napari_refocus.io.pipeline` and
prints JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import PROG, CliError, _emit, _progress, _optics, _flag, method_options, _method_params


def cmd_simulate(args) -> None:
    from ..io.pipeline import simulate_file

    _emit(simulate_file(args.input, args.output, level=args.level, noise=None if args.no_noise else "poisson",
                        gain=args.gain, seed=args.seed, overwrite=args.overwrite, **_optics(args)))


def cmd_deconvolve(args) -> None:
    from ..io.pipeline import deconvolve_file

    if (args.level is None) == (args.level_map is None):
        raise CliError("give exactly one of --level L or --level-map MAP.tif")
    with _progress("deconvolve", args) as update:
        _emit(deconvolve_file(args.input, args.output, level=args.level, level_map=args.level_map,
                              iterations=args.iterations, device=args.device, montage_weights=args.montage,
                              padding=args.padding, float32=args.float32, **_optics(args),
                              overwrite=args.overwrite, progress=update))


def cmd_evaluate(args) -> None:
    from ..core.metrics import compare
    from ..io import read_image

    inp = read_image(args.input)[0] if args.input else None
    _emit(compare(read_image(args.gt)[0], read_image(args.pred)[0], inp, data_range=args.data_range,
                  register=args.register))


def cmd_methods(args) -> None:
    from ..core.devices import resolve_device
    from ..methods.registry import list_methods

    device = str(resolve_device(args.device))
    for m in list_methods():
        _emit({"method": m.name, "title": m.title, "weights": list(m.weights), "weights_present": m.weights_present(),
               "device": device, "upscale": m.upscale, "options": [_flag(n) for n in m.parameter_names
                                                                    if n in method_options()]})


def cmd_defocus_map(args) -> None:
    from ..io.batch import expand_inputs
    from ..io.pipeline import defocus_map_file

    for path in expand_inputs(args.inputs):
        with _progress(f"defocus map {path.name}", args) as update:
            _emit(defocus_map_file(path, args.outdir, device=args.device, stride=args.stride, tta=args.tta,
                                   overwrite=args.overwrite, progress=update, fmt=args.fmt or "tiff",
                                   **_optics(args)))


def _names_a_tiff(outdir) -> bool:
    """Whether ``-o`` names a TIFF file (``.tif``/``.tiff``) rather than a folder: an existing
    folder of that name stays a folder."""
    from ..io.read import TIFF_SUFFIXES

    return Path(outdir).suffix.lower() in TIFF_SUFFIXES and not Path(outdir).is_dir()


def _refocus_outputs(args, paths) -> list[Path]:
    """``-o DIR``: ``DIR/<stem>_refocused.tif`` (or ``.ome.zarr``); with one input ``-o NAME.zarr``
    is that store and ``-o NAME.tif`` that file (as ``simulate`` and ``deconvolve`` take ``-o``;
    an existing folder of that name stays a folder)."""
    from ..io.batch import output_map
    from ..io.zarr import is_zarr_path

    if is_zarr_path(args.outdir):
        if len(paths) != 1 or args.fmt == "tiff":
            raise CliError(f"-o {args.outdir} names one OME-Zarr output: give one input (and no --format tiff)")
        return [Path(args.outdir)]
    if _names_a_tiff(args.outdir):
        if len(paths) != 1 or args.fmt == "ome-zarr":
            raise CliError(f"-o {args.outdir} names one TIFF output: give one input (and no --format ome-zarr), "
                           "or a folder")
        return [Path(args.outdir)]
    # the inputs' folders mirrored below -o (a/x.tif, b/x.tif never share an output: io.batch.output_map)
    targets = output_map(paths, args.outdir, args.fmt or "tiff")
    return [targets[p][0] for p in paths]


def cmd_refocus(args) -> None:
    from ..io.batch import expand_inputs
    from ..io.pipeline import refocus_file

    params = _method_params(args)
    paths = expand_inputs(args.inputs)
    for path, out in zip(paths, _refocus_outputs(args, paths)):
        with _progress(f"{args.method} {path.name}", args) as update:
            rec = refocus_file(path, out, method=args.method, device=args.device,
                               params=params, axes=args.axes, float32=args.float32, **_optics(args),
                               chunked=True if args.chunked else None, overwrite=args.overwrite, progress=update)
        # the keys this command has always printed
        rec["seconds"] = rec["seconds_total"] if rec["chunked"] else {"read_and_run": round(
            rec["seconds_read"] + rec["seconds_map"] + rec["seconds_restore"], 3), "write": rec["seconds_write"]}
        _emit(rec)


def cmd_batch(args) -> None:
    from ..io.batch import run_batch

    if _names_a_tiff(args.outdir):
        raise CliError(f"-o {args.outdir} looks like a file name: batch writes its outputs and record into a folder")
    report = run_batch(args.inputs, args.outdir, method=args.method, scheduler=args.scheduler,
                       workers=args.workers, device=args.device, min_level=args.min_level,
                       patch_min_level=args.patch_min_level, params=_method_params(args), axes=args.axes,
                       progress=not args.quiet, fmt=args.fmt or "tiff", **_optics(args))
    _emit({k: v for k, v in report.items() if k != "records"})
    if report["failed"]:  # one line on stderr, exit status 2 (main)
        first = next(r for r in report["records"] if r["status"] == "failed")
        raise CliError(f"{report['summary']} (first failure: {first['input']}: {first['action']})")
    print(f"{PROG}: {report['summary']}", file=sys.stderr)


def cmd_triage(args) -> None:
    from ..io import read_image
    from ..methods.triage import best_focus_plane

    stack, info = read_image(args.input)
    z_axis, channel_axis = _stack_axes(args, info.get("axes") or "")
    for rec in best_focus_plane(stack, z_axis=z_axis, channel_axis=channel_axis, device=args.device,
                                use_delpnet=not args.no_delpnet):
        _emit({"input": args.input, **rec})


def _stack_axes(args, axes: str) -> tuple:
    """triage's (z axis, channel axis): the options when given, else the file's axes letters
    (an RGB image or a file with no Z is a one-line error instead of a nonsense 'stack')."""
    if "S" in axes:
        raise ValueError(f"{args.input} is an RGB image (axes {axes}), not a z-stack")
    z_axis = args.z_axis
    if z_axis is None:
        if "Z" not in axes and len(axes) > 3:
            raise ValueError(f"{args.input} has axes {axes} and no Z axis; give --z-axis")
        z_axis = axes.index("Z") if "Z" in axes else 0
    channel = args.channel_axis
    if channel is None and "C" in axes:
        channel = axes.index("C")
    return z_axis, channel


GENERATOR_ONLY = ("minutes", "steps", "from_zstack", "init", "lr", "optics", "set")


def _measured_objectives(init) -> tuple:
    """``training.delpnet_data.TRAIN_OBJECTIVES`` with the exact PSF, each objective's classes at
    the defocus where DelpNet (``init``; None: the shipped weights) reads them
    (``methods.class_table``): the labels of every objective's patches are the network's own."""
    from ..core.optics import Optics
    from ..methods.class_table import response_table
    from ..training.delpnet_data import TRAIN_OBJECTIVES

    out = []
    for overrides, share in TRAIN_OBJECTIVES:
        if overrides:
            overrides = dict(overrides, psf_model="exact")
            overrides["defocus_table_um"] = list(response_table(Optics(**overrides), weights=init))
        out.append((overrides, share))
    return tuple(out)


def cmd_train(args) -> None:
    kwargs = {"device": args.device, "seed": args.seed, "resume": not args.no_resume}
    if args.num_threads is not None:
        kwargs["num_threads"] = args.num_threads
    if args.model == "delpnet":
        from ..training.train_delpnet import train_delpnet

        given = [_flag(n) for n in GENERATOR_ONLY if getattr(args, n) is not None and n not in ("init", "lr")]
        if given:
            raise CliError(f"train delpnet: {', '.join(given)} only apply to the learned generators "
                           "(delpnet takes --epochs, --width, --data-workers, --precision, --init, --lr, "
                           "--object-scales, --objectives and --consistency)")
        kwargs.update({k: v for k, v in (("epochs", args.epochs), ("data_root", args.data_root),
                                         ("psf_model", args.psf_model), ("init", args.init), ("lr", args.lr),
                                         ("consistency", args.consistency)) if v})
        kwargs.update({k: v for k, v in (("width", args.width), ("data_workers", args.data_workers),
                                         ("precision", args.precision)) if v is not None})
        if args.object_scales:
            from ..training.delpnet_data import OBJECT_SCALES

            kwargs["object_scales"] = OBJECT_SCALES
        if args.objectives:
            kwargs["objectives"] = _measured_objectives(args.init)
        result = train_delpnet(args.out, **kwargs)
    else:
        from ..methods.registry import get_method

        get_method(args.model)  # a clear error for an unknown name
        if args.object_scales or args.objectives or args.consistency is not None:
            raise CliError(f"train {args.model}: --object-scales, --objectives and --consistency are for delpnet")
        if args.width is not None or args.data_workers is not None or args.precision is not None:
            raise CliError(f"train {args.model}: --width, --data-workers and --precision are for delpnet")
        if args.epochs is not None:
            raise CliError(f"train {args.model}: --epochs is for delpnet; a generator takes --minutes or --steps")
        if args.psf_model is not None:
            raise CliError(f"train {args.model}: --psf-model is for delpnet (a generator's data are fixed by its card)")
        try:
            from ..training.train_generators import train_generator
        except ImportError as exc:
            raise CliError(f"no training recipe for {args.model!r}: {exc}") from None
        kwargs.update({n: getattr(args, n) for n in GENERATOR_ONLY[:-2] if getattr(args, n) is not None})
        if args.optics is not None:
            kwargs["optics"] = _calibration(args)
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


def _calibration(args) -> dict:
    """The optics of ``--optics`` for fine-tuning: the Optics fields, and the calibration's
    ``z_step_um`` and ``focal_plane_index`` (required: the PSF of each plane needs the step)."""
    from ..io.optics import load_optics_file

    if args.from_zstack is None:
        raise CliError("train: --optics applies to fine-tuning from a z-stack (--from-zstack)")
    values = load_optics_file(args.optics)
    record = json.loads(Path(args.optics).read_text())
    if not isinstance(record.get("z_step_um"), (int, float)):
        raise CliError(f"{args.optics}: not a calibration (no z_step_um); write one with napari-refocus calibrate")
    return {**values, "z_step_um": record["z_step_um"], "focal_plane_index": record.get("focal_plane_index")}


def cmd_demo(args) -> None:
    if args.headless:
        from ..io.demo import demo_headless

        return _emit(demo_headless(args.out, device=args.device))
    from ..ui.demo import run_demo

    run_demo(screenshot=args.screenshot)
