"""``map_pixel_um="auto"``: the defocus map's pixel chosen per image by DelpNet's own certainty.

DelpNet reads both the blur and the size of the objects in its pixels (benchmarks/object_scale.py).
An image can be read at two samplings, each right for one kind of image: matched to the training
objective in lambda / NA (objects that look as DelpNet's training images did through that
objective), or at the training images' 0.65 um pixel (cultured cells at their physical size,
imaged at 40x-100x). Which one holds is not in the metadata. ``auto`` keeps the reading with the
higher mean certainty of the non-background patches. Measured (benchmarks/map_choice.py,
BENCHMARKS.md "Choosing the map pixel per image"): on cells at their physical size it kept the
0.65 um reading and cut the median defocus error 2-3x (+0.1 dB of LB-DVD gain); on fields whose
objects are as small in lambda/NA as DelpNet's training ones it mostly kept 0.65 um too, with a
larger error and the same gain. So it is an opt-in, not the default. The choice is made on the
image's central crop (at most :data:`CHOICE_SIDE` pixels a side), so that an image in memory and
the same image read block by block choose alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core.matching import map_key
from ..core.optics import BACKGROUND, MAP_PIXEL_AUTO, Optics
from .canonical import CANONICAL

#: the crop the choice is made on, native pixels a side (bounded work and memory on any image)
CHOICE_SIDE = 2048


def is_auto(optics) -> bool:
    """True when ``optics`` asks for the map's pixel to be chosen per image."""
    return isinstance(optics, Optics) and optics.map_pixel_um == MAP_PIXEL_AUTO


def candidates(optics: Optics) -> list[Optics]:
    """The readings ``optics`` (with ``map_pixel_um="auto"``) chooses between: lambda/NA first (kept
    on a tie), then the training pixel; one when both give the same sampling (the training objective)."""
    out = []
    for pixel in (None, CANONICAL.pixel_um):  # the training images' pixel: cells at their physical size
        o = map_key(CANONICAL, dataclasses.replace(optics, map_pixel_um=pixel))
        if o not in out:
            out.append(o)
    return out


def central_crop(image, side: int = CHOICE_SIDE):
    """The central ``side`` x ``side`` pixels of a 2-D array (numpy, dask or zarr) as numpy, in its dtype."""
    h, w = (int(n) for n in image.shape[-2:])
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.asarray(image[y0:y0 + min(h, side), x0:x0 + min(w, side)])


def score(defocus_map) -> float:
    """Mean certainty of the non-background patches (-1 when every patch is background)."""
    fg = defocus_map.levels != BACKGROUND
    return float(defocus_map.certainty[fg].mean()) if fg.any() else -1.0


def iter_choose(image, optics: Optics, read, **map_kwargs):
    """``(optics with map_pixel_um resolved, the chosen map or None, {reading: score, or None when the
    image is too small to read that way})`` for a 2-D ``image`` (a generator yielding Progress). The
    chosen map is returned when the crop was the whole image and ``map_kwargs`` hold no outside
    ``stats`` (it is then the image's own map); None otherwise.
    ``read``: :func:`~.defocus.iter_defocus_map` (passed in: that module calls this one), and
    ``map_kwargs`` its keywords. With one candidate nothing is read."""
    options = candidates(optics)
    if len(options) == 1:
        return options[0], None, {}
    crop = central_crop(image)
    whole = crop.shape == tuple(image.shape[-2:]) and map_kwargs.get("stats") is None
    kwargs = dict(map_kwargs, stats=None)  # the crop's own intensity scale, in every form alike
    scores, maps, errors = {}, {}, []
    for o in options:
        try:
            dm = yield from read(crop, optics=o, **kwargs)
        except ValueError as exc:  # too small at this sampling: the other reading only
            errors.append(exc)
            scores[label(o)] = None
            continue
        scores[label(o)], maps[label(o)] = score(dm), (o, dm)
    if not maps:
        raise errors[0]
    best = max(maps, key=lambda k: scores[k])  # the first (lambda/NA) on a tie
    chosen, dm = maps[best]
    return chosen, (dm if whole else None), scores


def label(optics: Optics) -> str:
    """How a reading is named in notes: ``"lambda/NA"`` or ``"0.65 um"``."""
    return "lambda/NA" if optics.map_pixel_um is None else f"{optics.map_pixel_um:g} um"


def note(chosen: Optics, scores: dict) -> str:
    """The one line a run records about the choice."""
    if not scores:
        return ""
    others = ", ".join(f"{k} {'too small to read' if v is None else f'{v:.3f}'}" for k, v in scores.items()
                       if k != label(chosen))
    return (f"map pixel chosen automatically: {label(chosen)} (DelpNet's mean certainty "
            f"{scores[label(chosen)]:.3f}; {others})")

