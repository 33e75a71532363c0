"""Focus triage: which images need restoring, and which plane of a z-stack is in focus."""

from __future__ import annotations

import numpy as np

from ..core.validation import as_image


def normalized_variance(image) -> float:
    """Classical sharpness: variance of the Laplacian over the squared mean (scale-free)."""
    from scipy import ndimage

    a = as_image(image, name="plane").astype(np.float64)
    mean = a.mean()
    return float(ndimage.laplace(a).var() / mean**2) if mean > 0 else 0.0


def best_focus_plane(stack, *, z_axis: int = 0, channel_axis: int | None = None, device="auto",
                     use_delpnet: bool = True) -> list[dict]:
    """The in-focus plane of a z-stack, per channel.

    ``stack``: (Z, Y, X), or with a channel axis (e.g. (Z, C, Y, X), ``channel_axis=1``).
    For each plane the DelpNet focus score (certainty-weighted mean defocus level) is computed;
    the best plane has the lowest score (ties: the sharper by normalised Laplacian variance).
    The normalised variance of every plane is reported too, as a model-free cross-check
    (LB-DVD picks the plane of maximum intensity standard deviation; the Laplacian is
    sharper-sighted). Returns one dict per channel.
    """
    arr = np.asarray(stack)
    if arr.ndim not in (3, 4):
        raise ValueError(f"a z-stack must be 3-D (Z, Y, X) or 4-D with a channel axis; got shape {arr.shape}")
    if arr.ndim == 4 and channel_axis is None:
        raise ValueError("a 4-D stack needs channel_axis=")
    if channel_axis is not None:
        arr = np.moveaxis(arr, (z_axis, channel_axis), (0, 1))
    else:
        arr = np.moveaxis(arr, z_axis, 0)[:, None]
    out = []
    for c in range(arr.shape[1]):
        planes = arr[:, c]
        sharp = [normalized_variance(p) for p in planes]
        rec = {"channel": c, "planes": len(planes), "normalized_variance": sharp,
               "best_plane_by_sharpness": int(np.argmax(sharp))}
        if use_delpnet:
            from .defocus import defocus_map

            scores = [defocus_map(p, device=device).focus_score_and_certainty() for p in planes]
            levels = np.array([lv if lv == lv else np.inf for lv, _ in scores])  # NaN: all background
            order = np.lexsort((-np.asarray(sharp), levels))
            best = int(order[0])
            rec.update(focus_levels=[None if lv != lv else lv for lv, _ in scores],
                       focus_certainty=[c for _, c in scores],
                       best_plane=best, best_plane_certainty=scores[best][1])
        else:
            rec["best_plane"] = rec["best_plane_by_sharpness"]
        out.append(rec)
    return out
