"""The ``napari-refocus`` command line: parse, call the API or :mod:`napari_refocus.io.pipeline`,
report (JSON lines on stdout).

Errors are one line on stderr (``napari-refocus: error: ...``, exit status 2; 1 for an
unexpected internal error) unless ``--debug`` asks for the traceback, and no command ever
writes over one of its input files. The options of ``refocus`` and ``batch`` that set a
method's parameters are generated from the methods' schemas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

PROG = "napari-refocus"
OPTICS_FLAGS = ("wavelength_nm", "na", "refractive_index", "level_step_um", "psf_model")


class CliError(Exception):
    """An error to report in one line."""


def _emit(obj) -> None:
    """One JSON line on stdout (numpy scalars as numbers, paths as strings)."""
    print(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)), flush=True)


@contextlib.contextmanager
def _progress(desc: str, args):
    """A progress callback driving a bar on stderr (none with ``-q``), closed on the way out."""
    from .core.progress import progress_bar

    update, close = progress_bar(desc, enabled=not getattr(args, "quiet", False), mininterval=0.2)
    try:
        yield update
    finally:
        close()


def _optics(args) -> dict:
    """The optics flags given (``optics=``) and the ``--optics`` file (``optics_file=``): they
    override the optics file, which overrides the file's metadata (io.optics)."""
    flags = {name: getattr(args, name) for name in (*OPTICS_FLAGS, "pixel_um") if getattr(args, name, None) is not None}
    return {"optics": flags, "optics_file": args.optics}


# ------------------------------------------------------------------- options from the schemas
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def method_options() -> dict[str, dict]:
    """Every method parameter a flag sets (the union over the registered methods' schemas;
    optics have their own flags): name -> its description and the methods that take it."""
    from .methods.registry import list_methods

    out: dict[str, dict] = {}
    for m in list_methods():
        for d in m.describe():
            if d["name"] != "optics":
                entry = out.setdefault(d["name"], {**d, "methods": [], "helps": {}})
                entry["methods"].append(m.name)
                entry["helps"].setdefault(d["help"], []).append(m.name)
    return out


def _add_method_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method parameters (each method takes its own; see `napari-refocus methods`)")
    for name, d in method_options().items():
        helps = d["helps"]
        text = "; ".join(f"{', '.join(who)}: {h}" for h, who in helps.items()) if len(helps) > 1 else \
            f"{d['help']} ({', '.join(d['methods'])})"
        if d["type"] is bool:
            g.add_argument(_flag(name), dest=name, action="store_true", default=None, help=text)
            continue
        limits = [f"{k} {d[k]}" for k in ("default", "min", "max") if d[k] is not None]
        g.add_argument(_flag(name), dest=name, type=d["type"] if d["type"] in (int, float) else str,
                       choices=d["choices"], default=None, metavar=None if d["choices"] else name.upper(),
                       help=text + (f" ({', '.join(limits)})" if limits else ""))


def _method_params(args) -> dict:
    """The method parameters the options set; an option the method does not take is an error
    that names the method's options."""
    from .methods.registry import get_method

    m = get_method(args.method)
    given = {n: getattr(args, n) for n in method_options() if getattr(args, n, None) is not None}
    bad = [n for n in (*given, *OPTICS_FLAGS) if getattr(args, n, None) is not None and not m.accepts(n)]
    if bad:
        valid = [_flag(n) for n in m.parameter_names if n in method_options()]
        if m.accepts("optics"):
            valid.append("the optics options")
        raise CliError(f"method {m.name!r} does not take {', '.join(map(_flag, bad))}; "
                       f"its options: {', '.join(valid) or 'none'}")
    return given


# -------------------------------------------------------------------------------- commands
def cmd_simulate(args) -> None:
    from .io.pipeline import simulate_file

    _emit(simulate_file(args.input, args.output, level=args.level, noise=None if args.no_noise else "poisson",
                        gain=args.gain, seed=args.seed, overwrite=args.overwrite, **_optics(args)))


