"""Depth-invariant Richardson-Lucy of a whole image in bounded memory: the FFT frame, tile by tile.

The arithmetic is that of :func:`~napari_refocus.core.rl.iter_richardson_lucy_batch` on one
image zero-padded by the PSF radius in a frame of ``fft_size(h + r) x fft_size(w + r)`` pixels
with circular convolution (pixels past the data unknown with ``boundary="normalized"``), but
no transform is ever taken of the whole frame. Each convolution is computed a tile at a time:
a tile plus ``r`` pixels on every side (read circularly, so the frame's wrap-around is the
same) is transformed in a small FFT frame of ``fft_size(tile + 2 r)``, and the tile's centre is
exact linear convolution there. Convolution is linear and the PSF is ``2 r + 1`` pixels wide,
so the result is the whole-frame one up to float32 rounding (the sums run in another order).

Memory: the estimate and the ratio ``i / (h * o)`` as float32 frames (~9 bytes per input pixel),
the normalisation ``1 / (h^T * mask)`` as its bands near the data's edges (:class:`_Bands`), tile
buffers of a few MB, and the output; the input is read tile by tile in its own dtype.
"""

from __future__ import annotations

import math

import numpy as np

from .otf import fft_size, otf_bank
from .progress import Progress, check_cancelled
from .rl_batch import magnitude_scale
from .torchstate import flush_denormal

#: largest tile side (pixels of the frame) transformed at once: 512 + 2 x 18 -> a 576^2 FFT
TILE = 512
EPS = 1e-12


def _spans(n: int, tile: int, radius: int):
    """Tiles covering ``0..n``, ``[(start, stop), ...]``: about equal, each at most ``tile`` px
    unless its transform frame (``tile + 2 radius`` rounded up to an FFT size) has room for more."""
    k = max(1, math.ceil(n / tile))
    step = max(1, fft_size(math.ceil(n / k) + 2 * radius) - 2 * radius)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


class _Tiles:
    """The tiles of an ``(N, M)`` frame and their circular halo indices."""

    def __init__(self, shape, radius: int, device, tile: int = TILE):
        import torch

        self.shape, self.r = shape, radius
        self.tiles = [(ys, xs) for ys in _spans(shape[0], tile, radius) for xs in _spans(shape[1], tile, radius)]
        self.device = device
        self._idx = {}
        for ys, xs in self.tiles:
            for axis, (a, b) in ((0, ys), (1, xs)):
                if (axis, a, b) not in self._idx:
                    self._idx[axis, a, b] = torch.arange(a - radius, b + radius, device=device) % shape[axis]
        # one FFT frame per tile size (usually one or two)
        self.fft = {}

    def halo(self, x, ys, xs):
        """``x`` (an ``(N, M)`` frame) over the tile plus ``r`` on every side, circularly (a view
        where that does not wrap around, else a copy)."""
        r, (n, m) = self.r, self.shape
        for axis, (a, b), size in ((0, ys, n), (1, xs, m)):
            if a - r >= 0 and b + r <= size:
                x = x.narrow(axis, a - r, b - a + 2 * r)
            else:
                x = x.index_select(axis, self._idx[(axis, a, b)])
        return x

    def frame(self, ys, xs):
        key = (ys[1] - ys[0] + 2 * self.r, xs[1] - xs[0] + 2 * self.r)
        return self.fft.setdefault(key, (fft_size(key[0]), fft_size(key[1])))


def _convolve_tile(tiles, x, ys, xs, otf_of, conj: bool):
    """``(h * x)`` (or ``h^T * x`` with ``conj``) over one tile of the frame, exact (linear
    convolution of the tile's halo region, whose centre no wrap-around reaches)."""
    import torch

    region = tiles.halo(x, ys, xs)
    size = tiles.frame(ys, xs)
    spectrum = torch.fft.rfft2(region, s=size)
    spectrum = spectrum.mul_(otf_of(size, conj))
    out = torch.fft.irfft2(spectrum, s=size)
    r = tiles.r
    return out[r:r + ys[1] - ys[0], r:r + xs[1] - xs[0]]


