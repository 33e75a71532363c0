"""What every command shares: one-line errors, JSON output, progress, the optics flags and
the method options generated from the methods' schemas, and the parent parsers."""

from __future__ import annotations

import argparse
import contextlib
import json

PROG = "napari-refocus"
OPTICS_FLAGS = ("wavelength_nm", "na", "refractive_index", "level_step_um", "psf_model", "map_pixel_um")


class CliError(Exception):
    """An error to report in one line."""


def _emit(obj) -> None:
    """One JSON line on stdout (numpy scalars as numbers, paths as strings)."""
    print(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)), flush=True)


@contextlib.contextmanager
def _progress(desc: str, args):
    """A progress callback driving a bar on stderr (none with ``-q``), closed on the way out."""
    from ..core.progress import progress_bar

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


# ------------------------------------------------------------------- every option checked once
#: options that name a file or folder that must exist
PATH_OPTIONS = ("input", "gt", "pred", "level_map", "optics", "init", "from_zstack")


def check_args(args) -> None:
    """Every option of a command checked before it runs, by the rules of
    :mod:`napari_refocus.core.validation` (the API's and the widgets' too): positive sizes and
    ranges (``--pixel-um 0`` is a one-line error, exit status 2), paths that must exist, and a
    custom ``--weights`` / ``--init`` file (complete safetensors of the method's architecture;
    never unpickled)."""
    from ..core.validation import check_options, existing_path

    values = vars(args)
    check_options({k: v for k, v in values.items() if k not in PATH_OPTIONS})
    for name in PATH_OPTIONS:
        if values.get(name) is not None:
            existing_path(values[name], what=_flag(name) if name != "input" else "input")
    like = values.get("method") or values.get("model")
    for name in ("weights", "init"):
        if values.get(name) is not None and like:
            from ..api import check_weights_file
            from ..methods.registry import get_method

            m = get_method(like) if like != "delpnet" else None
            if m is None or m.weights:
                check_weights_file(values[name], like=m.weights[0] if m else "delpnet")


def checked(func):
    """``func(args)`` after :func:`check_args`."""
    def run(args):
        check_args(args)
        return func(args)

    run.__name__ = run.__qualname__ = getattr(func, "__name__", "command")
    run.__doc__ = func.__doc__
    return run


# ------------------------------------------------------------------- options from the schemas
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def method_options() -> dict[str, dict]:
    """Every method parameter a flag sets (the union over the registered methods' schemas;
    optics have their own flags): name -> its description and the methods that take it."""
    from ..methods.registry import list_methods

    out: dict[str, dict] = {}
    for m in list_methods():
        for d in m.describe():
            if d["name"] != "optics":
                entry = out.setdefault(d["name"], {**d, "methods": [], "helps": {}})
                entry["methods"].append(m.name)
                entry["helps"].setdefault(d["help"], []).append(m.name)
                if entry["default"] != d["default"]:  # the methods differ (m-deblurgan's tile): each help says
                    entry["default"] = None
    return out


def _add_method_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method parameters (each method takes its own; see `napari-refocus methods`)")
    for name, d in method_options().items():
        helps = d["helps"]
        text = "; ".join(f"{', '.join(who)}: {h}" for h, who in helps.items()) if len(helps) > 1 else \
            f"{d['help']} ({', '.join(d['methods'])})"
        if d["type"] is bool:  # a switch that is on by default (never_worse) gets a --no- form too
            action = argparse.BooleanOptionalAction if d["default"] is True else "store_true"
            g.add_argument(_flag(name), dest=name, action=action, default=None, help=text)
            continue
        limits = [f"{k} {d[k]}" for k in ("default", "min", "max") if d[k] is not None]
        g.add_argument(_flag(name), dest=name, type=d["type"] if d["type"] in (int, float) else str,
                       choices=d["choices"], default=None, metavar=None if d["choices"] else name.upper(),
                       help=text + (f" ({', '.join(limits)})" if limits else ""))


def _method_params(args) -> dict:
    """The method parameters the options set; an option the method does not take is an error
    that names the method's options."""
    from ..methods.registry import get_method

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
                   help="exact: any immersion (default); paraxial: LB-DVD eq. 2 as printed, right in air")
    g.add_argument("--map-pixel-um", dest="map_pixel_um", type=_number_or_auto,
                   help="pixel size, um, at which the defocus map reads the image (default: matched to DelpNet's "
                        "training sampling in lambda/NA; 0.65: cultured cells at 40x-100x, at the physical size "
                        "of DelpNet's training images; auto: each image read both ways, the reading DelpNet is "
                        "surer of kept)")


def _many_images(p):
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("-o", "--outdir", required=True,
                   help="output folder (the inputs' folders mirrored below it); refocus with one input: also a "
                        "file NAME.tif or a store NAME.ome.zarr")
    p.add_argument("--method", default="lbdvd", help="a registered method (`napari-refocus methods`)")
    p.add_argument("--axes", help="the files' axes, e.g. ZYX, TCZYX, YXS (RGB); default: from the OME/ImageJ "
                                  "metadata. Every 2-D (Y, X) plane is restored; RGB channel by channel")
    _add_method_options(p)


def _number_or_auto(text: str):
    """``--map-pixel-um``'s value: a number, or the word auto (:func:`~napari_refocus.core.validation.number_or_word`)."""
    import argparse

    from ..core.validation import number_or_word

    value = number_or_word("map_pixel_um", text)
    if isinstance(value, str) and value != "auto":
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}")
    return value
