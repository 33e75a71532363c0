"""The optics an image is processed with, and where each value came from.

Values come from several places, in this order of precedence (the first that sets a field
wins, field by field):

1. what the user gave explicitly (command-line flags; the widget's form),
2. an optics file (``--optics FILE.json``; the widget's "Load optics..."): settings saved once
   per microscope, read by :func:`load_optics_file`,
3. the image file's metadata (:func:`napari_refocus.io.read.ome_optics`: OME objective NA,
   immersion, emission wavelength; pixel size from OME, ImageJ or TIFF tags) or, in napari,
   the layer's metadata and scale,
4. the defaults of :class:`~napari_refocus.core.optics.Optics` (the LB-DVD paper's objective).

:func:`resolve_optics` merges them and returns the values with a source name per field
(``"flag"``, ``"optics-file"``, ``"file"``, ``"default"`` on the command line), which every
command prints in its JSON and the widgets show.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from pathlib import Path

from ..core.optics import PSF_MODELS, Optics
from ..core.validation import WORDS

#: every field of :class:`Optics` (the keys an optics file may hold)
OPTICS_FIELDS = tuple(f.name for f in dataclasses.fields(Optics))
#: the fields every report shows (the others only when something sets them)
SHOWN = ("wavelength_nm", "na", "refractive_index", "pixel_um", "level_step_um", "psf_model")
_DEFAULTS = Optics().as_dict()


def check_optics_values(values: Mapping, *, where: str = "optics") -> dict:
    """``values`` with every key an :class:`Optics` field of the right type (a list for
    ``defocus_table_um`` becomes a tuple); a ValueError in one line otherwise. Ranges and the
    NA < refractive index rule are checked when the optics are built (:func:`resolve_optics`)."""
    unknown = sorted(str(k) for k in values if k not in OPTICS_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join(OPTICS_FIELDS)}")
    out = {}
    for name, value in values.items():
        default = _DEFAULTS[name]
        if name == "defocus_table_um":
            ok = value is None or (isinstance(value, (list, tuple)) and all(_is_number(v) for v in value))
            value = tuple(value) if ok and value is not None else value
        elif name == "psf_model":
            ok = value in PSF_MODELS
        elif default is None:  # an optional number (map_pixel_um): None leaves it to the others
            ok = value is None or _is_number(value) or value in WORDS.get(name, ())
        elif isinstance(default, int):
            ok = _is_number(value) and float(value).is_integer()
            value = int(value) if ok else value
        else:
            ok = _is_number(value)
        if not ok:
            want = f"one of {', '.join(PSF_MODELS)}" if name == "psf_model" else (
                "a list of numbers" if name == "defocus_table_um" else "a number")
            raise ValueError(f"{where}: {name} must be {want}, got {value!r}")
        out[name] = value
    return out


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def load_optics_file(path) -> dict:
    """The optics saved in a JSON file: ``{"na": 1.4, "refractive_index": 1.515, ...}``, or a
    calibration file holding them under ``"optics"`` (its other keys are ignored).

    Keys are :class:`~napari_refocus.core.optics.Optics` fields; an unknown key or a value of
    the wrong type is a ValueError that names the valid keys. Returns ``{field: value}``
    (``path`` may also be such a dict, already loaded: it is checked again).
    """
    if isinstance(path, Mapping):
        return check_optics_values(path, where="optics file")
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the optics file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"the optics file {path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("optics"), dict):
        data = data["optics"]
    if not isinstance(data, dict):
        raise ValueError(f"the optics file {path} must hold a JSON object of optics fields "
                         f"({', '.join(OPTICS_FIELDS)})")
    return check_optics_values(data, where=f"optics file {path.name}")


def merge_optics(*layers) -> tuple[dict, dict]:
    """Merge ``(source, {field: value})`` pairs, the first having precedence; a value of None
    is not a value. Returns ``(values, sources)`` of the fields some layer sets."""
    values, sources = {}, {}
    for source, given in layers:
        for name, value in (given or {}).items():
            if value is not None and name not in values:
                values[name], sources[name] = value, source
    return values, sources


def resolve_optics(*layers, default: str = "default") -> tuple[dict, dict]:
    """:func:`merge_optics` of ``layers`` plus the defaults of the :data:`SHOWN` fields,
    checked by building an :class:`Optics` (an error names where the faulty values came from).

    Returns ``(values, sources)``; ``sources[field]`` is the layer's source name, or
    ``default`` for a field no layer sets.
    """
    values, sources = merge_optics(*layers)
    values = check_optics_values(values)
    build_optics(values, sources)
    for name in SHOWN:
        if name not in values:
            values[name], sources[name] = _DEFAULTS[name], default
    return values, sources


def build_optics(values: Mapping, sources: Mapping, *, default: str = "default") -> Optics:
    """``Optics(**values)``; a ValueError names where each value that is not a default came from."""
    try:
        return Optics(**values)
    except (TypeError, ValueError) as exc:
        where = "; ".join(f"{k} {v!r} from {sources.get(k, default)}" for k, v in values.items()
                          if sources.get(k, default) != default)
        raise ValueError(f"optics: {exc} ({where + '; the others: defaults' if where else 'all defaults'})") from None


def given_optics(values: Mapping, sources: Mapping, *, default: str = "default") -> dict:
    """The values that did not come from the defaults (what a method or function is given)."""
    return {k: v for k, v in values.items() if sources.get(k) != default}


def optics_report(values: Mapping, sources: Mapping) -> dict:
    """``{"optics": ..., "optics_source": ...}`` for a command's JSON record."""
    return {"optics": dict(values), "optics_source": {k: sources[k] for k in values}}


def cli_optics(flags=None, optics_file=None, info=None, *, check: bool = True) -> tuple[dict, dict]:
    """The optics of a command: its flags, then ``--optics FILE``, then the file's metadata
    (``info["optics"]`` from :func:`~napari_refocus.io.read_image`), then the defaults.
    ``check=False``: only the values given, merged, neither checked nor completed by defaults
    (for a method without optics, which needs only the pixel size)."""
    from_file = load_optics_file(optics_file) if optics_file else None
    layers = (("flag", flags), ("optics-file", from_file), ("file", (info or {}).get("optics")))
    return resolve_optics(*layers) if check else merge_optics(*layers)
