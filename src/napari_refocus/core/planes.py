"""Stacks and colour images, one 2-D plane at a time (the nD/RGB driver).

Every restoration method works on one 2-D (Y, X) image. :func:`iter_map_planes` runs such a
job on every plane of an n-D array - Z/T/C stacks plane by plane, RGB(A) images channel by
channel - and puts the results back into an array with the same axes. The axes are named by
a tifffile-style string (``"YX"``, ``"ZYX"``, ``"TCZYX"``, ``"YXS"``, ``"CYX"``): ``Y`` and
``X`` are the plane, ``S`` the samples of an RGB(A) pixel (an alpha sample, the 4th, is copied,
never restored) and every other letter is iterated over.

Used by the widget, the command line, batch and the pipeline in :mod:`napari_refocus.io`.
Pure numpy: the source (numpy, dask or zarr) is read one plane at a time and never written.
"""

from __future__ import annotations

import string

import numpy as np

from .progress import Progress
from .resample import repeat_pixels

#: how a plane's position along an axis is named in progress messages (others: the letter)
AXIS_LABELS = {"S": "channel", "C": "channel", "Z": "z", "T": "t"}
#: axes whose position is not worth naming (tifffile's "unknown" axes)
_UNNAMED = {"Q", "I"}
#: index of the alpha sample along ``S`` in an RGBA image
ALPHA = 3


def normalise_axes(axes, ndim: int) -> str:
    """``axes`` checked against an array of ``ndim`` dimensions, upper-cased.

    ``Y`` and ``X`` must each appear once, ``S`` at most once; every letter names one
    dimension. Raises ``ValueError`` naming what is wrong.
    """
    if not isinstance(axes, str):
        raise ValueError(f"axes must be a string such as 'ZYX', got {axes!r}")
    ax = axes.strip().upper()
    if not ax or any(ch not in string.ascii_uppercase for ch in ax):
        raise ValueError(f"axes {axes!r} must be letters such as 'YX', 'ZYX', 'TCZYX' or 'YXS'")
    if len(ax) != int(ndim):
        raise ValueError(f"axes {axes!r} name {len(ax)} dimensions, but the image has {ndim}")
    for letter in "YX":
        if ax.count(letter) != 1:
            raise ValueError(f"axes {axes!r} must contain {letter} exactly once (the plane is Y, X)")
    if ax.count("S") > 1:
        raise ValueError(f"axes {axes!r} may contain S (RGB samples) only once")
    return ax


def rgb_mean(plane) -> np.ndarray:
    """One grey (Y, X) float32 plane of an RGB(A) image (Y, X, S): the mean of its colour
    samples (alpha left out). What a defocus map of a colour image is read from."""
    return np.asarray(plane)[..., :3].astype(np.float32).mean(axis=-1)


def default_axes(ndim: int, *, rgb: bool = False) -> str:
    """Axes of an array nothing is known about: the last two (three if ``rgb``) are Y, X (, S);
    leading dimensions are unnamed (``Q``), each iterated over."""
    tail = "YXS" if rgb else "YX"
    if ndim < len(tail):
        raise ValueError(f"an image with axes {tail} needs at least {len(tail)} dimensions, got {ndim}")
    return "Q" * (ndim - len(tail)) + tail


def _alpha_copied(shape, ax: str) -> bool:
    return "S" in ax and shape[ax.index("S")] == ALPHA + 1


def plane_indices(shape, *, axes: str) -> list[tuple]:
    """Index tuples of every 2-D (Y, X) plane to restore, in the order they are processed.

    Each tuple has ``slice(None)`` at Y and X and an integer at every other axis. The alpha
    sample of an RGBA image (``S`` of size 4) is not a plane to restore.

    >>> plane_indices((2, 8, 8), axes="ZYX")
    [(0, slice(None, None, None), slice(None, None, None)), (1, slice(None, None, None), slice(None, None, None))]
    """
    shape = tuple(int(n) for n in shape)
    ax = normalise_axes(axes, len(shape))
    loop = [n for n, a in zip(shape, ax) if a not in "YX"]
    if _alpha_copied(shape, ax):
        loop[[a for a in ax if a not in "YX"].index("S")] = ALPHA
    out = []
    for pos in np.ndindex(*loop):
        it = iter(pos)
        out.append(tuple(slice(None) if a in "YX" else next(it) for a in ax))
    return out