class _Bands:
    """A frame that is one number away from the data's edges (the normalisation ``1 / (h^T *
    mask)``: the PSF's whole support lies on data there, so every pixel has the same
    sensitivity, up to the transforms' float32 rounding), kept as that number and the bands within
    the PSF radius ``r`` of the data's edges and past them: 0.7 MB at 1024^2 instead of a 4.5 MB
    frame, the same values in the bands and the centre's value elsewhere (measured at 1024^2,
    1000x1300 and 3072x900 at levels 5, 10 and 2: the interior's values lie within 5e-7 of it, a
    few float32 steps of 1.0)."""

    def __init__(self, full, data_shape, r: int):
        (h, w), (n, m) = data_shape, full.shape
        if h <= 2 * r or w <= 2 * r:  # no interior: the whole frame is edge
            self.value, self.bands = 0.0, [((0, n, 0, m), full.clone())]
            return
        self.value = float(full[h // 2, w // 2])
        rects = [(0, r, 0, m), (h - r, n, 0, m), (r, h - r, 0, r), (r, h - r, w - r, m)]
        self.bands = [(b, full[b[0]:b[1], b[2]:b[3]].clone()) for b in rects]

    def tile(self, ys, xs):
        """The frame over the tile ``ys, xs`` (a new tensor)."""
        import torch

        out = torch.full((ys[1] - ys[0], xs[1] - xs[0]), self.value, dtype=torch.float32,
                         device=self.bands[0][1].device)
        for (r0, r1, c0, c1), band in self.bands:
            a0, a1, b0, b1 = max(ys[0], r0), min(ys[1], r1), max(xs[0], c0), min(xs[1], c1)
            if a1 > a0 and b1 > b0:
                out[a0 - ys[0]:a1 - ys[0], b0 - xs[0]:b1 - xs[0]] = band[a0 - r0:a1 - r0, b0 - c0:b1 - c0]
        return out


def _observed(image, ys, xs, device, units: float = 1.0):
    """The frame's observed values over a tile: the image where it has data (divided by
    ``units``, :func:`~.rl_batch.magnitude_scale`), 0 past it."""
    import torch

    h, w = image.shape
    out = torch.zeros((ys[1] - ys[0], xs[1] - xs[0]), dtype=torch.float32)
    ya, yb, xa, xb = ys[0], min(ys[1], h), xs[0], min(xs[1], w)
    if yb > ya and xb > xa:
        out.numpy()[: yb - ya, : xb - xa] = image[ya:yb, xa:xb]  # cast in place
    if units != 1.0:
        out /= units
    return out.to(device)


def iter_richardson_lucy_image(image, *, optics, level: int, iterations: int, device, boundary: str = "normalized",
                               initial: str = "observed", radius: int | None = None, tile: int = TILE,
                               stage: str = "deconvolve"):
    """Depth-invariant RL of the 2-D array ``image`` (any real dtype, read a tile at a time).

    A generator: yields ``Progress(i, iterations, stage)`` after each iteration (each tile is a
    cancellation checkpoint) and returns the ``(h, w)`` float32 estimate as a torch tensor
    (clipped at 0), the values of the whole-frame form (module doc)."""
    import torch

    h, w = image.shape
    r = optics.psf_size // 2 if radius is None else int(radius)
    shape = (fft_size(h + r), fft_size(w + r))
    tiles = _Tiles(shape, r, device, tile)
    otfs = {}

    def otf_of(size, conj=False):
        # the conjugate kept too: made per tile, it was a spectrum-sized copy every call
        if (size, conj) not in otfs:
            otfs[size, conj] = otf_bank(optics, size, device, [level])[0] if not conj else \
                otf_of(size).conj().resolve_conj()
        return otfs[size, conj]

    scale = None
    if boundary == "normalized":
        mask = torch.zeros(shape, dtype=torch.float32, device=device)
        mask[:h, :w] = 1
        full = torch.empty(shape, dtype=torch.float32, device=device)
        for ys, xs in tiles.tiles:
            check_cancelled()
            full[ys[0]:ys[1], xs[0]:xs[1]] = _convolve_tile(tiles, mask, ys, xs, otf_of, conj=True)
        del mask
        # far from the data the estimate is left as it is (factor 1): there scale = 0, and only
        # there (elsewhere it is 1 / sensitivity >= 1), so no separate mask is stored
        full.masked_fill_(full <= 1e-2, 0.0)
        torch.reciprocal(full, out=full).masked_fill_(torch.isinf(full), 0.0)
        scale = _Bands(full, (h, w), r)  # kept as the bands near the data's edges (0.7 MB at 1024^2)
        del full
    units = magnitude_scale(np.max(image))  # far from counts: scaled by a power of two (rl_batch.SAFE_PEAK)
    est = torch.zeros(shape, dtype=torch.float32, device=device)
    total = 0.0
    for ys, xs in tiles.tiles:
        obs = _observed(image, ys, xs, device, units)
        est[ys[0]:ys[1], xs[0]:xs[1]] = obs
        total += float(obs.sum(dtype=torch.float64))
    if initial == "flat":
        est = est.gt_(0).mul_(0.5) if boundary != "normalized" else est.fill_(0.5)
    elif boundary == "normalized":  # outside the data the estimate starts at the data's mean
        est[h:, :] = total / (h * w)
        est[:h, w:] = total / (h * w)
    ratio = torch.empty_like(est)
    for i in range(iterations):
        with flush_denormal(est.device.type == "cpu"):  # FFT round-off leaves subnormals (see core.rl)
            for ys, xs in tiles.tiles:
                check_cancelled()
                blurred = _convolve_tile(tiles, est, ys, xs, otf_of, conj=False)
                # 0 wherever there is no data, because the observed frame is 0 there
                ratio[ys[0]:ys[1], xs[0]:xs[1]] = torch.div(_observed(image, ys, xs, device, units),
                                                              blurred.clamp_min_(EPS))
            for ys, xs in tiles.tiles:
                check_cancelled()
                factor = _convolve_tile(tiles, ratio, ys, xs, otf_of, conj=True)
                if scale is not None:
                    s = scale.tile(ys, xs)
                    factor = factor.mul_(s).masked_fill_(s == 0, 1.0)
                est[ys[0]:ys[1], xs[0]:xs[1]].mul_(factor)
        yield Progress(i + 1, iterations, stage)
    del ratio, scale
    est = est[:h, :w].clamp_min(0)
    return est if units == 1.0 else est.mul_(units)
