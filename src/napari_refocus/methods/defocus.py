"""Patch-wise defocus of a 2-D image with DelpNet (LB-DVD step 1), for any objective and camera.

DelpNet's classes are the blur of one reference microscope (:data:`CANONICAL`: NA 0.5 in air,
451 nm, 0.65 um pixels, LB-DVD eq. 2 - ``psf_model="paraxial"`` - 2 um per class), the one the
shipped weights were trained on, on 16-bit counts. Any image is first brought to that frame, so
the same network serves every objective and exposure (the default optics' exact PSF too: its
classes are measured for it, 1.73, 3.60, ... um instead of 2, 4, ... um):

1. **Sampling.** Blur looks alike on two objectives when lengths are measured in lambda / NA
   (:attr:`~napari_refocus.core.optics.Optics.sampling`). The image is resampled so that its
   pixel is as many lambda / NA as the training pixel (0.65 um x 0.5 / 451 nm = 0.72); the map's
   grid is then 84x84 *canonical* pixels, ``scale`` native pixels each. DelpNet also reads the
   objects' size in those pixels: ``Optics.map_pixel_um`` puts the map's pixel at a given size
   instead (0.65: cells at 40x-100x at the physical size of the training images), and the
   classes are then measured at that sampling.
2. **Intensity.** Intensities are mapped onto one canonical scale by their robust range
   (:func:`napari_refocus.core.intensity.to_canonical`: 1st..99.8th percentile -> 150..1150
   counts), so 8-bit, 16-bit, float counts, float 0..1 and any exposure give the same input.
3. **Classes in um for the user's objective.** Class ``L`` is the blur of the training
   objective at ``2 L`` um; for any other objective (or PSF model) it is the defocus at which
   DelpNet itself answers ``L`` on a reference field blurred with that objective's PSF
   (:func:`~napari_refocus.methods.class_table.response_table`, measured once per objective: a
   match of the PSFs' encircled energy, :func:`~napari_refocus.core.matching.match_defocus_um`,
   under-states high-NA defocus by up to 2x). The map reports that defocus (``defocus_um``),
   and LB-DVD deconvolves with the user's PSF there.
4. **Background** is relative: a patch whose canonical intensities stay within 80 counts of the
   image's background and span less than 30 counts or 6 noise sigmas (the paper's absolute
   rule, max < 230 and range < 30 counts, written on the canonical scale) is background
   whatever DelpNet says; DelpNet's own "bg" answers stand too. An empty canvas (exact zeros:
   :mod:`napari_refocus.core.padding`) is read filled by reflection, and its patches are background.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..core.memory import release_free_memory
from ..core.matching import map_key, map_sampling_scale
from ..core.optics import BACKGROUND, Optics
from ..core.progress import Progress, drain
from ..core.tiling import PATCH, STRIDE, PatchGrid, patch_view, take_patches
from ..core.validation import as_image
from .canonical import CANONICAL, N_CLASSES, SCALE, background_rule, canonical_padded, canonical_shape
from .canonical import canonical_image  # noqa: F401 - re-exported (canonical_blocks and tests import it here)
from .canonical import delpnet as _model  # a module name of its own: tests replace it
from .canonical import map_weights
from .deep import TOP
from .map_choice import is_auto, iter_choose, note
from .padding import filled, on_canvas

#: patches per DelpNet forward pass: its activations take ~0.6 MB a patch (a batch of 256: ~150
#: MB), and 16 ran as many patches/s as 64 or 256 on a 2-core CPU (benchmarks/memory_speed.py)
BATCH = 16


@dataclass(frozen=True)
class DefocusMap:
    """DelpNet's answer for every patch of an image.

    levels : (rows, cols) int64, 0..10 or 11 (= bg)
    probabilities : (rows, cols, 12) float32 softmax (p0..p10, pbg)
    certainty : (rows, cols) float32, 1 - entropy / log(12), in [0, 1]
    grid : the PatchGrid of the patches, in the map's own (canonical) pixels
    weights_sha256 : SHA-256 of the weights file used (provenance)
    scale : native image pixels per map pixel (1 for the training objective); the patch at
        grid corner (y0, x0) covers native pixels from (y0, x0) * scale
    defocus_um : defocus of each class 0..10 for the objective the image was taken with (um)
    optics : that objective's optics (a plain dict), for provenance
    coarse : the second reading at half the sampling where patches are at the top class
        (:class:`~.deep.CoarseReading`; None when no patch is, or when it was not asked for):
        a patch it reads beyond the top class has that defocus (:meth:`defocus_map_um`)
    """

    levels: np.ndarray
    probabilities: np.ndarray
    certainty: np.ndarray
    grid: PatchGrid
    weights_sha256: str = ""
    scale: float = 1.0
    defocus_um: tuple = tuple(2.0 * lv for lv in range(N_CLASSES - 1))
    optics: dict = field(default_factory=lambda: CANONICAL.as_dict())
    coarse: object = None
    #: how the map's pixel was chosen (``map_pixel_um="auto"``: :func:`.map_choice.note`), else ""
    choice: str = ""

    @property
    def background(self) -> np.ndarray:
        return self.levels == BACKGROUND

    def deep_um(self) -> np.ndarray | None:
        """(rows, cols) float32: the defocus (um) the coarse reading gives the top-class patches
        it reads beyond the top class, NaN elsewhere; None when there is none (:mod:`.deep`)."""
        from .deep import deep_um_on_map

        return deep_um_on_map(self.coarse, self.grid)

    def defocus_map_um(self) -> np.ndarray:
        """(rows, cols) float32 defocus in um of every patch (NaN for background); beyond the
        top class, the coarse reading's (:meth:`deep_um`)."""
        table = np.append(np.asarray(self.defocus_um, np.float32), np.nan)
        um = table[np.clip(self.levels, 0, BACKGROUND)]
        deep = self.deep_um()
        return um if deep is None else np.where(np.isnan(deep) | self.background, um, deep).astype(np.float32)

    def focus_score(self) -> float:
        """Whole-image defocus level: certainty-weighted mean level of the non-bg patches
        (Yang et al. 2018). NaN when every patch is background."""
        return self.focus_score_and_certainty()[0]

    def focus_score_and_certainty(self) -> tuple[float, float]:
        """(score, certainty): score as in :meth:`focus_score`; certainty = the mean
        certainty of the non-bg patches (0 when all are bg)."""
        from ..models.delpnet import focus_score

        return focus_score(self.levels, self.certainty, BACKGROUND)

    def focus_defocus_um(self) -> float:
        """The whole-image focus score as a defocus in um of this image's objective."""
        score = self.focus_score()
        if score != score:
            return float("nan")
        return float(np.interp(score, np.arange(len(self.defocus_um)), self.defocus_um))

    def to_rows(self) -> list[dict]:
        """One dict per patch (row-major) for a CSV: row, col, y0, x0 (native pixels), level
        (int or "bg"), defocus_um (beyond the top class: the coarse reading's), certainty,
        p0..p10, pbg."""
        corners = self.grid.corners()
        um = self.defocus_map_um()
        rows = []
        for i in range(self.levels.shape[0]):
            for j in range(self.levels.shape[1]):
                lv = int(self.levels[i, j])
                d = {
                    "row": i,
                    "col": j,
                    "y0": int(round(corners[i, j, 0] * self.scale)),
                    "x0": int(round(corners[i, j, 1] * self.scale)),
                    "level": "bg" if lv == BACKGROUND else lv,
                    "defocus_um": "" if lv == BACKGROUND else round(float(um[i, j]), 4),
                    "certainty": float(self.certainty[i, j]),
                }
                for c in range(N_CLASSES - 1):
                    d[f"p{c}"] = float(self.probabilities[i, j, c])
                d["pbg"] = float(self.probabilities[i, j, BACKGROUND])
                rows.append(d)
        return rows


