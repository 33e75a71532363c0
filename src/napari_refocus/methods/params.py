"""Parameter schemas: one frozen dataclass per method, validated when it is built.

A schema is the single description of a method's options: :func:`parse` turns keywords into
it (unknown names are a ``ValueError`` that lists the valid ones; nothing is dropped
silently), the CLI and the widget build their options from :func:`describe`, and provenance
is its :meth:`~Params.as_dict`. Optics fields (``pixel_um=``, ``na=`` ...) may be given flat
and are folded into one :class:`~napari_refocus.core.optics.Optics` for schemas that have an
``optics`` field.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

from ..core.optics import Optics

#: Optics fields accepted flat (``refocus(img, pixel_um=0.3)``) by schemas with ``optics``.
OPTICS_FIELDS = tuple(f.name for f in dataclasses.fields(Optics))


def option(default, *, help: str, choices=None, minimum=None, maximum=None, unit: str = "", kind=None):
    """A schema field with its help text and limits (used by the CLI and the widget too).
    ``kind``: the value's type where the default does not say it (a default of None)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": minimum,
            "max": maximum, "unit": unit, "type": kind}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Params:
    """Base of every method's parameter schema; subclasses are frozen dataclasses."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(type(self).__name__, f, getattr(self, f.name))

    def as_dict(self) -> dict:
        """JSON-able values of every field (optics as a nested dict)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.as_dict() if isinstance(v, Optics) else v
        return out


def _check(schema: str, f, value) -> None:
    meta = f.metadata
    if value is None or isinstance(value, Optics):
        return
    default = f.default if f.default is not dataclasses.MISSING else None
    kind = meta.get("type") or type(default)
    if issubclass(kind, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{f.name} must be True or False, got {value!r}")
    elif issubclass(kind, int):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if not (isinstance(value, numbers.Real) and float(value).is_integer()):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
    elif issubclass(kind, float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{f.name} must be a number, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"{f.name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ValueError(f"{f.name} must be >= {meta['min']}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ValueError(f"{f.name} must be <= {meta['max']}, got {value!r}")


def field_names(schema) -> tuple[str, ...]:
    """Names a schema accepts as keywords (its fields, plus the flat optics fields)."""
    names = tuple(f.name for f in dataclasses.fields(schema))
    return names + (OPTICS_FIELDS if "optics" in names else ())


def parse(schema, method: str = "", **kwargs):
    """Build ``schema`` from keywords; unknown names are a ValueError listing the valid ones.

    Integer-valued floats for integer fields are converted (``iterations=15.0``).
    """
    valid = field_names(schema)
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown:
        who = f"method {method!r}" if method else schema.__name__
        raise ValueError(f"{who} has no parameter {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(valid)}")
    flat = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTICS_FIELDS and k not in
            {f.name for f in dataclasses.fields(schema)}}
    if "optics" in valid:
        base = kwargs.get("optics")
        if base is not None and not isinstance(base, Optics):
            if isinstance(base, dict):
                base = Optics(**base)
            else:
                raise ValueError(f"optics must be an Optics or a dict, got {type(base).__name__}")
        if flat or base is not None:
            base = base or Optics()
            kwargs["optics"] = Optics(**{**base.as_dict(), **flat}) if flat else base
    for f in dataclasses.fields(schema):
        v = kwargs.get(f.name)
        if isinstance(f.default, int) and not isinstance(f.default, bool) and isinstance(v, float) \
                and v.is_integer():
            kwargs[f.name] = int(v)
    return schema(**kwargs)


def describe(schema) -> list[dict]:
    """One dict per user-facing field: name, default, type, help, choices, min, max, unit."""
    out = []
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = f.metadata.get("type") or (type(default) if default is not None else str)
        out.append({"name": f.name, "default": default, "type": kind,
                    **{k: f.metadata.get(k) for k in ("help", "choices", "min", "max", "unit")}})
    return out