def cmd_deconvolve(args) -> None:
    from .io.pipeline import deconvolve_file

    if (args.level is None) == (args.level_map is None):
        raise CliError("give exactly one of --level L or --level-map MAP.tif")
    with _progress("deconvolve", args) as update:
        _emit(deconvolve_file(args.input, args.output, level=args.level, level_map=args.level_map,
                              iterations=args.iterations, device=args.device, montage_weights=args.montage,
                              padding=args.padding, float32=args.float32, **_optics(args),
                              overwrite=args.overwrite, progress=update))


def cmd_evaluate(args) -> None:
    from .core.metrics import compare
    from .io import read_image

    inp = read_image(args.input)[0] if args.input else None
    _emit(compare(read_image(args.gt)[0], read_image(args.pred)[0], inp, data_range=args.data_range))


def cmd_methods(args) -> None:
    from .core.devices import resolve_device
    from .methods.registry import list_methods

    device = str(resolve_device(args.device))
    for m in list_methods():
        _emit({"method": m.name, "title": m.title, "weights": list(m.weights), "weights_present": m.weights_present(),
               "device": device, "upscale": m.upscale, "options": [_flag(n) for n in m.parameter_names
                                                                    if n in method_options()]})


def cmd_defocus_map(args) -> None:
    from .io.batch import expand_inputs
    from .io.pipeline import defocus_map_file

    for path in expand_inputs(args.inputs):
        with _progress(f"defocus map {path.name}", args) as update:
            _emit(defocus_map_file(path, args.outdir, device=args.device, stride=args.stride, tta=args.tta,
                                   overwrite=args.overwrite, progress=update, **_optics(args)))


def cmd_refocus(args) -> None:
    from .io.batch import expand_inputs
    from .io.pipeline import refocus_file

    params = _method_params(args)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in expand_inputs(args.inputs):
        with _progress(f"{args.method} {path.name}", args) as update:
            rec = refocus_file(path, outdir / f"{path.stem}_refocused.tif", method=args.method, device=args.device,
                               params=params, axes=args.axes, float32=args.float32, **_optics(args),
                               chunked=True if args.chunked else None, overwrite=args.overwrite, progress=update)
        # the keys this command has always printed
        rec["seconds"] = rec["seconds_total"] if rec["chunked"] else {"read_and_run": round(
            rec["seconds_read"] + rec["seconds_map"] + rec["seconds_restore"], 3), "write": rec["seconds_write"]}
        _emit(rec)


def cmd_batch(args) -> None:
    from .io.batch import run_batch

    report = run_batch(args.inputs, args.outdir, method=args.method, scheduler=args.scheduler,
                       workers=args.workers, device=args.device, min_level=args.min_level,
                       patch_min_level=args.patch_min_level, params=_method_params(args), axes=args.axes,
                       progress=not args.quiet, **_optics(args))
    _emit({k: v for k, v in report.items() if k != "records"})


def cmd_triage(args) -> None:
    from .io import read_image
    from .methods.triage import best_focus_plane

    stack, _ = read_image(args.input)
    for rec in best_focus_plane(stack, z_axis=args.z_axis, channel_axis=args.channel_axis, device=args.device,
                                use_delpnet=not args.no_delpnet):
        _emit({"input": args.input, **rec})


GENERATOR_ONLY = ("minutes", "steps", "from_zstack", "init", "lr", "set")


