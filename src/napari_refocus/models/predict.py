"""Tiled inference shared by the learned generators (CAREamics-like).

* Any 2-D size: the image is normalised per image (percentiles), cut into overlapping tiles
  whose side is a multiple of the network's ``multiple`` (the image mirrored by a margin at its
  border), run a tile (or a batch of tiles) at a time, and blended back with triangular (tent)
  weights: no seams. An image smaller than one tile is run as a single tile. The tiles lie on
  a grid of the whole image (:mod:`napari_refocus.models.stitch`), so any window of the result
  (:func:`iter_predict_window`, a block of a big image) equals the same pixels of the whole.
* Memory: no normalised or mirrored copy of the image; each tile is read, normalised, run and
  added into the output, which is finalised in place. Beyond the output, memory is one tile's
  activations (a batch of ``batch_size`` tiles).
* Upscale: a network whose output is ``r`` x its input (``model.upscale``) gives an image
  ``r`` x larger; the tiles are then blended on the ``r`` x grid.
* Device: "auto" (CUDA > MPS > CPU); CUDA runs under float16 autocast, the CPU in float32
  (``precision="bf16"`` turns on bfloat16 autocast on the CPU: faster, slightly less
  accurate: see BENCHMARKS.md). Out of memory: the tile batch is halved, then the CPU is
  used (:func:`napari_refocus.devices.run_chunked`).
* Intensities: ``(x - p_lo) / (p_hi - p_lo)`` in, the inverse out, so the float32 result is
  in the input's units (the caller casts, e.g. back to uint16).
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..core.progress import Progress
from ..core.tta import dihedral_mean
from .stitch import TileGrid, add_tile, finish, tile_layout  # noqa: F401 - tile_layout: public here too

#: 1024-px tiles: the generators' deepest features see hundreds of pixels, so a tile's own
#: borders change its interior a little; measured on the earlier refocus-unet weights (1536 px vs an untiled
#: run), 1024-px tiles cut the mean |difference| 3.5x against 512-px tiles (2.3 s vs 1.5 s there)
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 96
DEFAULT_PERCENTILES = (1.0, 99.8)
#: tiles per forward pass. Every pass runs exactly this many (a short last batch is filled with
#: copies of its last tile): the CPU's kernels round differently for other batch sizes (up to
#: 5e-7 apart, measured on the four generators; a tile's result does not depend on its place in
#: the batch or on the other tiles), so a tile comes out the same whichever tiles share its
#: batch, and a block of a big image equals the whole image in memory bit for bit.
#: None (the default) picks :data:`CPU_BATCH` or :data:`ACCELERATOR_BATCH` by device.
DEFAULT_BATCH = None
#: one tile per pass on the CPU: measured on an idle 2-core CPU (benchmarks/tile_settings.py;
#: BENCHMARKS "Memory"), a 1024-px tile alone ran 1.0-2.1x as many pixels per second as a batch of
#: four, images of one tile (520x696) took 4.3-5.9x less time (a batch of 4 ran three copies of
#: each), and the activations held are a quarter (refocus-unet: 196 instead of 784 MB)
CPU_BATCH = 1
#: tiles between two hand-backs of freed heap to the system (core.memory.release_free_memory) on
#: an image above core.memory.SMALL_IMAGE_PIXELS: glibc's heap otherwise grew over the tiles
#: (m-deblurgan at 3072^2: 22.1-26.6 B/px above the baseline in 8 runs, 21.9-23.2 in 12 with a trim
#: every 8 tiles, which cost 1-4 % of the time; a trim after every tile cost 11 %: each tile then
#: faulted its activations in again; BENCHMARKS.md "Memory", stop 32)
TRIM_EVERY_TILES = 8
#: four on an accelerator, where a batch keeps the device busy, and where an out-of-memory error
#: then halves the batch (4, 2, 1) before the CPU takes over (core.devices.run_chunked)
ACCELERATOR_BATCH = 4


def tiles_per_pass(batch_size: int | None, device) -> int:
    """Tiles per forward pass on ``device``: ``batch_size``, or when it is None
    :data:`CPU_BATCH` on the CPU and :data:`ACCELERATOR_BATCH` elsewhere."""
    import torch

    if batch_size is not None:
        return max(1, int(batch_size))
    return CPU_BATCH if torch.device(device).type == "cpu" else ACCELERATOR_BATCH


def intensity_stats(image, percentiles=DEFAULT_PERCENTILES) -> tuple[float, float]:
    """``(lo, scale)`` of :func:`normalise` without keeping a normalised copy (one float32 copy
    of a non-float32 image, partitioned in place for the percentiles)."""
    x = np.asarray(image)
    fresh = x.dtype != np.float32
    x = x.astype(np.float32) if fresh else x
    lo, hi = np.percentile(x, percentiles, overwrite_input=fresh)
    scale = float(hi - lo)
    # relative to the image's own level, so that its units do not matter (an absolute floor
    # replaced the percentiles of an image in units of 1e-30 by its full range)
    if not np.isfinite(scale) or scale <= 1e-6 * abs(float(hi)):
        scale = float(x.max() - x.min()) or 1.0
    return float(lo), scale


def normalise(image: np.ndarray, percentiles=DEFAULT_PERCENTILES):
    """(normalised float32 image, (lo, scale)) with ``image = normalised * scale + lo``."""
    lo, scale = intensity_stats(image, percentiles)
    x = np.asarray(image, dtype=np.float32)
    return (x - np.float32(lo)) / np.float32(scale), (lo, scale)


def denormalise(y: np.ndarray, stats) -> np.ndarray:
    lo, scale = stats
    return (np.asarray(y, dtype=np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)


def autocast_context(device, precision="auto"):
    """The autocast context for a device: fp16 on CUDA, bf16 on the CPU only when asked."""
    import torch

    dev = torch.device(device)
    if precision in ("fp32", "float32", None):
        return contextlib.nullcontext()
    if dev.type == "cuda" and precision in ("auto", "fp16", "half"):
        return torch.autocast("cuda", dtype=torch.float16)
    if dev.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if dev.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_for(model, device):
    """``(device -> network, the network on device)`` from a network or such a function."""
    import torch

    if isinstance(model, torch.nn.Module):
        net = model

        def model_for(d):  # the caller's own module: moved as it always was
            return net.to(d).eval()
    else:
        model_for = model
    return model_for, model_for(device)


def plan_grid(model, image_shape, *, device="cpu", tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
    """The :class:`~.stitch.TileGrid` tiled inference uses for an image of ``image_shape``."""
    from ..core.devices import resolve_device

    net = _model_for(model, resolve_device(device))[1]
    return TileGrid.plan(image_shape, tile=tile, overlap=overlap, multiple=int(getattr(net, "multiple", 1) or 1),
                         upscale=int(getattr(net, "upscale", 1) or 1))


def iter_predict_window(
    model,
    source,
    *,
    stats,
    out_box=None,
    device="auto",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int | None = DEFAULT_BATCH,
    precision: str = "auto",
    stage: str = "restoring tiles",
    tta: bool = False,
    report=None,
    cache=None,
):
    """Generator: the window ``out_box = (y0, y1, x0, x1)`` (output coordinates, ``upscale`` x
    the image's; None: all of it) of the tiled result of the whole image ``source``; yields
    :class:`Progress` per tile batch, returns float32 in the input's units.

    ``source`` is anything sliced in the whole image's coordinates (numpy, zarr, a block's
    window): only the tiles touching ``out_box`` are read and run, so the window equals the
    same pixels of the whole image's result (bit for bit on the same device and torch thread
    count: every pass runs ``batch_size`` tiles, see :data:`DEFAULT_BATCH`; None: by device,
    :func:`tiles_per_pass`).
    ``stats``: the whole image's ``(lo, scale)``; ``cache``: a :class:`~.stitch.TileCache` that
    keeps tile predictions for the next windows of the same image (the blocks of a big image;
    None: each tile is added as soon as it is run). Other arguments: :func:`iter_predict_tiled`.
    """
    import torch

    from ..core.devices import resolve_device, run_chunked

    if len(source.shape) != 2:
        raise ValueError(f"expected a 2-D image, got shape {tuple(source.shape)}")
    dev = resolve_device(device)
    model_for, first = _model_for(model, dev)
    grid = plan_grid(lambda d: first, source.shape, device=dev, tile=tile, overlap=overlap)
    r = grid.upscale
    if out_box is None:
        out_box = (0, grid.shape[0] * r, 0, grid.shape[1] * r)
    out_box = tuple(int(b) for b in out_box)
    out = np.zeros((out_box[1] - out_box[0], out_box[3] - out_box[2]), np.float32)
    todo = grid.tiles(out_box)
    weights = grid.weights()

    full = [tiles_per_pass(batch_size, dev)]

    def work(start, stop, d):
        m = first if d == dev else model_for(d)
        tiles = [grid.read(source, i, j, stats) for i, j in todo[start:stop]]
        n = len(tiles)
        if stop < len(todo):  # a full chunk: run_chunked's batch now (halved after an out-of-memory)
            full[0] = n
        tiles += tiles[-1:] * (full[0] - n)  # see DEFAULT_BATCH
        batch = torch.from_numpy(np.stack(tiles))[:, None].to(d)
        del tiles  # the stacked copy is the batch: the tiles themselves are not held through the network
        with torch.inference_mode(), autocast_context(d, precision):
            if tta:
                pred = dihedral_mean(lambda v: m(v).float(), batch, equivariant=True)
            else:
                pred = m(batch).float()
        return pred[:n, 0].cpu().numpy()

    batch = full[0]
    if cache is None:
        total = len(todo)
        yield Progress(0, total, stage)
        for stop, preds in run_chunked(work, total, batch_size=batch, device=dev, report=report):
            for (i, j), p in zip(todo[stop - len(preds):stop], preds):
                add_tile(out, out_box, grid, i, j, p, weights)
            ran = len(preds)
            del preds, p  # added: not held while the next tiles run
            _trim(stop, ran, grid)
            yield Progress(stop, total, stage)
        return finish(out, out_box, grid, stats)
    cache.capacity(grid)
    key = (grid.shape, grid.tile)
    have = {t: cache.get((*key, *t)) for t in todo}
    every, todo = todo, [t for t in todo if have[t] is None]
    total = len(todo)
    yield Progress(0, total, stage)
    for stop, preds in run_chunked(work, total, batch_size=batch, device=dev, report=report):
        for t, p in zip(todo[stop - len(preds):stop], preds):
            have[t] = p
            cache.put((*key, *t), p)
        ran = len(preds)
        del preds, p  # the cache holds what it keeps
        _trim(stop, ran, grid)
        yield Progress(stop, total, stage)
    for i, j in every:  # added in grid order, as in memory: the same float32 sums
        add_tile(out, out_box, grid, i, j, have[i, j], weights)
    return finish(out, out_box, grid, stats)


def _trim(stop: int, ran: int, grid) -> None:
    """Hand freed heap back every :data:`TRIM_EVERY_TILES` tiles of an image that is not small."""
    from ..core.memory import release_free_memory

    if stop // TRIM_EVERY_TILES > (stop - ran) // TRIM_EVERY_TILES:
        release_free_memory(pixels=grid.shape[0] * grid.shape[1])


def iter_predict_tiled(
    model,
    image,
    *,
    device="auto",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int | None = DEFAULT_BATCH,
    precision: str = "auto",
    percentiles=DEFAULT_PERCENTILES,
    stage: str = "restoring tiles",
    tta: bool = False,
    stats=None,
    report=None,
):
    """Generator: yields :class:`Progress` per tile batch, returns the restored float32 image
    (input units; ``upscale`` x the input's shape).

    ``tile`` <= 0 runs the whole image as one tile (untiled). ``model`` is a network, or a
    function ``device -> network`` (the run-time loader's cached instance for that device, so
    an out-of-memory move to the CPU never moves a shared cached module); the network needs
    ``multiple`` and ``upscale`` attributes (1 if missing). ``tta=True`` averages the network over the 8
    flips/rotations of every tile (geometric self-ensemble: 8x the compute).
    ``stats``: ``(lo, scale)`` intensity normalisation to use instead of this image's own
    percentiles (a block of a big image uses the whole image's). ``report``: an optional
    :class:`~napari_refocus.core.devices.DeviceReport` told of an out-of-memory move to the CPU.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    stats = intensity_stats(img, percentiles) if stats is None else tuple(float(v) for v in stats)
    return (yield from iter_predict_window(model, img, stats=stats, device=device, tile=tile, overlap=overlap,
                                           batch_size=batch_size, precision=precision, stage=stage, tta=tta,
                                           report=report))


def predict_tiled(model, image, **kwargs) -> np.ndarray:
    """Non-generator form of :func:`iter_predict_tiled`."""
    from ..core.progress import drain

    return drain(iter_predict_tiled(model, image, **kwargs))
