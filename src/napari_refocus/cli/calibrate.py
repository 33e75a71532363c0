"""``napari-refocus calibrate STACK.tif --z-step-um S [--bead] -o optics.json``: fit the
effective optics of a microscope to a z-stack (:mod:`napari_refocus.io.calibration`)."""

from __future__ import annotations

import shlex
import sys

from .common import PROG, _emit, _progress


def add_calibrate(command) -> None:
    """Register the command with the parser's ``command(name, func, help)`` helper."""
    c = command("calibrate", cmd_calibrate, "fit NA, defocus scale and focal plane to a bead or thin-sample "
                "z-stack; write optics.json for --optics")
    c.add_argument("input", help="a (z, y, x) TIFF stack")
    c.add_argument("-o", "--output", required=True, help="the JSON file to write")
    c.add_argument("--z-step-um", dest="z_step_um", type=float, required=True, help="distance between planes, um")
    c.add_argument("--pixel-um", dest="pixel_um", type=float, help="pixel size in the sample, um (default: the "
                   "file's metadata)")
    c.add_argument("--wavelength-nm", dest="wavelength_nm", type=float, help="emission wavelength, nm "
                   "(default: the file's metadata, else 451)")
    c.add_argument("--refractive-index", dest="refractive_index", type=float, help="immersion index "
                   "(default: the file's metadata, else 1.0)")
    c.add_argument("--psf-model", dest="psf_model", default="exact", choices=("exact", "paraxial"),
                   help="exact (any immersion, default) or paraxial (LB-DVD eq. 2)")
    c.add_argument("--bead", action="store_true", help="the stack is a sub-resolution bead scanned through "
                   "focus (default: a thin sample, e.g. cells on a coverslip)")
    c.add_argument("--max-iter", dest="max_iter", type=int, default=300, help="Nelder-Mead iterations (300)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_calibrate(args) -> None:
    from ..core.progress import drain
    from ..io.calibration import iter_calibrate_file

    command = " ".join([PROG, *map(shlex.quote, sys.argv[1:])]) if sys.argv[1:2] == ["calibrate"] else None
    with _progress(f"calibrate {args.input}", args) as update:
        rec = drain(iter_calibrate_file(args.input, args.output, bead=args.bead, z_step_um=args.z_step_um,
                                        pixel_um=args.pixel_um, wavelength_nm=args.wavelength_nm,
                                        refractive_index=args.refractive_index, psf_model=args.psf_model,
                                        command=command or _rebuild(args), max_iter=args.max_iter), update)
    _emit({k: v for k, v in rec.items() if k not in ("curves", "details")})


def _rebuild(args) -> str:
    """The command line of ``args`` (when called through ``main([...])``, not from a shell)."""
    parts = [PROG, "calibrate", shlex.quote(str(args.input)), "--z-step-um", f"{args.z_step_um:g}"]
    for flag, name in (("--pixel-um", "pixel_um"), ("--wavelength-nm", "wavelength_nm"),
                       ("--refractive-index", "refractive_index")):
        if getattr(args, name) is not None:
            parts += [flag, f"{getattr(args, name):g}"]
    parts += ["--psf-model", args.psf_model] + (["--bead"] if args.bead else []) + ["-o", shlex.quote(str(args.output))]
    return " ".join(parts)
