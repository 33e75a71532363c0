"""Never worse: every method's change to the input, weighted by the evidence that a region needs it.

A region already in focus, or blurred less than the objective resolves, should come back as it
went in: every restoration changes such a region for the worse (measured on held-out BBBC006
fields, ``benchmarks/eval_never_worse.py``). So every method's output (``rl``'s too, at the level
the user gives, with a threshold of at least 2/3 of that level's defocus: ``benchmarks/rl_never_worse.py``)
is gated per patch by DelpNet's defocus map, in the same way in memory and block by block (:mod:`.gated`):

1. **Per patch**, ``v`` = the probability (DelpNet's softmax, renormalised over the eleven
   defocus classes) that the patch is defocused beyond :data:`DOF_FACTOR` depths of field of
   the objective (lambda n / NA^2; 3.6 um for the paper's NA 0.5 objective, i.e. classes >= 2;
   for another objective the map's classes are already in um of that objective,
   ``DefocusMap.defocus_um``, measured with DelpNet: :mod:`.class_table`).
2. **Background patches** (the map's level 11: DelpNet's own answer or the relative
   background rule) carry no evidence of their own: in the interpolation below they weigh
   :data:`BG_CONFIDENCE` of a patch with cells, with the value :data:`BG_VALUE`, so a
   background patch next to cells takes their weight and one surrounded by background is left
   as it is.
3. **Per pixel**, ``w`` = bilinear interpolation of ``v`` between patch centres, each patch
   weighted by its confidence (normalised convolution: smooth, and equal to ``v`` at the
   centre of a patch among cells). A pixel depends only on the four patches around it, so a
   block of a big image gets the same weights from the patches that touch it.
4. **Output** = input + w * (restored - input). For an ``upscale`` x method the input is first
   resampled to the output's grid (:func:`napari_refocus.core.resample.resample`, bilinear),
   the way the learned methods' outputs are sized against their inputs.

lbdvd also deconvolves a patch only as far as the evidence supports (:func:`gate_levels`): a
patch whose ``v`` is below one half is not deconvolved, the others at their most likely class
beyond the depth of field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..core.optics import BACKGROUND
from ..core.resample import repeat_pixels
from ..core.tiling import PATCH, STRIDE

#: a class is "defocused" when its defocus is at least this many depths of field (lambda n / NA^2)
DOF_FACTOR = 2.0
#: ... or at most this fraction less: the default objective's class 2, measured at 3.596 um, is
#: 0.3 % under 2 x 1.804 um, and a hair's difference must not switch a whole class off
THRESHOLD_TOLERANCE = 0.05
#: a background patch's weight in the interpolation, relative to a patch with cells
BG_CONFIDENCE = 0.05
#: the value a background patch contributes (0: background alone is left as it is)
BG_VALUE = 0.0
#: a pixel counts as changed when its weight exceeds this
CHANGED_ABOVE = 0.01
#: lbdvd deconvolves a patch when its probability of being defocused is at least this
DECONVOLVE_ABOVE = 0.5
#: a patch's evidence is at most that of its AGREE-th most defocused neighbour within NEIGHBOURS
#: patches (:func:`neighbour_agreement`)
NEIGHBOURS = 1
AGREE = 2


def depth_of_field_um(optics) -> float:
    """lambda n / NA^2 (um) of an :class:`~napari_refocus.core.optics.Optics` or its dict."""
    get = optics.get if isinstance(optics, dict) else lambda k: getattr(optics, k)
    return float(get("wavelength_nm")) * 1e-3 * float(get("refractive_index")) / float(get("na")) ** 2


def threshold_um(optics, at_least_um: float = 0.0, top_um: float | None = None) -> float:
    """The gate's threshold: ``DOF_FACTOR`` depths of field of the objective, or ``at_least_um``
    where that is larger (rl: a share of the defocus it is told, :data:`.rl.LEVEL_SHARE`), but
    never beyond ``top_um``, the map's top class (the map cannot tell 20 um from 32 um: rl told
    32 um must still find the patches it reads at its top class)."""
    at_least = float(at_least_um) if top_um is None else min(float(at_least_um), float(top_um))
    return max(DOF_FACTOR * depth_of_field_um(optics), at_least)


def defocused_classes(defocus_um, optics, at_least_um: float = 0.0) -> np.ndarray:
    """Boolean (n_classes,): which classes are defocused beyond :func:`threshold_um`, to within
    :data:`THRESHOLD_TOLERANCE` (the classes' um are measured, :mod:`.class_table`, to about a
    fifth of a class)."""
    um = np.asarray(defocus_um, dtype=np.float64)
    limit = (1.0 - THRESHOLD_TOLERANCE) * threshold_um(optics, at_least_um, float(um.max()))
    return um >= limit - 1e-9


def patch_evidence(probabilities, levels, beyond) -> tuple[np.ndarray, np.ndarray]:
    """``(v, confidence)`` per patch: P(defocused beyond the depth of field) among the defocus
    classes, lowered where its neighbours disagree (:func:`neighbour_agreement`, on a 2-D grid of
    patches), and 1 (cells) or :data:`BG_CONFIDENCE` (background, whose ``v`` is :data:`BG_VALUE`)."""
    p = np.asarray(probabilities, dtype=np.float64)[..., : len(beyond)]
    v = (p * beyond).sum(-1) / np.maximum(p.sum(-1), 1e-12)
    bg = np.asarray(levels) == BACKGROUND
    v = np.where(bg, BG_VALUE, v)
    if v.ndim == 2:
        v = neighbour_agreement(v, bg)
    return v.astype(np.float32), np.where(bg, BG_CONFIDENCE, 1.0).astype(np.float32)


def neighbour_agreement(v, background) -> np.ndarray:
    """Each non-background patch's ``v`` lowered to that of its :data:`AGREE`-th most defocused
    non-background neighbour within :data:`NEIGHBOURS` patches, where that is lower (with fewer
    such neighbours: the least defocused of them; with none: its own). Never raised.

    Why: defocus varies smoothly over a field, and DelpNet reads single patches far from their
    neighbours: near-focus planes of the real DFNN stack had 1-4 of their 23-24 cell patches at
    classes 3-10 among the others at 0-1, and there the gate let refocus-unet change them (-1.1
    dB on one plane; BENCHMARKS.md "Never worse", stop 33). A patch is now trusted as far as two
    of its neighbours agree: a region two patches wide, a tilt's ramp and the inside of a
    defocused area keep their evidence; a lone reading, or a line one patch wide, does not.
    Only lowering: at a grid's edge the neighbourhood is one-sided, and nothing here may make
    the gate change more than DelpNet's own reading. A window of the grid gives the whole grid's
    values at least :data:`NEIGHBOURS` patches inside its edges (block forms read that many more
    patches: :func:`neighbour_span`)."""
    v = np.asarray(v, dtype=np.float64)
    bg = np.asarray(background, dtype=bool)
    k = NEIGHBOURS
    ny, nx = v.shape
    padded = np.full((ny + 2 * k, nx + 2 * k), np.nan)
    padded[k:k + ny, k:k + nx] = np.where(bg, np.nan, v)
    stack = np.stack([padded[a:a + ny, b:b + nx] for a in range(2 * k + 1) for b in range(2 * k + 1)
                      if (a, b) != (k, k)])
    # the AGREE-th largest neighbour (NaN: background or outside, sorted last); fewer neighbours: the smallest
    desc = -np.sort(np.where(np.isnan(stack), np.inf, -stack), axis=0)
    n = np.sum(~np.isnan(stack), axis=0)
    pick = np.take_along_axis(desc, np.clip(np.minimum(n, AGREE) - 1, 0, None)[None], axis=0)[0]
    return np.where(bg | (n == 0), v, np.minimum(v, pick))


def gate_levels(probabilities, levels, beyond) -> np.ndarray:
    """lbdvd's levels as far as the evidence goes: 0 (not deconvolved) where P(defocused beyond
    the depth of field) < :data:`DECONVOLVE_ABOVE`, else the most likely defocused class;
    background stays background."""
    p = np.asarray(probabilities, dtype=np.float64)[..., : len(beyond)]
    v, _ = patch_evidence(probabilities, levels, beyond)
    best = np.where(beyond, p, -1.0).argmax(-1)
    out = np.where(v >= DECONVOLVE_ABOVE, best, 0)
    return np.where(np.asarray(levels) == BACKGROUND, BACKGROUND, out).astype(np.int64)


def _axis(n_out: int, start: int, n_patches: int, *, upscale: int, scale: float, patch: int, stride: int):
    """Per output pixel ``start .. start + n_out``: the lower patch index and the weight of the upper."""
    native = (np.arange(start, start + n_out) + 0.5) / upscale - 0.5  # pixel centre, input pixels
    on_map = (native + 0.5) / scale - 0.5  # the map's (possibly resampled) pixels
    g = np.clip((on_map - (patch - 1) / 2) / stride, 0, n_patches - 1)
    lo = np.minimum(np.floor(g).astype(np.int64), max(n_patches - 2, 0))
    return lo, (g - lo).astype(np.float32)


def patch_span(bounds, n_patches, *, upscale: int = 1, scale: float = 1.0, patch: int, stride: int):
    """``((r0, r1), (c0, c1))``: inclusive patch rows/columns the weights of output pixels
    ``bounds = (y0, y1, x0, x1)`` read."""
    spans = []
    for (a, b), n in zip((bounds[:2], bounds[2:]), n_patches):
        lo, _ = _axis(b - a, a, n, upscale=upscale, scale=scale, patch=patch, stride=stride)
        spans.append((int(lo.min()), int(min(lo.max() + 1, n - 1))))
    return tuple(spans)


def weights_reach(scale: float = 1.0) -> float:
    """Native pixels beyond a pixel that its weight reads (``scale`` native px per map px): its
    two map patches reach a patch and a stride (a pixel past the grid's last patch centre reads
    the two last patches), their neighbours (:func:`neighbour_agreement`) :data:`NEIGHBOURS`
    strides more. Block forms take it into their halo."""
    return (PATCH + STRIDE + NEIGHBOURS * STRIDE) * scale


def neighbour_span(span, grid_shape):
    """``span`` (inclusive patch rows and columns, :func:`patch_span`) widened by
    :data:`NEIGHBOURS` patches on each side within a grid of ``grid_shape`` patches: the patches
    whose readings the span's evidence (:func:`neighbour_agreement`) depends on. A block form
    classifies these, so its weights equal the whole image's."""
    k = NEIGHBOURS
    return tuple((max(0, int(a) - k), min(int(n) - 1, int(b) + k)) for (a, b), n in zip(span, grid_shape))


