"""The big-image executor: any :class:`~napari_refocus.methods.base.Method` block by block.

The image (numpy, dask, zarr or tifffile's zarr store: anything with ``shape``, ``dtype`` and
2-D slicing) is cut into output blocks of ``block`` x ``block`` pixels (:func:`block_bounds`).
Each block is restored from its pixels plus the method's ``halo`` of context, clipped at the
true image borders (not mirrored), so the method meets the image borders exactly as it does in
memory, and cropped back to the pixels it owns. How one block is restored is the method's
business, never looked up by name here:

* a method with its own exact block form (``Method.block_runner``; lbdvd's global patch grid,
  :mod:`napari_refocus.methods.lbdvd_blocks`) gives a function of the source and the block's
  bounds; its blocks equal the in-memory result;
* any other method runs in memory on the block plus its halo. Its results match the in-memory
  ones up to the differences any tiling of a network or of an iterative deconvolution makes near
  block edges (measured in ``tests/test_chunked.py``).

Statistics a method needs from the whole image (``Method.image_stats``: the learned methods'
intensity normalisation) are computed once per image and handed to every block: from the whole
image when it has at most :data:`STATS_MAX_PIXELS` pixels (then they equal the in-memory run's),
above that from the strided subsample ``image[::s, ::s]`` with the smallest ``s`` that keeps it
under that size, read block by block.

Two ways to run, one block function:

* :func:`lazy_method`: a dask array built with :func:`dask.array.map_overlap` (depth = halo,
  ``boundary="none"``, the source a graph input); only the blocks that are read are computed
  (napari's lazy layers). An ``upscale`` x method's blocks are ``upscale`` x larger.
* :func:`iter_method_blocks`: the blocks one after another, each read straight from the source
  with its halo (for writers such as :func:`napari_refocus.io.write.refocus_to_tiff`): memory
  bounded by one block.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .core.progress import Progress, cancel_scope, check_cancelled, current_token, drain
from .core.tiling import Region
from .methods.base import Method, RunReport, window_runner
from .methods.padding import canvas_restore, sample_filled
from .methods.registry import get_method

#: 48 strides of 42 px and 126 TIFF tiles of 16 px
DEFAULT_BLOCK = 2016
#: images up to this many pixels give their whole-image statistics exactly (16 Mpx)
STATS_MAX_PIXELS = 16 * 1024 * 1024


def block_bounds(image_shape, block: int = DEFAULT_BLOCK):
    """``[(y0, y1, x0, x1), ...]``: the output blocks of an image, row by row."""
    h, w = (int(n) for n in image_shape[-2:])
    return [(y0, min(h, y0 + block), x0, min(w, x0 + block))
            for y0 in range(0, h, block) for x0 in range(0, w, block)]


def balanced_block(image_shape, multiple: int = 1, largest: int = DEFAULT_BLOCK) -> int:
    """A block side (a multiple of ``multiple``, at most ``largest``, at least half of it) whose
    last block along Y and X is as wide as it can be: with multiples of 42, ``4096`` px give
    blocks of 1386 + 1386 + 1324 rather than 2016 + 2016 + 64. A thin last block sees little context, and a method that needs
    a minimum size (DelpNet's 84-px patches at the image's sampling) may refuse it."""
    sides = [int(n) for n in image_shape[-2:]]
    top = largest // multiple * multiple
    candidates = range(top, max(multiple, largest // 2) - 1, -multiple) if top >= multiple else [multiple]

    def thinnest(b):
        return min(n - (-(-n // b) - 1) * b for n in sides)  # the last block's width, per axis

    return max(candidates, key=lambda b: (thinnest(b), b))


def in_memory_block_runner(method: Method, params, *, device, **inputs):
    """The default block form: ``restore(source, bounds)`` runs ``method.run`` in memory on the
    block plus ``method.halo`` pixels of context (clipped to the image) and crops the result."""
    return window_runner(lambda region: drain(method.run(region, params, device=device, report=RunReport(device),
                                                         **inputs)),
                         halo=method.halo, upscale=method.upscale)


def whole_image_sample(source, block: int = DEFAULT_BLOCK, max_pixels: int = STATS_MAX_PIXELS):
    """``(image[::s, ::s] as float32, s)``: the whole image (``s = 1``) when it has at most
    ``max_pixels`` pixels, else the smallest stride ``s`` that keeps the sample under that;
    read one block at a time."""
    h, w = (int(n) for n in source.shape[-2:])
    s = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    sample = np.empty((-(-h // s), -(-w // s)), np.float32)
    step = block // s * s or s  # blocks whose starts are multiples of s keep the phase
    for y0, y1, x0, x1 in block_bounds((h, w), step):
        part = np.asarray(source[y0:y1, x0:x1], dtype=np.float32)[::s, ::s]
        sample[y0 // s:y0 // s + part.shape[0], x0 // s:x0 // s + part.shape[1]] = part
    return sample, s


@dataclass
class BlockRun:
    """One method with parsed parameters, ready to run on the blocks of one big image.

    ``inputs``: the run-time inputs computed once from the whole image (``Method.image_stats``)
    and given to every block; ``restore(source, bounds)``: the block function.
    """

    source: Any
    method: Method
    params: Any
    device: Any
    block: int
    restore: Callable
    inputs: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def bounds(self):
        return block_bounds(self.source.shape, self.block)

    def iter_blocks(self):
        """Yield ``(Progress, (y0, y1, x0, x1), restored block)``, each read straight from the source."""
        bounds = self.bounds
        for k, b in enumerate(bounds):
            out = self.restore(self.source, b)
            yield Progress(k + 1, len(bounds), f"{self.method.name}: blocks"), b, out

    def lazy(self):
        """A dask array (``upscale`` x the source) that computes each block when it is read."""
        import dask.array as da

        h, w = (int(n) for n in self.source.shape[-2:])
        # a block form that knows its reach (it may depend on the parameters) says so in restore.halo
        b, halo, r = self.block, int(getattr(self.restore, "halo", self.method.halo)), int(self.method.upscale)
        src = self.source if _is_dask(self.source) else da.from_array(self.source, chunks=(b, b))
        src = src.rechunk((b, b))
        axes = src.chunks
        # dask shares context between neighbouring chunks only: each must hold >= halo pixels,
        # so a short last chunk is padded (the padding is never read: Region clips to the image)
        depth, padded = {}, []
        for axis, chunks in enumerate(axes):
            depth[axis] = halo if len(chunks) > 1 else 0
            if depth[axis] and b < halo:
                raise ValueError(f"block ({b}) must be at least the {self.method.name} halo ({halo} px)")
            padded.append(chunks[:-1] + (max(chunks[-1], depth[axis]),))
        pad = [(0, p[-1] - c[-1]) for p, c in zip(padded, axes)]
        if any(n for _, n in pad):
            src = da.pad(src, pad, mode="constant").rechunk(tuple(padded))
        starts = [np.cumsum((0,) + c) for c in axes]
        restore = self.restore
        # dask runs the blocks in its own threads: they check the cancel token that was current
        # where the graph was built, so Cancel stops a block at its next checkpoint
        token = current_token()

        def compute(chunk, block_id=None):
            i, j = block_id
            bounds = (int(starts[0][i]), int(starts[0][i + 1]), int(starts[1][j]), int(starts[1][j + 1]))
            origin = (bounds[0] - depth[0] if i else 0, bounds[2] - depth[1] if j else 0)
            with cancel_scope(token):
                check_cancelled()
                return restore(Region(chunk, origin, (h, w)), bounds)

        # a fresh name: dask need not hash the closure (and the parameters in it) to name the graph
        return da.map_overlap(compute, src, depth=depth, boundary="none", trim=False, allow_rechunk=False,
                              chunks=tuple(tuple(n * r for n in c) for c in axes), dtype=np.float32,
                              meta=np.empty((0, 0), np.float32), name=f"{self.method.name}-{uuid.uuid4().hex}")


def _is_dask(image) -> bool:
    return type(image).__module__.startswith("dask")


def prepare(source, method, params=None, *, device="auto", block: int = DEFAULT_BLOCK) -> BlockRun:
    """A :class:`BlockRun` of ``method`` (a name or a Method) on the 2-D ``source``.

    ``params``: the method's parsed parameters, or a dict of keywords to parse (None: the
    defaults). Whole-image statistics (``method.image_stats``) are computed here, once.
    """
    from .core.devices import resolve_device

    m = get_method(method)
    if params is None or isinstance(params, dict):
        params = m.parse(**(params or {}))
    if len(source.shape) != 2:
        raise ValueError(f"a big image must be 2-D (y, x), got shape {source.shape}")
    if block < 1 or block % m.block_multiple:
        raise ValueError(f"block ({block}) must be a positive multiple of {m.block_multiple} for {m.name}")
    dev = resolve_device(device)
    inputs, notes = {}, []
    # map_pixel_um="auto": chosen once for the whole image, before anything reads its sampling
    params, chose = resolve_params(source, m, params, device=dev)
    notes += [chose] if chose else []
    canvas = False
    if m.image_stats is not None:
        sample, s = whole_image_sample(source, block)
        sample, canvas = sample_filled(sample, s)  # an empty canvas is not data (core.padding)
        inputs = dict(m.image_stats(sample, params=params, sample_stride=s))
        where = "the whole image" if s == 1 else f"every {s}-th row and column of the image"
        notes.append(f"{', '.join(inputs)} computed once, from {where}, for all blocks")
    if m.block_runner is not None:
        restore = m.block_runner(params, device=dev, **inputs)
    else:
        restore = in_memory_block_runner(m, params, device=dev, **inputs)
    if canvas:
        restore = canvas_restore(restore, halo=int(getattr(restore, "halo", m.halo)), upscale=m.upscale)
        notes.append("empty canvas (exact zeros) found: each block reads it filled by reflection and gives it back")
    elif m.canvas_per_block:
        # no whole-image sample to look in (a method without image_stats): reading one only for this
        # would read a lazy image twice, so each block looks in its own window (128 px wider: a 96-px
        # halo -> 224 px, 25 % more pixels read per 2016-px block) and fills what it finds there, as the
        # image in memory is filled
        restore = canvas_restore(restore, halo=int(getattr(restore, "halo", m.halo)), upscale=m.upscale)
        notes.append("each block looks for an empty canvas (exact zeros) in its window, and reads it filled")
    return BlockRun(source, m, params, dev, int(block), restore, inputs, notes)


def resolve_params(source, method: Method, params, *, device):
    """``(params, note)`` with ``params.optics.map_pixel_um="auto"`` chosen once for the whole image
    ``source`` from its central crop, with the map keywords the method's in-memory run uses, so that
    its blocks equal the image in memory (DelpNet's own methods read with their parameters; the
    generators' never-worse gate with the defaults); ``params`` unchanged otherwise."""
    from .methods.defocus import choose_map_pixel
    from .methods.map_choice import is_auto, note

    optics = getattr(params, "optics", None)
    if not is_auto(optics):
        return params, ""
    kwargs = {}
    if "delpnet" in method.weights:
        kwargs = {k: getattr(params, k) for k in ("weights", "stride", "tta", "normalise", "beyond_top")
                  if hasattr(params, k)}
    chosen, _, scores = choose_map_pixel(source, optics, device=device, **kwargs)
    return dataclasses.replace(params, optics=chosen), note(chosen, scores)


def iter_method_blocks(source, method, *, device="auto", block: int = DEFAULT_BLOCK, **params):
    """A method (name or Method) on a big image, one block at a time (generator).

    Yields ``(Progress, (y0, y1, x0, x1), restored float32 block)``; the block is ``upscale`` x
    larger than its bounds for methods that upscale. Keywords are the method's parameters.
    """
    yield from prepare(source, method, params, device=device, block=block).iter_blocks()


def lazy_method(source, method, *, device="auto", block: int = DEFAULT_BLOCK, **params):
    """A dask array that computes a method (name or Method) on ``source`` block by block when read.

    The result is ``upscale`` x larger than ``source``, chunked by output block. Keywords are
    the method's parameters.
    """
    return prepare(source, method, params, device=device, block=block).lazy()
