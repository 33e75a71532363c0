"""Input checks shared by the public functions: one clear ValueError per kind of bad input."""

from __future__ import annotations

import numbers

import numpy as np

from .optics import BACKGROUND, N_LEVELS


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
        raise ValueError(f"{name} has negative values (min {arr.min()}); intensities must be >= 0")
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
