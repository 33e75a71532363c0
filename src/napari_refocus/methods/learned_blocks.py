"""The learned generators on any window of an image: in memory (the whole image) and block by
block (a big image) with the same numbers.

One function, :func:`iter_restore_window`, makes the output pixels ``out_box`` of a whole image
``source`` (anything sliced in the whole image's coordinates) from exactly what they depend on:

* at the image's own sampling, the network's tiles on the whole image's tile grid
  (:func:`napari_refocus.models.predict.iter_predict_window`);
* at the training sampling (``scale`` != 1, :func:`.learned.resample_in_restore_out`): the
  resampled image on the windows the tiles read, the tiles on the *resampled* image's grid, and
  the restored residual resampled back, each by :func:`napari_refocus.core.resample.resample_window`
  (bit-identical to resampling the whole image).

The in-memory run is this function with the whole image as the window; the block form
(:func:`block_runner`) calls it per block and gates it with DelpNet on the image's global patch
grid (:mod:`.gate`). On the CPU a block equals the same pixels of the in-memory result bit for
bit; :func:`halo` bounds how far beyond its bounds a block reads.
"""

from __future__ import annotations

import math

from ..core.progress import drain
from ..core.tiling import Region
from ..models.stitch import TileCache
from .gated import block_gate, read, resampled


def _union(a, b):
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def iter_restore_window(model, source, *, scale: float, stats, out_box=None, stage: str, **tiling):
    """Generator: output pixels ``out_box`` (``upscale`` x the image's coordinates; None: all)
    of a generator run on the whole image ``source``, float32 in the input's units.

    ``scale`` (native pixels per training-sampling pixel; 1: the image as it is) and ``stats``
    (the whole native image's ``(lo, scale)``) as in :func:`.learned._make_run`; ``tiling``:
    :func:`~napari_refocus.models.predict.iter_predict_window`'s ``device``, ``tile``, ``overlap``,
    ``batch_size``, ``precision``, ``tta``, ``report``.
    """
    from ..core.resample import input_window, resample_window, resized_shape
    from ..models.predict import iter_predict_window, plan_grid

    native = tuple(int(n) for n in source.shape[-2:])
    if scale == 1.0:
        return (yield from iter_predict_window(model, source, stats=stats, out_box=out_box, stage=stage, **tiling))
    low_shape = resized_shape(native, 1.0 / scale)
    grid = plan_grid(model, low_shape, device=tiling.get("device", "auto"), tile=tiling.get("tile"),
                     overlap=tiling.get("overlap", 0))
    r = grid.upscale
    out_shape = (native[0] * r, native[1] * r)
    restored_shape = (low_shape[0] * r, low_shape[1] * r)
    box = tuple(int(b) for b in (out_box or (0, out_shape[0], 0, out_shape[1])))
    # the restored image's pixels the residual of `box` reads, the resampled image's pixels
    # its tiles (and, for x r, its interpolation to the restored grid) read
    w1 = input_window(full_shape=restored_shape, out_shape=out_shape, out_box=box)
    need = grid.read_box(w1)
    if r == 1:
        need = _union(need, w1)
    else:
        need = _union(need, input_window(full_shape=low_shape, out_shape=restored_shape, out_box=w1))
    low = Region(resampled(source, need, full_shape=native, out_shape=low_shape), (need[0], need[2]), low_shape)
    restored = yield from iter_predict_window(model, low, stats=stats, out_box=w1, stage=stage, **tiling)
    if r == 1:
        base_low = low[w1[0]:w1[1], w1[2]:w1[3]]
    else:
        base_low = resample_window(low.data, full_shape=low_shape, out_shape=restored_shape, out_box=w1,
                                   region_origin=low.origin)
    del low
    restored -= base_low
    residual = resample_window(restored, full_shape=restored_shape, out_shape=out_shape, out_box=box,
                               region_origin=(w1[0], w1[2]))
    del restored
    residual += resampled(source, box, full_shape=native, out_shape=out_shape)  # base + residual
    return residual


def halo(*, tile: int, overlap: int, multiple: int, scale: float) -> int:
    """Input pixels beyond a block's bounds that :func:`iter_restore_window` reads (each side)."""
    from ..models.stitch import round_up

    if tile is None or tile <= 0:
        return 2 ** 31 - 1  # one tile for the whole image: a block needs all of it
    side = round_up(max(tile, 2 * min(overlap, tile // 2) + multiple), multiple)
    if scale == 1.0:
        return side
    return math.ceil((side + 4) * scale + 4 * max(scale, 1.0)) + 4


def block_runner_of(name: str, upscale: int, *, get_generator, training_scale, gate_optics):
    """The ``Method.block_runner`` of the generator ``name``: each block by
    :func:`iter_restore_window` on its bounds, gated (``never_worse``) by DelpNet on the whole
    image's patch grid; ``restore.halo`` is the context it reads (it depends on the tiling).
    ``get_generator(source, device, like=)``, ``training_scale(optics)``, ``gate_optics(optics)``:
    :mod:`.learned`'s (passed in: that module imports this one)."""

    def block_runner(params, *, device, stats=None, map_stats=None):
        from .base import RunReport

        source_name = params.weights or name
        model = get_generator(source_name, device, like=name)
        scale = training_scale(params.optics)
        tiling = {"device": device, "tile": params.tile, "overlap": params.overlap, "batch_size": params.batch_size,
                  "precision": params.precision, "tta": params.tta}
        gate = block_gate(never_worse=params.never_worse, device=device, map_stats=map_stats, upscale=upscale,
                          optics=gate_optics(params.optics))
        cache = TileCache()  # a tile touching several blocks runs once

        def restore(source, bounds):
            from ..models.predict import intensity_stats

            r = int(upscale)
            box = tuple(int(b) * r for b in bounds)
            # without the whole image's statistics (no image_stats hook), the block's own
            own = stats if stats is not None else intensity_stats(read(source, tuple(int(b) for b in bounds)))
            out = drain(iter_restore_window(
                lambda d: model if d == device else get_generator(source_name, d, like=name), source,
                scale=scale, stats=own, out_box=box, stage=f"{name}: tiles", report=RunReport(device),
                cache=cache if stats is not None else None, **tiling))
            return out if gate is None else gate(source, bounds, out)

        restore.halo = halo(tile=params.tile, overlap=params.overlap, multiple=int(getattr(model, "multiple", 1) or 1),
                            scale=scale)
        if gate is not None:
            restore.halo = max(restore.halo, gate.halo)
        return restore

    return block_runner
