"""Input checks shared by the public functions: one clear ValueError per kind of bad input."""

from __future__ import annotations

import numbers

import numpy as np

from .optics import BACKGROUND, MAP_PIXEL_AUTO, N_LEVELS


def as_image(image, *, name: str = "image", ndim: int = 2, allow_negative: bool = False):
    """Return ``image`` as a numpy array after checking it; never copies or modifies it.

    Raises ValueError for non-arrays, non-numeric or boolean dtypes, empty arrays, the
    wrong number of dimensions, NaN/inf, and (unless allowed) negative values.
    """
    if image is None:
        raise ValueError(f"{name} is missing")
    arr = np.asarray(image)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (y, x), got {arr.ndim}-D with shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not allow_negative and arr.min() < 0:
        # the methods model photon counts; a background-subtracted image is the usual cause,
        # and which fix is right (an offset back, or clipping noise below 0) is the user's call
        raise ValueError(f"{name} has negative values (min {arr.min()}); intensities must be >= 0: add back the "
                         f"background offset or clip the negative values first")
    return arr


def check_level(level, *, n_levels: int = N_LEVELS, name: str = "level") -> int:
    """An integer defocus level in ``0 .. n_levels-1``."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise ValueError(f"{name} must be an integer in 0..{n_levels - 1}, got {level!r}")
    if not float(level).is_integer() or not 0 <= level <= n_levels - 1:
        raise ValueError(f"{name} must be an integer in 0..{n_levels - 1}, got {level!r}")
    return int(level)


def check_level_map(level_map, grid_shape, *, n_levels: int = N_LEVELS) -> np.ndarray:
    """A per-patch level array of exactly ``grid_shape``; values 0..n_levels-1 or BACKGROUND."""
    arr = as_image(level_map, name="level map", ndim=2)
    if tuple(arr.shape) != tuple(grid_shape):
        raise ValueError(
            f"level map has shape {arr.shape} but the patch grid of this image is {tuple(grid_shape)}"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise ValueError("level map must hold integer levels")
    arr = arr.astype(np.int64)
    ok = ((arr >= 0) & (arr <= n_levels - 1)) | (arr == BACKGROUND)
    if not ok.all():
        bad = np.unique(arr[~ok])[:5].tolist()
        raise ValueError(
            f"level map values must be 0..{n_levels - 1} or {BACKGROUND} (background); found {bad}"
        )
    return arr


# ------------------------------------------------------------------- options (one set of rules)
# Every named option of the CLI, the API and the methods' schemas is checked here, by name, so
# that ``--pixel-um 0``, ``refocus(img, pixel_um=0)`` and a widget's 0 get the same one-line
# ValueError. A rule: (kind, minimum, maximum, minimum excluded). kind "int" accepts
# integer-valued numbers; "num" any finite real number.
_POSITIVE = ("num", 0, None, True)
RULES: dict[str, tuple] = {
    # optics (core.optics.Optics; na < refractive_index is checked across fields)
    "pixel_um": _POSITIVE, "wavelength_nm": _POSITIVE, "na": _POSITIVE, "refractive_index": _POSITIVE,
    "level_step_um": _POSITIVE, "defocus_scale": _POSITIVE, "map_pixel_um": _POSITIVE,
    "psf_size": ("int", 3, None, False), "oversample": ("int", 1, None, False),
    "n_levels": ("int", 1, None, False),
    # restoration
    # a level's top depends on the optics' n_levels (check_level checks it with them)
    "level": ("int", 0, None, False), "iterations": ("int", 1, None, False),
    "stride": ("int", 1, 84, False), "batch_size": ("int", 1, None, False), "overlap": ("int", 0, None, False),
    "min_level": ("num", 0, N_LEVELS - 1, False), "patch_min_level": ("int", 0, N_LEVELS, False),
    "block": ("int", 1, None, False),
    # simulation, evaluation
    "gain": _POSITIVE, "data_range": _POSITIVE, "seed": ("int", 0, None, False),
    # batch and training
    "workers": ("int", 1, None, False), "threads": ("int", 1, None, False), "num_threads": ("int", 1, None, False),
    "epochs": ("int", 1, None, False), "steps": ("int", 1, None, False), "minutes": _POSITIVE, "lr": _POSITIVE,
}
#: words an option takes besides its numbers
WORDS = {"map_pixel_um": (MAP_PIXEL_AUTO,)}
#: odd-only integers (a centred window)
ODD = ("psf_size", "oversample")


def number_or_word(name: str, text):
    """An option typed as text (a CLI flag, a widget's text field): one of its :data:`WORDS` (any
    case, spaces around), else a float; text that is neither is returned as it is, for
    :func:`check_value` or the optics to reject in one line."""
    text = str(text).strip()
    if text.lower() in WORDS.get(name, ()):
        return text.lower()
    try:
        return float(text)
    except ValueError:
        return text


def check_value(name: str, value, *, where: str = ""):
    """``value`` of the option ``name`` after checking it against :data:`RULES` (None and names
    without a rule pass unchanged; integer-valued floats of an integer option become ints)."""
    rule = RULES.get(name)
    if rule is None or value is None or (isinstance(value, str) and value in WORDS.get(name, ())):
        return value
    kind, lo, hi, open_lo = rule
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{prefix}{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if kind == "int":
        if not float(value).is_integer():
            raise ValueError(f"{prefix}{name} must be an integer, got {value!r}")
        value = int(value)
    if lo is not None and (value <= lo if open_lo else value < lo):
        what = "a positive number" if (open_lo and lo == 0) else f"{'>' if open_lo else '>='} {lo}"
        raise ValueError(f"{prefix}{name} must be {what}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{prefix}{name} must be <= {hi}, got {value!r}")
    if name in ODD and value % 2 == 0:
        raise ValueError(f"{prefix}{name} must be an odd integer, got {value!r}")
    return value


def check_options(values, *, where: str = "") -> dict:
    """Every entry of ``values`` (a mapping) with a rule checked; returns the checked copy.

    Also the rules across fields: ``na < refractive_index`` when both are given.
    """
    out = {k: check_value(k, v, where=where) for k, v in dict(values).items()}
    na, n = out.get("na"), out.get("refractive_index")
    if na is not None and n is not None and na >= n:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}na ({na}) must be smaller than refractive_index ({n})")
    return out


def check_keywords(given, valid, *, where: str) -> None:
    """ValueError naming the unknown keywords of ``given`` and the valid ones."""
    valid = tuple(valid)
    unknown = sorted(str(k) for k in given if k not in valid)
    if unknown:
        raise ValueError(f"{where} has no parameter {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


def optics_fields() -> tuple[str, ...]:
    """The names an optics mapping may hold (the fields of :class:`~.optics.Optics`)."""
    import dataclasses

    from .optics import Optics

    return tuple(f.name for f in dataclasses.fields(Optics))


def check_optics_mapping(mapping, *, where: str = "optics") -> dict:
    """A ``{field: value}`` of optics with only :class:`~.optics.Optics` fields (else a
    ValueError naming the valid ones) and every value checked (:func:`check_options`)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be an Optics or a dict of its fields, got {type(mapping).__name__}")
    check_keywords(mapping, optics_fields(), where=where)
    return check_options(mapping, where=where)


def existing_path(path, *, what: str = "input"):
    """``path`` as a :class:`~pathlib.Path` when it exists, else a one-line ValueError."""
    from pathlib import Path

    if path is None or str(path) == "":
        raise ValueError(f"{what} is missing")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"no such file: {p} ({what})")
    return p
