"""The batched Richardson-Lucy iteration (LB-DVD 2.3) on frames of patches, in torch.

    o_{t+1} = o_t * ( (i / (h (*) o_t)) (*) h_flipped ),   o_0 = i

Shared by the patch-by-patch form (:mod:`.rl`) and the grouped one (:mod:`.rl_groups`).
"""

from __future__ import annotations

import math

import numpy as np

from .devices import resolve_device, run_chunked
from .optics import BACKGROUND, Optics
from .otf import frame_size, otf_bank
from .progress import Progress, check_cancelled, drain
from .torchstate import flush_denormal

EPS = 1e-12
#: data whose peak lies in this range are deconvolved as they are; others are first scaled by a
#: power of two (:func:`magnitude_scale`): RL is scale-equivariant, but a float image's units are
#: arbitrary, and far from counts EPS (peaks below ~1e-9) or the transforms' float32 sums (peaks
#: above ~1e32 / pixels) would change or overflow the result (measured: all zeros at 1e-27 counts,
#: NaN at 4e33)
SAFE_PEAK = (2.0**-10, 2.0**32)


def magnitude_scale(peak: float) -> float:
    """1.0 for a ``peak`` in :data:`SAFE_PEAK` (or not positive and finite), else the power of two
    ``s`` with ``peak / s`` in ``[2**11, 2**12)``. A power of two divides and multiplies back
    exactly, and float32 rounds the same at every power of two, so a scaled run gives the
    unscaled run's numbers (times ``s``) wherever that one neither underflowed nor overflowed."""
    peak = float(peak)
    if not np.isfinite(peak) or peak <= 0 or SAFE_PEAK[0] <= peak <= SAFE_PEAK[1]:
        return 1.0
    return float(2.0 ** (math.floor(math.log2(peak)) - 11))


#: patches deconvolved at once on a CPU (a GPU takes 1024)
CPU_BATCH = 8
#: a chunk of fewer patches is deconvolved with copies of its last one: the CPU's FFT of a batch
#: of one rounds differently from a batch of several (measured: 11 of 24 patches differed in the
#: last bit), so a patch's result would depend on how many shared its chunk, and lbdvd's block
#: form (other chunks) would not equal its in-memory form bit for bit
MIN_BATCH = 2


def richardson_lucy_batch(observed, otf, iterations: int = 15, *, mask=None, initial: str = "observed"):
    """Richardson-Lucy on a batch (see :func:`iter_richardson_lucy_batch`); returns the estimate.

    Each iteration is a cancellation checkpoint (:func:`~napari_refocus.core.progress.check_cancelled`).
    """
    return drain(iter_richardson_lucy_batch(observed, otf, iterations, mask=mask, initial=initial))


def iter_richardson_lucy_batch(observed, otf, iterations: int = 15, *, mask=None, initial: str = "observed",
                               stage: str = "deconvolve"):
    """Richardson-Lucy on a batch of images zero-padded inside an FFT frame.

    ``observed``: real tensor ``(B, N, M)``: the data, zero-padded by at least the PSF
    radius so that circular FFT convolution equals linear convolution on the data.
    ``otf``: complex ``(B or 1, N, M//2+1)``.

    ``mask=None`` is textbook RL with 'same' convolution: everything outside the data counts
    as observed zeros (what scikit-image does). With ``mask`` (``(B, N, M)``, 1 where there
    is data) the pixels outside are *unknown*: the estimate extends past the data and each
    update is divided by ``h^T (*) mask`` (Bertero & Boccacci 2005). This removes the dark
    rims plain RL puts at patch and image borders when the PSF is wider than the context.

    ``initial``: "observed" (o_0 = i, the paper; outside the data the patch mean) or "flat"
    (a constant start, as scikit-image; the result does not depend on the constant).
    A generator: yields ``Progress(i, iterations, stage)`` after each iteration (each is
    also a cancellation checkpoint) and returns the estimate ``(B, N, M)``.
    """
    import torch

    shape = observed.shape[-2:]
    rfft2, irfft2 = torch.fft.rfft2, torch.fft.irfft2
    otf_conj = otf.conj()
    if initial not in ("observed", "flat"):
        raise ValueError(f"initial must be 'observed' or 'flat', got {initial!r}")
    units = magnitude_scale(observed.max()) if observed.numel() else 1.0
    if units != 1.0:  # far from counts: a scaled copy (see SAFE_PEAK), scaled back at the end
        observed = observed / units
    if mask is None:
        support = observed > 0
        est = observed.clone() if initial == "observed" else support.to(observed.dtype) * 0.5
        scale = keep = None
    else:
        # (in this order, each whole-frame temporary is freed before the next is made)
        mask = mask.to(observed.dtype)
        sens = irfft2(rfft2(mask) * otf_conj, s=shape)  # the mask may be one for the batch
        # far from the data (sensitivity ~0) the estimate is left as it is (factor 1 there)
        keep = sens <= 1e-2
        scale = sens.clamp_min_(1e-2).reciprocal_().masked_fill_(keep, 0.0)
        # as 1.0 / 0.0, so that each iteration's factor is keep + factor * scale in one pass
        # (the same values as factor * scale with 1 where keep; a broadcast masked_fill_ was 10x slower)
        keep = keep.to(observed.dtype)
        del sens
        observed = observed * mask
        n = mask.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
        mean = observed.sum(dim=(-2, -1), keepdim=True) / n
        if initial == "observed":
            est = torch.where(mask > 0, observed, mean.expand_as(observed))
        else:
            est = torch.full_like(observed, 0.5)
        del mask
    # FFT round-off leaves subnormal floats where the data is zero; on a CPU they make
    # every later multiply tens of times slower, so flush them to zero while we iterate
    # (re-entered around each iteration: the caller's settings hold while this generator waits)
    for i in range(iterations):
        check_cancelled()
        with flush_denormal(observed.device.type == "cpu"):
            est = _iterate(est, observed, otf, otf_conj, 1, scale, keep)
        yield Progress(i + 1, iterations, stage)
    return est if units == 1.0 else est.mul_(units)