def certainty_of(probabilities: np.ndarray) -> np.ndarray:
    """1 - entropy / log(n_classes) of softmax probabilities (last axis), in [0, 1]."""
    from ..models.delpnet import certainty

    return certainty(probabilities)


#: the fewest native pixels per map pixel: the map enlarges an image at most 4x a side
MIN_MAP_SCALE = 0.25


def map_scale(optics: Optics | None) -> float:
    """Native pixels per map pixel for an image taken with ``optics`` (None: the training
    objective); :func:`map_frame`'s first value, without measuring the class table. A
    ValueError when the map would enlarge the image more than ``1 / MIN_MAP_SCALE`` times."""
    optics = optics if optics is not None else CANONICAL
    scale = map_sampling_scale(CANONICAL, optics)
    if scale < MIN_MAP_SCALE:
        # a pixel this coarse for the objective (a wrong pixel size or NA, most often) would have
        # the map read an image enlarged 1/scale times a side: minutes of work on content finer
        # than any pixel the camera recorded
        raise ValueError(f"pixel {optics.pixel_um:g} um is {1 / scale:.1f}x coarser than the defocus map reads "
                         f"({optics.pixel_um * scale:.3g} um at NA {optics.na:g}, {optics.wavelength_nm:g} nm; "
                         f"at most {1 / MIN_MAP_SCALE:g}x); check the pixel size and the NA")
    return scale