def pixel_weights(v, confidence, *, grid_shape, bounds, upscale: int = 1, scale: float = 1.0,
                  patch: int, stride: int, offset=(0, 0)) -> np.ndarray:
    """The per-pixel weight ``w`` (float32) of output pixels ``bounds = (y0, y1, x0, x1)``.

    ``v``, ``confidence``: per patch (:func:`patch_evidence`) of the patch rows/columns from
    ``offset`` on (a block's sub-grid), on a map grid of ``grid_shape`` patches whose pixel is
    ``scale`` input pixels; the output is ``upscale`` x the input.
    """
    y0, y1, x0, x1 = (int(b) for b in bounds)
    kw = dict(upscale=upscale, scale=scale, patch=patch, stride=stride)
    iy, ty = _axis(y1 - y0, y0, grid_shape[0], **kw)
    ix, tx = _axis(x1 - x0, x0, grid_shape[1], **kw)
    iy, ix = iy - offset[0], ix - offset[1]
    ny, nx = np.shape(v)
    conf = np.asarray(confidence, np.float32)
    cv = conf * np.asarray(v, np.float32)
    iy1, ix1 = np.minimum(iy + 1, ny - 1), np.minimum(ix + 1, nx - 1)
    uy, vy = (1.0 - ty)[:, None], ty[:, None]

    def bilinear(a):  # separable: along the columns on the patch rows, then along the rows
        across = a[:, ix] * (1.0 - tx) + a[:, ix1] * tx
        out = across[iy1] * vy
        out += across[iy] * uy
        return out

    num, den = bilinear(cv), bilinear(conf)
    num /= np.maximum(den, 1e-12, out=den)
    return np.clip(num, 0.0, 1.0, out=num)