def cmd_train(args) -> None:
    kwargs = {"device": args.device, "seed": args.seed, "resume": not args.no_resume}
    if args.num_threads is not None:
        kwargs["num_threads"] = args.num_threads
    if args.model == "delpnet":
        from .training.train_delpnet import train_delpnet

        given = [_flag(n) for n in GENERATOR_ONLY if getattr(args, n) is not None]
        if given:
            raise CliError(f"train delpnet: {', '.join(given)} only apply to the learned generators "
                           "(delpnet takes --epochs)")
        kwargs.update({k: v for k, v in (("epochs", args.epochs), ("data_root", args.data_root)) if v})
        result = train_delpnet(args.out, **kwargs)
    else:
        from .methods.registry import get_method

        get_method(args.model)  # a clear error for an unknown name
        if args.epochs is not None:
            raise CliError(f"train {args.model}: --epochs is for delpnet; a generator takes --minutes or --steps")
        try:
            from .training.train_generators import train_generator
        except ImportError as exc:
            raise CliError(f"no training recipe for {args.model!r}: {exc}") from None
        kwargs.update({n: getattr(args, n) for n in GENERATOR_ONLY[:-1] if getattr(args, n) is not None})
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


def cmd_demo(args) -> None:
    if args.headless:
        from .io.pipeline import demo_headless

        return _emit(demo_headless(args.out, device=args.device))
    from .ui.demo import run_demo

    run_demo(screenshot=args.screenshot)


