"""A method's output through the never-worse gate (:mod:`.gate`), in memory and block by block.

The methods that restore the whole image without reading a defocus map of their own (the
learned generators, ``rl``) are gated the same way: DelpNet's map of the input first, then the
method, then ``output = input + w * (restored - input)`` written into the output a strip at a
time (:func:`iter_gated`). A block of a big image reads the map's patches on the whole image's
global grid with the whole image's canonical statistics (:func:`block_gate`), so it gets the
same weights as the image in memory. (lbdvd gates inside its own run: it has a map already and
also deconvolves a patch only as far as the evidence supports.)
"""

from __future__ import annotations

import math

import numpy as np

from ..core.optics import Optics


def read(source, box) -> np.ndarray:
    """Pixels ``box = (y0, y1, x0, x1)`` of ``source`` as float32."""
    return np.asarray(source[box[0]:box[1], box[2]:box[3]], dtype=np.float32)


def resampled(source, box, *, full_shape, out_shape) -> np.ndarray:
    """Pixels ``box`` of ``source`` (``full_shape``) resampled to ``out_shape``, from the source's
    window those pixels read."""
    from ..core.resample import input_window, resample_window

    if tuple(full_shape) == tuple(out_shape):
        return read(source, box)
    need = input_window(full_shape=full_shape, out_shape=out_shape, out_box=box)
    return resample_window(read(source, need), full_shape=full_shape, out_shape=out_shape, out_box=box,
                           region_origin=(need[0], need[2]))


def blend_into(restored, base, w) -> np.ndarray:
    """``base + w * (restored - base)`` (the gate's blend, :func:`.gate.blend`), written into
    ``restored`` (float32, the same numbers as the gate's expression)."""
    restored -= base
    restored *= w
    restored += base
    return restored


def iter_gated(image, restore, *, device, report, optics=None, map_stats=None, at_least_um: float = 0.0):
    """Generator: ``restore(image)`` (a generator returning the restored float32 image, the
    input's size or ``r`` x it) gated by DelpNet's map of ``image`` at ``optics``.

    The map comes first, before the output exists, so that its canonical image (4 B/px) and
    DelpNet's batches never sit on top of the restored image (m-deblurgan's x2 float32: 16 B/px)
    and the heap the method left (BENCHMARKS.md "Memory", stop 35). An image smaller than one
    patch at its sampling is judged on the image mirrored out to one (:func:`gate_small`).
    ``map_stats``: the whole image's canonical statistics when ``image`` is a part; ``at_least_um``:
    a threshold above the objective's (:func:`.gate.threshold_um`)."""
    from ..core.memory import release_free_memory
    from .gate import iter_image_gate, map_fits

    if not map_fits(np.shape(image), optics):  # below one patch: its map is read mirrored, after the method
        out = yield from restore(image)
        return (yield from gate_small(image, out, device=device, report=report, optics=optics, stats=map_stats,
                                      at_least_um=at_least_um))
    gated = yield from iter_image_gate(image, device=device, optics=optics, stats=map_stats, report=report,
                                       at_least_um=at_least_um)
    out = yield from restore(image)
    release_free_memory(pixels=int(np.prod(np.shape(image))))  # the method's heap, before the blend's strips
    return gate_in_place(image, out, gated, report=report)


#: bytes of float32 output blended at a time by :func:`gate_in_place`
BLEND_STRIP_BYTES = 2 << 20