def check_map_size(shape, scale: float) -> None:
    """A one-line ValueError when an image of ``shape`` holds no DelpNet patch once resampled to
    the map's sampling (``scale`` native px per map px; the canonical shape both the image in
    memory and a big image's block form read), so the two refuse the same images."""
    if min(canonical_shape(shape, scale)) < PATCH:
        need = int(math.ceil(PATCH * scale))
        raise ValueError(f"image is {shape[-2]}x{shape[-1]} pixels; DelpNet needs at least {need}x{need} at this "
                         "pixel size to map it: take a larger region (refocus restores a smaller crop, mirrored to "
                         "one patch)")


def is_training_objective(optics: Optics) -> bool:
    """True for DelpNet's training objective read at its own sampling (a per-level table aside,
    and ``map_pixel_um`` when it asks for that same sampling): its classes are exactly 2 L um."""
    return dataclasses.replace(map_key(CANONICAL, optics), defocus_table_um=None) == CANONICAL


def map_frame(optics: Optics | None, *, weights=None):
    """``(scale, defocus_um)`` of the map for an image taken with ``optics`` (None: the
    training objective): native pixels per canonical pixel, and each class's defocus (um) as
    DelpNet (``weights``: its .safetensors file; None: the shipped one) reads it."""
    from .class_table import response_table

    if optics is None:
        optics = CANONICAL
    scale = map_scale(optics)  # first: an impossible sampling is an error before the table's work
    table = tuple(2.0 * lv for lv in range(N_CLASSES - 1)) if is_training_objective(optics) else \
        response_table(optics, weights=weights)
    return scale, table


def iter_patch_probabilities(model, patches, device, batch_size: int = BATCH, tta: bool = False, *,
                             report=None):
    """DelpNet softmax of ``(n, 84, 84)`` patches in raw counts, batch by batch (a generator).

    ``tta=True`` averages the softmax over the 8 flips/rotations of every patch (defocus blur
    has no orientation, so each is an equally valid view; 8x the compute). Yields
    :class:`Progress` per batch; returns an ``(n, 12)`` float32 array. On an accelerator's
    out-of-memory error the batches are halved, then the CPU takes over (``report`` is told).
    """
    probs, _ = yield from _iter_probabilities(_model_on(model, device), lambda index: patches[index[0]:index[-1] + 1],
                                              patches.shape[0], device, batch_size, tta, report=report)
    return probs


def _model_on(model, device):
    """``device -> model``: ``model`` on its own device; on another one (the CPU after an
    out-of-memory fallback) the same weights file through the loader's cache."""
    import torch

    def on(dev):
        if torch.device(dev) == torch.device(device):
            return model
        source = getattr(model, "weights_file", None)
        if source is None:
            raise RuntimeError(f"DelpNet ran out of memory on {device} and has no weights file to reload on {dev}")
        return _model(source, dev)

    return on