def base_like(image, shape) -> np.ndarray:
    """The input as float32 on the output's grid (resampled bilinearly for an x2 method)."""
    from ..core.resample import resample

    return resample(np.asarray(image, dtype=np.float32), shape=tuple(shape))


def blend(image, restored, w) -> np.ndarray:
    """``input + w * (restored - input)`` (float32), the input on the output's grid."""
    base = base_like(image, np.shape(restored))
    return (base + w * (np.asarray(restored, np.float32) - base)).astype(np.float32)


@dataclass(frozen=True)
class Gate:
    """The gate of one image: per-patch evidence on the map's grid, and where it came from."""

    v: np.ndarray
    confidence: np.ndarray
    grid_shape: tuple
    patch: int
    stride: int
    scale: float
    threshold_um: float

    def weights(self, image_shape, upscale: int = 1, bounds=None) -> np.ndarray:
        """Per-pixel weights of the output (``upscale`` x ``image_shape``; ``bounds``: a part)."""
        if bounds is None:
            bounds = (0, image_shape[0] * upscale, 0, image_shape[1] * upscale)
        return pixel_weights(self.v, self.confidence, grid_shape=self.grid_shape, bounds=bounds, upscale=upscale,
                             scale=self.scale, patch=self.patch, stride=self.stride)

    def provenance(self) -> dict:
        return describe(self.threshold_um)


