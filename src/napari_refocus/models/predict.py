"""Tiled inference shared by the learned generators (CAREamics-like).

* Any 2-D size: the image is normalised per image (percentiles), mirrored by a margin, cut
  into overlapping tiles whose side is a multiple of the network's ``multiple``, run a batch
  of tiles at a time, and blended back with triangular (tent) weights, which form a
  partition of unity: no seams. An image smaller than one tile is run as a single tile.
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
import math

import numpy as np

from ..core.progress import Progress
from ..core.tta import dihedral_mean

#: 1024-px tiles: the generators' deepest features see hundreds of pixels, so a tile's own
#: borders change its interior a little; measured on the earlier refocus-unet weights (1536 px vs an untiled
#: run), 1024-px tiles cut the mean |difference| 3.5x against 512-px tiles (2.3 s vs 1.5 s there)
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 96
DEFAULT_PERCENTILES = (1.0, 99.8)


def normalise(image: np.ndarray, percentiles=DEFAULT_PERCENTILES):
    """(normalised float32 image, (lo, scale)) with ``image = normalised * scale + lo``."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, percentiles)
    scale = float(hi - lo)
    if not np.isfinite(scale) or scale <= 1e-6 * max(1.0, abs(float(hi))):
        scale = float(x.max() - x.min()) or 1.0
    return (x - np.float32(lo)) / np.float32(scale), (float(lo), scale)


def denormalise(y: np.ndarray, stats) -> np.ndarray:
    lo, scale = stats
    return (np.asarray(y, dtype=np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


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


def _axis_tiles(n: int, tile: int, overlap: int, multiple: int):
    """(size, starts) of the tiles along one axis of length ``n``: as few tiles of at most
    ``tile`` pixels as give >= ``overlap`` overlap, shrunk to the smallest multiple of
    ``multiple`` that still covers ``n``. Starts are multiples of ``multiple`` (a network with
    pooling is only shift-equivariant for such shifts), the last tile may hang over ``n``."""
    if n <= tile:
        return _round_up(n, multiple), [0]
    k = int(math.ceil((n - overlap) / (tile - overlap)))
    while True:
        size = min(tile, _round_up(int(math.ceil((n + (k - 1) * overlap) / k)), multiple))
        stride = (size - overlap) // multiple * multiple
        if stride > 0 and (k - 1) * stride + size >= n:
            return size, [i * stride for i in range(k)]
        k += 1


def tile_layout(shape, tile: int, overlap: int, multiple: int):
    """((tile_y, tile_x), margin, list of (y0, x0)) covering an image of ``shape``.

    The image is mirrored by ``margin`` = overlap // 2 on every side (so no image pixel is
    restored from a tile edge) and further on the bottom/right to fill the last tile.
    """
    h, w = shape
    margin = overlap // 2
    t = _round_up(max(tile, 2 * overlap + multiple), multiple)
    ty, ys = _axis_tiles(h + 2 * margin, t, overlap, multiple)
    tx, xs = _axis_tiles(w + 2 * margin, t, overlap, multiple)
    return (ty, tx), margin, [(y, x) for y in ys for x in xs]


def _tent(n: int):
    x = np.arange(n, dtype=np.float64) + 0.5
    return (1.0 - np.abs(x - n / 2) / (n / 2)).astype(np.float32)


def iter_predict_tiled(
    model,
    image,
    *,
    device="auto",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 4,
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
    import torch

    from ..core.devices import resolve_device, run_chunked
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    dev = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        net = model

        def model_for(d):  # the caller's own module: moved as it always was
            return net.to(d).eval()
    else:
        model_for = model
    first = model_for(dev)
    multiple = int(getattr(first, "multiple", 1) or 1)
    r = int(getattr(first, "upscale", 1) or 1)
    if stats is None:
        xn, stats = normalise(img, percentiles)
    else:
        lo, scale = (float(v) for v in stats)
        xn, stats = (img.astype(np.float32) - np.float32(lo)) / np.float32(scale), (lo, scale)
    h, w = xn.shape
    if tile is None or tile <= 0:
        tile = _round_up(max(h, w) + overlap, multiple)
    overlap = min(overlap, tile // 2)
    (ty, tx), margin, corners = tile_layout((h, w), tile, overlap, multiple)
    ys = max(c[0] for c in corners) + ty
    xs = max(c[1] for c in corners) + tx
    # mirror by `margin` on every side, then up to the covered extent (reflect, or
    # replicate where the image is too small to mirror)
    pad_mode = "reflect" if min(h, w) > 1 else "edge"
    padded = torch.from_numpy(np.ascontiguousarray(
        np.pad(xn, ((margin, ys - h - margin), (margin, xs - w - margin)), mode=pad_mode)))
    wy, wx = _tent(ty * r), _tent(tx * r)
    weight = np.outer(wy, wx)
    num = np.zeros((ys * r, xs * r), dtype=np.float32)
    den = np.zeros((ys * r, xs * r), dtype=np.float32)
    def work(start, stop, d):
        m = first if d == dev else model_for(d)
        batch = torch.stack([padded[y:y + ty, x:x + tx] for y, x in corners[start:stop]])[:, None]
        batch = batch.to(d)
        with torch.inference_mode(), autocast_context(d, precision):
            if tta:
                out = dihedral_mean(lambda v: m(v).float(), batch, equivariant=True)
            else:
                out = m(batch).float()
        return out[:, 0].cpu().numpy()

    total = len(corners)
    yield Progress(0, total, stage)
    for stop, preds in run_chunked(work, total, batch_size=batch_size, device=dev, report=report):
        start = stop - len(preds)
        for (y, x), p in zip(corners[start:stop], preds):
            num[y * r:(y + ty) * r, x * r:(x + tx) * r] += p * weight
            den[y * r:(y + ty) * r, x * r:(x + tx) * r] += weight
        yield Progress(stop, total, stage)
    out = num / np.maximum(den, np.finfo(np.float32).tiny)
    out = out[margin * r:(margin + h) * r, margin * r:(margin + w) * r]
    return denormalise(out, stats)


def predict_tiled(model, image, **kwargs) -> np.ndarray:
    """Non-generator form of :func:`iter_predict_tiled`."""
    from ..core.progress import drain

    return drain(iter_predict_tiled(model, image, **kwargs))