def _iter_probabilities(model_on, take, n: int, device, batch_size: int, tta: bool, sigma=None, report=None,
                        stage: str = "defocus map"):
    """``(probabilities (n, 12) float32, background (n,) bool or None)`` of patches taken a
    batch at a time (``take(index)``: the ``(b, 84, 84)`` patches of an index range), so only
    one batch of patches exists at once; ``sigma``: apply :func:`background_rule` per batch.

    ``model_on(device)`` gives the network on a device. The batches go through
    :func:`~napari_refocus.core.devices.run_chunked`: on an accelerator's out-of-memory error a
    batch is retried with half as many patches, down to one, then on the CPU (``report``, a
    DeviceReport, records both). Progress counts patches."""
    import torch

    from ..core.devices import run_chunked
    from ..models.delpnet import mean_softmax

    probs = np.zeros((n, N_CLASSES), np.float32)
    bg = None if sigma is None else np.zeros(n, bool)

    def work(start, stop, dev):
        batch = take(np.arange(start, stop))
        with torch.inference_mode():
            p = mean_softmax(model_on(dev), batch / SCALE, dev, tta).numpy()
        return p, (None if sigma is None else background_rule(batch, sigma))

    total = max(1, n)
    yield Progress(0, total, stage)
    done = 0
    for stop, (p, b) in run_chunked(work, n, batch_size=batch_size, device=device, report=report):
        probs[done:stop] = p
        if bg is not None:
            bg[done:stop] = b
        done = stop
        yield Progress(done, total, stage)
    return probs, bg


def iter_defocus_map(image, *, weights=None, device="auto", stride: int = STRIDE,
                     batch_size: int = BATCH, tta: bool = False, optics: Optics | None = None,
                     normalise: bool = True, stats=None, report=None, beyond_top: bool = True):
    """Generator form of :func:`defocus_map`: yields Progress per batch, returns a DefocusMap.

    ``stats``: :func:`.canonical.canonical_stats` of the whole image, when ``image`` is a part of it.
    ``report``: a :class:`~napari_refocus.core.devices.DeviceReport` told when an accelerator's
    out-of-memory error halved the batches or moved the network to the CPU."""
    from ..core.devices import resolve_device

    arr = as_image(image, name="image", ndim=2, allow_negative=True)
    arr, canvas = filled(arr) if stats is None else (arr, None)  # stats given: a block of a big image, as it is
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    choice = ""
    if is_auto(optics):  # read both ways on the central crop, keep the surer reading (.map_choice)
        optics, dm, scores = yield from iter_choose(arr, optics, iter_defocus_map, weights=weights, device=device,
                                                    stride=stride, batch_size=batch_size, tta=tta,
                                                    normalise=normalise, stats=stats, report=report,
                                                    beyond_top=beyond_top)
        choice = note(optics, scores)
        if dm is not None:  # the crop was the whole image: that reading is its map
            return on_canvas(dataclasses.replace(dm, choice=choice), canvas)
    weights = map_weights(weights, optics)  # the network of this sampling (canonical.map_weights)
    scale, table = map_frame(optics, weights=weights)
    check_map_size(arr.shape, scale)
    # the canonical image, padded to the patch grid: the patches are read through a strided
    # view of it, a batch at a time
    padded, grid, stats = canonical_padded(arr, scale, stride=stride, normalise=normalise, stats=stats)
    release_free_memory(pixels=arr.size)  # glibc may keep a freed unpadded canonical image (~4 B/px) otherwise
    dev = resolve_device(device)
    model = _model(weights, dev)
    if report is not None:
        report.note(getattr(model, "device_note", None))  # loaded onto the CPU: out of memory on dev
    view = patch_view(padded, grid, 0)
    n = grid.shape[0] * grid.shape[1]
    flat, bg = yield from _iter_probabilities(lambda d: model if d == dev else _model(weights, d),
                                              lambda index: take_patches(view, index), n, dev, batch_size, tta,
                                              stats[2] if normalise else None, report=report)
    del view, padded
    release_free_memory(pixels=arr.size)  # the batches' activations: the next stage's peak is not on top of them
    p = flat.reshape(*grid.shape, N_CLASSES)
    levels = p.argmax(-1).astype(np.int64)
    if normalise:
        levels[bg.reshape(grid.shape)] = BACKGROUND
    coarse = None
    if beyond_top and (levels == TOP).any():
        coarse = yield from _iter_coarse(arr, scale=scale, stats=stats if normalise else None, optics=optics,
                                         model_on=lambda d: model if d == dev else _model(weights, d), device=dev,
                                         batch_size=batch_size, tta=tta, report=report, levels=levels, grid=grid,
                                         table=table, weights=weights)
    return on_canvas(DefocusMap(levels=levels, probabilities=p, certainty=certainty_of(p), grid=grid,
                                weights_sha256=getattr(model, "sha256", ""), scale=scale, defocus_um=table,
                                optics=(optics or CANONICAL).as_dict(), coarse=coarse, choice=choice), canvas)