def describe_plane(idx: tuple, axes: str) -> str:
    """``"z 1, channel 0"``: where a plane of :func:`plane_indices` sits (unnamed axes left out)."""
    parts = [f"{AXIS_LABELS.get(a, a.lower())} {i}" for a, i in zip(axes, idx)
             if a not in "YX" and a not in _UNNAMED]
    return ", ".join(parts)


def _rescaled(gen, k: int, n: int, prefix: str):
    """Re-yield a job's Progress as part ``k`` of ``n``; returns the job's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(item, Progress):
            stage = f"{prefix}{item.stage}" if prefix else item.stage
            yield Progress(int(round(1000 * (k + item.fraction))), 1000 * n, stage)


def _as_yx(plane: np.ndarray, ax: str) -> np.ndarray:
    """A plane read with :func:`plane_indices` as (Y, X) (it comes out (X, Y) when X precedes Y)."""
    return plane.T if ax.index("X") < ax.index("Y") else plane


def iter_map_planes(data, job, *, axes: str, upscale: int = 1):
    """Run ``job`` on every 2-D plane of ``data``; yields Progress, returns ``(stack, first)``.

    Parameters
    ----------
    data : array (numpy, dask or zarr) whose dimensions ``axes`` names; read one plane at a
        time with ``np.asarray(data[index])`` (its own dtype), never written.
    job : callable ``job(plane) -> generator`` that yields
        :class:`~napari_refocus.core.progress.Progress` and returns ``(image_2d, result)``
        (``image_2d`` is ``upscale`` x larger than ``plane``; ``result`` anything).
    axes : tifffile-style axes string, see :func:`normalise_axes`.
    upscale : how many times larger than its input plane each restored plane is.

    Yields
    ------
    Progress
        Over all planes together (``1000 * n_planes`` steps), the stage prefixed with
        ``"plane k/n (z 1, channel 0) "`` when there is more than one plane.

    Returns
    -------
    stack : float32 array with the same axes as ``data`` and Y, X multiplied by ``upscale``;
        an RGBA image's alpha is copied (repeated ``upscale`` x in Y and X).
    first : the ``result`` of the first plane (None if there is no plane).
    """
    shape = tuple(int(n) for n in data.shape)
    ax = normalise_axes(axes, len(shape))
    up = int(upscale)
    if up < 1:
        raise ValueError(f"upscale must be a positive integer, got {upscale!r}")
    yi, xi = ax.index("Y"), ax.index("X")
    out_shape = tuple(n * up if i in (yi, xi) else n for i, n in enumerate(shape))
    want = (shape[yi] * up, shape[xi] * up)
    out = np.zeros(out_shape, dtype=np.float32)
    planes = plane_indices(shape, axes=ax)
    n = len(planes)
    first = None
    for k, idx in enumerate(planes):
        where = ""
        if n > 1:
            label = describe_plane(idx, ax)
            where = f"plane {k + 1}/{n} " + (f"({label}) " if label else "")
        image, res = yield from _rescaled(job(_as_yx(np.asarray(data[idx]), ax)), k, n, where)
        image = np.asarray(image)
        if image.shape != want:
            raise ValueError(f"the job returned a plane of shape {image.shape}, expected {want} "
                             f"(input plane {shape[yi]}x{shape[xi]}, upscale {up})")
        out[idx] = _as_yx(image, ax)
        if k == 0:
            first = res
    if _alpha_copied(shape, ax):
        s = ax.index("S")
        for idx in plane_indices(shape, axes=ax):
            if idx[s] == 0:  # one alpha plane per colour pixel plane
                a = (*idx[:s], ALPHA, *idx[s + 1:])
                out[a] = _as_yx(repeat_pixels(_as_yx(np.asarray(data[a], dtype=np.float32), ax), up), ax)
    return out, first