# -------------------------------------------------------------------------------- parser
def _parent(build) -> argparse.ArgumentParser:
    """A parent parser (shared options) filled in by ``build(parser)``."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    build(p)
    return p


def _common(p):
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")


def _optics_options(p):
    g = p.add_argument_group("optics (each: this flag, else --optics FILE, else the image file's metadata, else "
                             "the LB-DVD paper's default; the JSON output says which)")
    g.add_argument("--optics", metavar="FILE.json", help="optics saved for a microscope: a JSON object of "
                   "Optics fields (na, refractive_index, wavelength_nm, pixel_um, ...), or {\"optics\": {...}}")
    g.add_argument("--wavelength-nm", dest="wavelength_nm", type=float, help="emission wavelength, nm (451)")
    g.add_argument("--na", type=float, help="numerical aperture (0.5)")
    g.add_argument("--refractive-index", dest="refractive_index", type=float, help="immersion index (1.0)")
    g.add_argument("--pixel-um", dest="pixel_um", type=float, help="pixel size in the sample, um (0.65)")
    g.add_argument("--level-step-um", dest="level_step_um", type=float, help="defocus per level, um (2)")
    g.add_argument("--psf-model", dest="psf_model", choices=("paraxial", "exact"),
                   help="paraxial: LB-DVD eq. 2 as printed, right in air (default); exact: any immersion")


def _many_images(p):
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("-o", "--outdir", required=True)
    p.add_argument("--method", default="lbdvd", help="a registered method (`napari-refocus methods`)")
    p.add_argument("--axes", help="the files' axes, e.g. ZYX, TCZYX, YXS (RGB); default: from the OME/ImageJ "
                                  "metadata. Every 2-D (Y, X) plane is restored; RGB channel by channel")
    _add_method_options(p)


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations anywhere: "--level" must never silently mean "--level-step-um"
    p = argparse.ArgumentParser(prog=PROG, description="Refocus out-of-focus microscopy images.",
                                allow_abbrev=False)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = _parent(_common)
    device = _parent(lambda q: q.add_argument("--device", default="auto", help="auto | cpu | cuda | mps"))
    quiet = _parent(lambda q: q.add_argument("-q", "--quiet", action="store_true", help="no progress bar"))
    overwrite = _parent(lambda q: q.add_argument("--overwrite", action="store_true",
                                                 help="replace existing outputs (never an input)"))
    float32 = _parent(lambda q: q.add_argument("--float32", action="store_true",
                                               help="write float32 instead of the input dtype"))
    optics, images = _parent(_optics_options), _parent(_many_images)

    def command(name, func, help, *parents):
        c = sub.add_parser(name, help=help, allow_abbrev=False, parents=[common, *parents])
        c.set_defaults(func=func)
        return c

    s = command("simulate", cmd_simulate, "defocus an in-focus image (Born-Wolf PSF + Poisson noise)",
                overwrite, optics)
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--level", type=int, required=True, help="defocus level 0..10 (2 um each)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--gain", type=float, default=1.0, help="photon counts per intensity unit (1)")
    s.add_argument("--no-noise", action="store_true")

    d = command("deconvolve", cmd_deconvolve, "Richardson-Lucy with a level or a per-patch level map",
                device, float32, overwrite, quiet, optics)
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--level", type=int, help="one defocus level 0..10 for the whole image")
    d.add_argument("--level-map", help="TIFF of levels on the 84/42 patch grid (11 = background)")
    d.add_argument("--iterations", type=int, default=15)
    d.add_argument("--montage", default="triangular", choices=["triangular", "rectangular"])
    d.add_argument("--padding", default="reflect", choices=["reflect", "zeros"])

    e = command("evaluate", cmd_evaluate, "PSNR / SSIM / PCC against a ground truth (JSON)")
    e.add_argument("--gt", required=True)
    e.add_argument("--pred", required=True)
    e.add_argument("--input", help="the degraded input, to report its metrics and the gains")
    e.add_argument("--data-range", type=float, default=None, help="default: gt.max() - gt.min()")

    command("methods", cmd_methods, "list restoration methods, their weights, options and device", device)

    dm = command("defocus-map", cmd_defocus_map, "DelpNet defocus class and defocus (um) per patch", device,
                 overwrite, quiet, optics)
    dm.add_argument("inputs", nargs="+", help="files, folders or globs")
    dm.add_argument("-o", "--outdir", required=True)
    dm.add_argument("--stride", type=int, default=42)
    dm.add_argument("--tta", action="store_true",
                    help="average DelpNet over the 8 flips/rotations of each patch (8x slower, more accurate)")

    rf = command("refocus", cmd_refocus, "restore images (stacks plane by plane, RGB per channel) with a method",
                 images, device, float32, overwrite, quiet, optics)
    rf.add_argument("--chunked", action="store_true",
                    help="read lazily and write a tiled TIFF block by block (automatic above 64 Mpx per plane)")

    b = command("batch", cmd_batch, "refocus many images on a dask cluster (restartable)",
                images, device, quiet, optics)
    b.set_defaults(device="cpu")
    b.add_argument("--scheduler", help="address of a dask.distributed scheduler (default: a local cluster)")
    b.add_argument("--workers", type=int, default=1, help="local cluster worker processes (1)")
    b.add_argument("--min-level", type=float, default=None,
                   help="triage: copy images whose focus level is below this instead of restoring them")
    b.add_argument("--patch-min-level", type=int, default=None,
                   help="triage: leave patches below this level untouched")

    tg = command("triage", cmd_triage, "best-focus plane of a z-stack, per channel", device)
    tg.add_argument("input")
    tg.add_argument("--z-axis", type=int, default=0)
    tg.add_argument("--channel-axis", type=int, default=None)
    tg.add_argument("--no-delpnet", action="store_true", help="only the model-free sharpness measure")

    tr = command("train", cmd_train, "train a model (delpnet or a generator) and write its weights", device)
    tr.add_argument("model", help="delpnet, or a learned method: comi-cyclegan, refocus-unet, m-deblurgan, h2t-msunet")
    tr.add_argument("--out", default="weights", help="output folder for <model>.safetensors")
    tr.add_argument("--epochs", type=int, default=None, help="delpnet: training epochs (80)")
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
    tr.add_argument("--threads", dest="num_threads", type=int, help="torch CPU threads (default: all cores)")

    m = command("demo", cmd_demo, "open napari with the sample pair (or --headless: run on it)", device)
    m.add_argument("--headless", action="store_true", help="no GUI: write results to --out, print metrics")
    m.add_argument("--out", default="refocus-demo", help="output folder for --headless")
    m.add_argument("--screenshot", help="render the window to this PNG and exit")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        expected = isinstance(exc, (CliError, ValueError, OSError))
        message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2 if expected else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