def _iter_coarse(arr, *, scale, stats, optics, model_on, device, batch_size, tta, report, levels, grid, table,
                 weights=None):
    """The :class:`~.deep.CoarseReading` of ``arr`` (None if its coarse image is smaller than a
    patch): DelpNet on the canonical image at :data:`~.deep.COARSE` x the map's pixel, with the
    map's intensity statistics ``stats`` (None: raw counts)."""
    from .deep import COARSE, CoarseReading, coarse_table, deep_patches

    # the coarse grid (.deep.coarse_grid_of) is the patch grid of the coarse canonical image
    padded, cgrid, _ = canonical_padded(arr, COARSE * scale, stride=STRIDE, normalise=stats is not None, stats=stats)
    if cgrid is None:
        return None
    ctable = coarse_table(optics, weights=weights)
    view = patch_view(padded, cgrid, 0)
    n = cgrid.shape[0] * cgrid.shape[1]
    flat, bg = yield from _iter_probabilities(model_on, lambda index: take_patches(view, index), n, device,
                                              batch_size, tta, None if stats is None else stats[2], report=report,
                                              stage="defocus beyond the top class")
    del view, padded
    clevels = flat.reshape(*cgrid.shape, N_CLASSES).argmax(-1).astype(np.int64)
    if bg is not None:
        clevels[bg.reshape(cgrid.shape)] = BACKGROUND
    deep = deep_patches(clevels, ctable, levels, table, coarse_grid=cgrid, map_grid=grid)
    return CoarseReading(grid=cgrid, scale=COARSE * scale, levels=clevels, deep=deep, defocus_um=ctable)


def defocus_map_array(image, *, weights=None, device="auto", stride: int = STRIDE, batch_size: int = BATCH,
                      progress=None, tta: bool = False, optics: Optics | None = None,
                      normalise: bool = True, beyond_top: bool = True) -> DefocusMap:
    """Defocus class (0..10, 11 = background) and defocus (um) of every patch of a 2-D image.

    Parameters
    ----------
    image : (Y, X) array of intensities in any dtype or scale (see the module doc).
    weights : None for the shipped ``weights/delpnet.safetensors``, or a .safetensors path.
    device : "auto" | "cpu" | "cuda" | torch.device.
    stride : grid step in map pixels (1..84; 42 = half a patch, the LB-DVD default).
    batch_size : patches per forward pass (halved on an accelerator's out-of-memory error, then
        the CPU is used).
    progress : optional callback receiving :class:`Progress`.
    tta : average DelpNet over the 8 flips/rotations of each patch (8x slower).
    optics : the objective the image was taken with (None: the training objective). The
        image is resampled to DelpNet's sampling and the classes are expressed as defocus of
        this objective (``DefocusMap.defocus_um``).
    normalise : map intensities to the canonical scale first (default; False reads them as
        raw 16-bit counts, as the paper did, for reproducing it).
    beyond_top : where patches are at the top class, read the image again at half its sampling
        and give the patches read beyond the top class that defocus (``DefocusMap.coarse``,
        :mod:`.deep`; up to ~36 um at the paper's objective instead of 20).

    Returns
    -------
    DefocusMap
    """
    return drain(iter_defocus_map(image, weights=weights, device=device, stride=stride, batch_size=batch_size,
                                  tta=tta, optics=optics, normalise=normalise, beyond_top=beyond_top), progress)


def choose_map_pixel(image, optics: Optics, **map_kwargs):
    """``(optics, map or None, {reading: score})``: ``map_pixel_um="auto"`` chosen for a 2-D ``image``
    (numpy, dask or zarr: only its central crop is read) with :func:`iter_defocus_map`'s keywords
    (:func:`.map_choice.iter_choose`)."""
    return drain(iter_choose(image, optics, iter_defocus_map, **map_kwargs))


#: the in-memory form under its old name (``napari_refocus.defocus_map`` also takes big images)
defocus_map = defocus_map_array
