"""Optical transfer functions: the rfft2 of each level's PSF in an FFT frame, cached by bytes.

Only the levels a computation needs are transformed, and the cache holds at most
:data:`OTF_CACHE_BYTES` of spectra (least recently used first out), so a whole-image run at
8192^2 keeps one level's spectrum (~300 MB, then not cached at all), not all eleven.
"""

from __future__ import annotations

import numpy as np

from .lru import LRU
from .optics import Optics, level_psf

#: Upper bound on the bytes of spectra kept between calls; a larger spectrum is not cached.
OTF_CACHE_BYTES = 256 * 2**20


def fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (sizes pocketfft and cuFFT transform fastest)."""
    best = None
    p2 = 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < 2 * n:
                if p5 >= n and (best is None or p5 < best):
                    best = p5
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


def frame_size(n: int, psf_size: int) -> int:
    """FFT frame side for ``n`` data pixels zero-padded by the PSF radius (so that circular
    convolution equals linear convolution on the data), and at least the PSF's own side: an
    image narrower than its PSF (a 10-px crop, a 1-px line) still gets a frame the PSF fits in."""
    return fft_size(max(int(n) + psf_size // 2, psf_size))


_CACHE = LRU(max_bytes=OTF_CACHE_BYTES)


def _otf(optics: Optics, shape: tuple[int, int], device: str, level: int):
    key = (optics, shape, device, level)
    spectrum = _CACHE.get(key)
    if spectrum is None:
        import torch

        psf = torch.from_numpy(np.array(level_psf(optics, level)))
        k = psf.shape[-1]
        embedded = torch.zeros(shape, dtype=torch.float32)
        embedded[:k, :k] = psf
        # centre of the PSF at pixel (0, 0): circular convolution then equals 'same' convolution
        embedded = torch.roll(embedded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))
        # transformed on the CPU for every device, so all devices use the same numbers
        spectrum = torch.fft.rfft2(embedded).to(device)
        _CACHE.put(key, spectrum)
    return spectrum


def otf_bank(optics: Optics, shape, device, levels=None):
    """rfft2 of the PSFs of ``levels`` (default: all), centred at (0, 0) in an array of ``shape``.

    Returns a complex tensor ``(len(levels), shape[0], shape[1] // 2 + 1)`` on ``device``.
    Each level's spectrum is cached on its own (see :data:`OTF_CACHE_BYTES`).
    """
    shape = tuple(int(s) for s in shape)
    if levels is None:
        levels = range(optics.n_levels)
    levels = [int(lv) for lv in levels]
    for lv in levels:
        if not 0 <= lv < optics.n_levels:
            raise ValueError(f"level {lv} is outside 0..{optics.n_levels - 1}")
    spectra = [_otf(optics, shape, str(device), lv) for lv in levels]
    if len(spectra) == 1:
        return spectra[0][None]
    import torch

    return torch.stack(spectra)


def clear_otf_cache() -> None:
    """Drop every cached spectrum (they are recomputed on the next use)."""
    _CACHE.clear()