def gate_in_place(image, out, gated, *, report):
    """``out`` (the method's output for ``image``) gated by ``gated = (map, gate)``
    (:func:`.gate.iter_image_gate` of ``image``): :func:`.gate.blend` written into ``out`` a strip
    of rows at a time, the weights, the share changed and the rule recorded in
    ``report.extras["gate"]`` (the same numbers; no whole-size temporaries: the weights are
    recorded as a lazy :class:`~.gate.GateWeights`, made again when read)."""
    from .gate import CHANGED_ABOVE, WEIGHT_ROWS, GateWeights, record

    dmap, gate = gated
    shape = tuple(int(n) for n in np.shape(image))
    weights = GateWeights(gate, shape, round(out.shape[0] / shape[0]))
    changed = 0
    # strips of ~2 MB of output: each holds its weights and the input resampled to it (float32, as
    # wide as the output), on top of the whole result (WEIGHT_ROWS rows of m-deblurgan's 6144-px x2
    # output were 6 MB each; smaller strips: ~1 B/px less at 3072^2, BENCHMARKS.md "Memory", stop 35)
    rows = min(WEIGHT_ROWS, max(1, BLEND_STRIP_BYTES // (4 * max(1, out.shape[1]))))
    for a in range(0, out.shape[0], rows):
        box = (a, min(out.shape[0], a + rows), 0, out.shape[1])
        w = weights.rows(box[0], box[1])
        changed += int(np.count_nonzero(w > CHANGED_ABOVE))
        blend_into(out[box[0]:box[1]], resampled(image, box, full_shape=shape, out_shape=out.shape), w)
    record(report, weights, gate.threshold_um, dmap.weights_sha256,
           changed_fraction=changed / weights.size if weights.size else 0.0)
    return out


def gate_small(image, out, *, device, report, optics=None, stats=None, at_least_um: float = 0.0):
    """A generator: the never-worse gate of ``out`` for an image smaller than one DelpNet patch at its
    sampling (a crop of one cell): the map is read on the image mirrored out to one patch
    (:func:`.gate.mirror_padding`; mirroring keeps its blur), and the weights of the image's own
    pixels gate ``out`` (``stats``: the whole image's canonical statistics, as for
    :func:`gate_in_place`). Without it such a crop came back changed even when in focus. An
    image too long to mirror (:data:`.gate.MIRROR_MAX_PIXELS`) is returned as it came in."""
    from . import gate as g

    img = np.asarray(image)
    pads = g.mirror_padding(img.shape, optics)
    if pads is None:  # a line scan, say: no map can judge it
        w = np.zeros(out.shape, np.float32)
        g.record(report, w, g.threshold_um(optics or Optics(), at_least_um))
        report.fallbacks.append("never_worse could not read DelpNet's map (the image is thinner than one patch and "
                                "too long to mirror out to one): the image is returned as it came in")
        return g.blend(img, out, w)
    padded = np.pad(img, pads, mode="symmetric")
    dmap, gate = yield from g.iter_image_gate(padded, device=getattr(report, "device", device), optics=optics,
                                              stats=stats, report=report, at_least_um=at_least_um)
    r = int(round(out.shape[0] / img.shape[0]))
    w = g.unmirror(gate.weights(padded.shape, r), pads, img.shape, r)
    g.record(report, w, gate.threshold_um, dmap.weights_sha256)
    report.fallbacks.append(f"never_worse read DelpNet's map on the image mirrored to one patch "
                            f"({padded.shape[0]}x{padded.shape[1]} px): the image is smaller than one patch at its "
                            "pixel size")
    return g.blend(img, out, w)


def block_gate(*, never_worse: bool, device, map_stats, upscale: int, optics, at_least_um: float = 0.0):
    """``gate(source, bounds, restored) -> gated block`` (None when ``never_worse`` is off):
    DelpNet on the rectangle of the map's global grid (on the canonical image, at any sampling:
    :mod:`.canonical_blocks`) whose patches the block's weights read, as in memory;
    ``optics``: those of the gate's map; ``map_stats``: the canonical image's statistics.
    ``at_least_um``: as for :func:`iter_gated`. ``gate.halo``: the context (input pixels beyond a
    block, each side) the gate reads."""
    if not never_worse:
        return None
    from . import gate as g
    from . import lbdvd_blocks as lb
    from .canonical_blocks import CanonicalView, map_grid, map_patches
    from .defocus import CANONICAL, map_frame

    scale, table = map_frame(optics)
    beyond = g.defocused_classes(table, optics or CANONICAL, at_least_um)
    r = int(upscale)
    state = {}

    def gate(source, bounds, restored):
        from .canonical import delpnet, map_weights

        if "model" not in state:  # the network once per run, on the first block
            state["model"] = delpnet(map_weights(None, optics), device)
        native = tuple(int(n) for n in source.shape[-2:])
        grid = map_grid(native, scale=scale)
        box = tuple(int(b) * r for b in bounds)
        kw = {"upscale": r, "scale": scale, "patch": grid.patch, "stride": grid.stride}
        rows, cols = g.neighbour_span(g.patch_span(box, grid.shape, **kw), grid.shape)
        view = CanonicalView(source, scale=scale, stats=map_stats)
        probs, levels = map_patches(view, grid, rows, cols, model=state["model"], device=device)
        v, c = g.patch_evidence(probs, levels, beyond)
        w = g.pixel_weights(v, c, grid_shape=grid.shape, bounds=box, offset=(rows[0], cols[0]), **kw)
        base = resampled(source, box, full_shape=native, out_shape=(native[0] * r, native[1] * r))
        return blend_into(restored, base, w)

    # the weights' reach (gate.weights_reach); resampling adds its filter
    gate.halo = max(lb.HALO, math.ceil(g.weights_reach(scale) + max(scale, 1.0) + 2))
    return gate


def map_stats_of(sample, *, optics, sample_stride: int = 1):
    """The canonical statistics of DelpNet's map at ``optics`` (lbdvd's own map or a gate's), once
    per image, from ``sample`` (the whole image, or every ``sample_stride``-th row and column)."""
    from .canonical_blocks import sample_stats
    from .defocus import map_scale

    return sample_stats(sample, scale=map_scale(optics), sample_stride=sample_stride)