def _iterate(est, observed, otf, otf_conj, iterations, scale, keep):
    """``iterations`` RL updates of ``est`` (in place: it is this function's own tensor), each
    product and quotient written over a buffer that is no longer needed, so an iteration holds
    one spectrum and one image besides the estimate (the values are those of the out-of-place
    formulas)."""
    import torch

    shape = observed.shape[-2:]
    rfft2, irfft2 = torch.fft.rfft2, torch.fft.irfft2
    for _ in range(iterations):
        blurred = irfft2(rfft2(est).mul_(otf), s=shape)
        # the ratio is 0 wherever there is no data, because observed is 0 there
        ratio = torch.div(observed, blurred.clamp_min_(EPS), out=blurred)
        factor = irfft2(rfft2(ratio).mul_(otf_conj), s=shape)
        del blurred, ratio
        if scale is not None:
            factor = torch.addcmul(keep, factor, scale, out=factor)
        est.mul_(factor)
        del factor
    return est


def iter_deconvolve_frames(take, levels, put, *, size, context, iterations, device, initial, boundary, batch_size,
                           optics, inside=None, report=None):
    """Deconvolve context-padded frames of levels 1..10 a chunk at a time (item ``k`` with the
    PSF of ``levels[k]``; the others are skipped): ``take(index)`` gives the frames
    ``(n, size, size)`` (``size`` an int, or ``(rows, columns)``) of item numbers ``index``
    (``inside(index)`` their data masks, or None), ``put(index, central parts)`` receives each
    result (the frames without their context). An item is a patch (:mod:`.rl`) or a group of
    patches (:mod:`.rl_groups`). A generator yielding Progress per chunk; returns the device the
    frames ran on (the CPU after an out-of-memory fallback)."""
    import torch

    optics = optics or Optics()
    dev = resolve_device(device)
    if boundary not in ("normalized", "zero"):
        raise ValueError(f"boundary must be 'normalized' or 'zero', got {boundary!r}")
    if batch_size is None:
        # small batches keep the FFTs in cache on a CPU (measured: 32 is ~2x faster than 256,
        # and 8 no slower than 32 with a quarter of the memory: each patch in flight holds ~1 MB
        # of frames and spectra; benchmarks/memory_speed.py)
        batch_size = CPU_BATCH if dev.type == "cpu" else 1024
    rows, cols = (size, size) if np.ndim(size) == 0 else (int(n) for n in size)
    crop_y, crop_x = slice(context, rows - context), slice(context, cols - context)
    todo = np.flatnonzero((levels > 0) & (levels != BACKGROUND))
    # One PSF radius of zeros past the data: enough for circular = linear convolution. With
    # the normalised boundary the estimate's extensions past opposite edges then share one
    # band; measured: no PSNR difference to a frame of data + 2 radii, which is 37 % slower.
    shape = (frame_size(rows, optics.psf_size), frame_size(cols, optics.psf_size))

    def work(start, stop, dev_):
        idx = todo[start:stop]
        if len(idx) < MIN_BATCH:  # with a copy of its patch: see MIN_BATCH
            idx = np.concatenate([idx, np.repeat(idx[-1:], MIN_BATCH - len(idx))])
        frame = (0, shape[1] - cols, 0, shape[0] - rows)
        obs = torch.nn.functional.pad(take(idx).to(dev_), frame)
        mask = None
        if boundary == "normalized":
            # one mask for all patches unless some lack real neighbours
            region = inside(idx).to(dev_) if inside is not None else torch.ones_like(obs[:1, :rows, :cols])
            mask = torch.nn.functional.pad(region, frame)
        # only the levels this chunk uses are transformed; each patch indexes its own
        needed, which = np.unique(levels[todo[start:stop]], return_inverse=True)
        otf = otf_bank(optics, shape, dev_, needed)[torch.from_numpy(which.ravel()).to(dev_)]
        est = richardson_lucy_batch(obs, otf, iterations, mask=mask, initial=initial)
        ran_on[0] = dev_  # the device that worked (the CPU after an out-of-memory fallback)
        return est[:stop - start, crop_y, crop_x].to("cpu")

    ran_on = [dev]
    total = max(1, len(todo))
    yield Progress(0, total, "deconvolve")
    done = 0
    for stop, chunk in run_chunked(work, len(todo), batch_size=batch_size, device=dev, report=report):
        put(todo[done:stop], chunk)
        done = stop
        yield Progress(done, total, "deconvolve")
    return ran_on[0]
