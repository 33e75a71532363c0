"""Forward model: in-focus image -> defocused image (Born-Wolf PSF blur + Poisson noise)."""

from __future__ import annotations

import numpy as np

from .validation import as_image, check_level
from .devices import resolve_device
from .optics import Optics, resolve_optics
from .otf import frame_size, otf_bank


def _blur_all(data_t, levels, optics: Optics, device):
    """{level: blurred image} for the given integer levels (mirrored borders, FFT)."""
    import torch
    import torch.nn.functional as F

    h, w = data_t.shape
    margin = optics.psf_size
    if margin < min(h, w):
        padded = F.pad(data_t[None, None], (margin,) * 4, mode="reflect")[0, 0]
    else:
        # an image narrower than its PSF: numpy mirrors it again and again (torch's reflect
        # cannot pad past the image's own size), so a thin strip keeps its light
        padded = torch.from_numpy(np.pad(data_t.cpu().numpy(), margin, mode="reflect")).to(data_t.device)
    ph, pw = padded.shape
    shape = (frame_size(ph, optics.psf_size), frame_size(pw, optics.psf_size))
    spec = torch.fft.rfft2(F.pad(padded, (0, shape[1] - pw, 0, shape[0] - ph)))
    out = {}
    for lv in levels:
        if lv == 0:
            # level 0 is the in-focus image itself: "no synthetic degradation" (LB-DVD 2.1)
            out[lv] = data_t
            continue
        full = torch.fft.irfft2(spec * otf_bank(optics, shape, device, [lv])[0], s=shape)
        out[lv] = full[margin : margin + h, margin : margin + w].clamp_min(0)
    return out


def simulate(
    image,
    *,
    level=None,
    level_field=None,
    noise: str | None = "poisson",
    gain: float = 1.0,
    seed=None,
    device="cpu",
    optics: Optics | None = None,
    **optics_kwargs,
) -> np.ndarray:
    """Defocus an in-focus 2-D image (y, x).

    Parameters
    ----------
    image : 2-D non-negative array (any real dtype; the dtype is kept).
    level : int 0..10, optional
        One defocus level for the whole image (level * 2 um by default). Level 0 leaves
        the image unblurred, as in the paper (the input already is in focus).
    level_field : 2-D float array of the image's shape, optional
        A defocus level per pixel (0..10, fractional allowed) for spatially varying defocus,
        e.g. from :func:`tilted_level_field`. Each pixel is the linear blend of the images
        blurred at the two neighbouring integer levels.
    noise : "poisson" or None
        Poisson noise on ``gain * intensity`` photon counts (``gain`` = counts per unit of
        the image; 1 means the pixel values are counts, as in raw 16-bit data).
    seed : int or numpy Generator, for reproducible noise.
    optics : Optics, or its fields as keywords (wavelength_nm, na, pixel_um, ...).
    """
    import torch

    arr = as_image(image)
    if (level is None) == (level_field is None):
        raise ValueError("give exactly one of level= or level_field=")
    if noise not in ("poisson", None, "none"):
        raise ValueError(f"noise must be 'poisson' or None, got {noise!r}")
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    optics = resolve_optics(optics, **optics_kwargs)
    dev = resolve_device(device)
    data = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(dev)
    if level is not None:
        lv = check_level(level, n_levels=optics.n_levels)
        blurred = _blur_all(data, [lv], optics, dev)[lv].cpu().numpy().astype(np.float64)
    else:
        field = as_image(level_field, name="level field")
        if field.shape != arr.shape:
            raise ValueError(f"level field shape {field.shape} differs from image shape {arr.shape}")
        if field.max() > optics.n_levels - 1:
            raise ValueError(f"level field values must lie in 0..{optics.n_levels - 1}")
        field = field.astype(np.float64)
        lo = np.floor(field).astype(np.int64)
        lo = np.minimum(lo, optics.n_levels - 2) if optics.n_levels > 1 else lo
        frac = field - lo
        needed = sorted(set(np.unique(lo).tolist()) | set((np.unique(lo) + 1).tolist()))
        needed = [v for v in needed if v < optics.n_levels]
        stack = _blur_all(data, needed, optics, dev)
        blurred = np.zeros(arr.shape, dtype=np.float64)
        for lv in needed:
            b = stack[lv].cpu().numpy().astype(np.float64)
            blurred += np.where(lo == lv, 1 - frac, 0) * b + np.where(lo + 1 == lv, frac, 0) * b
    if noise == "poisson":
        rng = np.random.default_rng(seed)
        blurred = rng.poisson(np.clip(blurred, 0, None) * gain) / gain
    return cast_like(blurred, arr.dtype)


def cast_like(values: np.ndarray, dtype) -> np.ndarray:
    """Cast to ``dtype``: integers are rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values, dtype=dtype)


def tilted_level_field(shape, *, low: float = 0.0, high: float = 8.0, angle_deg: float = 0.0):
    """A level per pixel for a tilted sample: a linear ramp from ``low`` to ``high``.

    The ramp runs along x for ``angle_deg=0`` and is rotated by ``angle_deg`` (degrees,
    counter-clockwise); the extreme corners reach ``low`` and ``high``.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.deg2rad(angle_deg)
    proj = xx * np.cos(t) - yy * np.sin(t)
    proj = (proj - proj.min()) / max(np.ptp(proj), 1e-12)
    return low + (high - low) * proj


def undulating_level_field(shape, *, low: float = 0.0, high: float = 8.0, periods: float = 1.0):
    """A level per pixel for an undulating sample: a smooth 2-D cosine surface in [low, high]."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    s = 0.5 * (1 + np.cos(2 * np.pi * periods * xx / w) * np.cos(2 * np.pi * periods * yy / h))
    return low + (high - low) * s