def gate_of_map(defocus_map, at_least_um: float = 0.0) -> Gate:
    """The :class:`Gate` of a :class:`~napari_refocus.methods.defocus.DefocusMap` (``at_least_um``:
    :func:`threshold_um`)."""
    beyond = defocused_classes(defocus_map.defocus_um, defocus_map.optics, at_least_um)
    v, c = patch_evidence(defocus_map.probabilities, defocus_map.levels, beyond)
    g = defocus_map.grid
    return Gate(v, c, tuple(g.shape), g.patch, g.stride, float(defocus_map.scale),
                threshold_um(defocus_map.optics, at_least_um, float(np.max(defocus_map.defocus_um))))


def describe(threshold_um: float) -> dict:
    """What provenance records of a gated run (its rule and parameters)."""
    return {"ran": True, "rule": "output = input + w * (restored - input); w = P(defocus >= threshold_um: "
            "dof_factor x depth of field, or for rl 2/3 of the defocus it is told where larger) per DelpNet patch, "
            "bilinear between patch centres (background patches: confidence "
            f"{BG_CONFIDENCE}, value {BG_VALUE})", "dof_factor": DOF_FACTOR,
            "threshold_um": round(float(threshold_um), 4), "threshold_tolerance": THRESHOLD_TOLERANCE,
            "changed_above": CHANGED_ABOVE,
            "lbdvd_deconvolves_above": DECONVOLVE_ABOVE}


#: rows of an output whose gate weights are made at a time (lazy reads and the in-memory blend)
WEIGHT_ROWS = 256


class GateWeights:
    """The gate's weights of an output as a lazy float32 2-D array (``shape``, ``dtype``, slicing,
    ``np.asarray``): made from the gate's per-patch evidence when read, the same numbers as
    :meth:`Gate.weights` strip by strip, so that a run does not hold an output-sized weight map
    (4 bytes per output pixel: 16 per input pixel for an x2 method) besides its result."""

    dtype = np.dtype(np.float32)
    ndim = 2
    #: (y, x) bool mask at the input's size where the output was given back unchanged (an empty
    #: canvas, :mod:`napari_refocus.core.padding`): the weights read 0 there
    outside = None

    def __init__(self, gate: Gate, image_shape, upscale: int = 1):
        self.gate, self.image_shape, self.upscale = gate, tuple(int(n) for n in image_shape), int(upscale)
        self.shape = (self.image_shape[0] * self.upscale, self.image_shape[1] * self.upscale)
        self.size = self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of the weights, every column."""
        w = self.gate.weights(self.image_shape, self.upscale, bounds=(a, b, 0, self.shape[1]))
        if self.outside is not None:
            u = self.upscale
            w[repeat_pixels(self.outside, u, rows=(a, b))] = 0.0
        return w

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.float32)
        for a in range(0, self.shape[0], WEIGHT_ROWS):
            out[a:a + WEIGHT_ROWS] = self.rows(a, min(self.shape[0], a + WEIGHT_ROWS))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = key[0] if key else slice(None)
        if isinstance(rows, slice) and rows.step in (None, 1):
            a, b, _ = rows.indices(self.shape[0])
            part = self.rows(a, max(a, b))
            return part[(slice(None), *key[1:])]
        return np.asarray(self)[key]


def unchanged_on(weights, mask: np.ndarray, upscale: int = 1):
    """``(weights, changed_fraction)`` of a never-worse gate with the canvas given back
    unchanged: the weights are 0 on it (a copy; lazy weights stay lazy)."""
    if isinstance(weights, GateWeights):
        w = copy.copy(weights)
        w.outside = mask
        changed = sum(int((w.rows(a, min(w.shape[0], a + WEIGHT_ROWS)) > CHANGED_ABOVE).sum())
                      for a in range(0, w.shape[0], WEIGHT_ROWS))
        return w, changed / w.size if w.size else 0.0
    w = np.array(weights, np.float32)
    w[repeat_pixels(mask, upscale)] = 0.0
    return w, float((w > CHANGED_ABOVE).mean()) if w.size else 0.0


def record(report, w, threshold_um: float, delpnet_sha256: str | None = None, *,
           changed_fraction: float | None = None) -> None:
    """Put the weight map (an array or :class:`GateWeights`), the share of pixels changed (given,
    or counted from ``w``) and the gate's description in a RunReport (``delpnet_sha256``: the
    DelpNet file a method that does not otherwise use it loaded)."""
    if not isinstance(w, GateWeights):
        w = np.asarray(w, np.float32)
    if changed_fraction is None:
        changed_fraction = float((np.asarray(w) > CHANGED_ABOVE).mean()) if w.size else 0.0
    report.extras["gate"] = {"weights": w, "changed_fraction": float(changed_fraction),
                             **describe(threshold_um), **({"delpnet_sha256": delpnet_sha256} if delpnet_sha256 else {})}


def iter_image_gate(image, *, weights=None, device, tta: bool = False, optics=None, stats=None, report=None,
                    at_least_um: float = 0.0):
    """DelpNet's map of ``image`` and its :class:`Gate` (a generator: yields Progress, returns
    ``(map, gate)``); ``stats``: the whole image's canonical stats when ``image`` is a part;
    ``report`` (a DeviceReport) learns of the map's out-of-memory fallbacks, as the method's own;
    ``at_least_um``: :func:`threshold_um`."""
    from .defocus import iter_defocus_map

    dmap = yield from iter_defocus_map(image, weights=weights, device=device, tta=tta, optics=optics, stats=stats,
                                       report=report)
    if report is not None:
        report.note(dmap.choice)  # map_pixel_um="auto": which reading the gate's map kept
    return dmap, gate_of_map(dmap, at_least_um)


def map_fits(image_shape, optics=None) -> bool:
    """Whether DelpNet can map an image of ``image_shape`` taken with ``optics`` (one patch fits)."""
    from ..core.resample import resized_shape
    from .defocus import map_scale
    from .map_choice import candidates, is_auto

    if is_auto(optics):  # either reading will do
        return any(map_fits(image_shape, o) for o in candidates(optics))
    scale = map_scale(optics)
    return min(resized_shape(image_shape, 1.0 / scale) if scale != 1.0 else image_shape[-2:]) >= PATCH


#: the largest image, mirrored out to one DelpNet patch, that a method is run on that way (a crop of
#: a cell is ~10^4 px mirrored; a line scan of 10^7 px x 1 row would become 84 rows of it)
MIRROR_MAX_PIXELS = 1 << 20


def mirror_padding(image_shape, optics=None):
    """``((top, bottom), (left, right))``: the fewest pixels to mirror onto an image of
    ``image_shape`` for one DelpNet patch to fit it at ``optics`` (zeros where it fits already),
    split evenly so the image stays in the middle of the patch; None when the mirrored image
    would exceed :data:`MIRROR_MAX_PIXELS`."""
    pads, sides = [], []
    for axis in (-2, -1):
        n = need = int(image_shape[axis])
        while not map_fits(tuple(need if a == axis else 10 ** 6 for a in (-2, -1)), optics):
            need += 1
        pads.append(((need - n) // 2, need - n - (need - n) // 2))
        sides.append(need)
    return tuple(pads) if sides[0] * sides[1] <= MIRROR_MAX_PIXELS else None


def unmirror(array, pads, image_shape, upscale: int = 1):
    """The part of ``array`` (a result on the image mirrored by ``pads``, ``upscale`` x its size)
    over the image's own pixels."""
    (top, _), (left, _) = pads
    r, (h, w) = int(upscale), (int(n) for n in image_shape[-2:])
    return array[top * r:(top + h) * r, left * r:(left + w) * r]
