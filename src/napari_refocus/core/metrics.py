"""Image quality against a ground truth: PSNR, SSIM (scikit-image) and Pearson correlation."""

from __future__ import annotations

import numpy as np

from .progress import Progress, check_cancelled, drain
from .validation import as_image


def metrics(pred, gt, data_range=None) -> dict:
    """PSNR (dB), SSIM and PCC of ``pred`` against ``gt`` (both 2-D, same shape).

    ``data_range`` defaults to ``gt.max() - gt.min()``, is used for both PSNR and SSIM,
    and is always returned so numbers from different tools can be compared.
    """
    from skimage.metrics import structural_similarity

    p = as_image(pred, name="prediction", allow_negative=True).astype(np.float64)
    g = as_image(gt, name="ground truth", allow_negative=True).astype(np.float64)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    if data_range is None:
        data_range = float(g.max() - g.min())
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range} (is the ground truth constant?)")
    mse = float(np.mean((p - g) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
    win = min(7, *(s if s % 2 else s - 1 for s in g.shape))
    ssim = float(structural_similarity(p, g, data_range=data_range, win_size=max(win, 3)))
    ps, gs = p.std(), g.std()
    # clipped: rounding can put a perfect correlation at 1.0000000000000002, which reads as a bug
    pcc = float(np.clip(((p - p.mean()) * (g - g.mean())).mean() / (ps * gs), -1.0, 1.0)) \
        if ps > 0 and gs > 0 else float("nan")
    return {"psnr": psnr, "ssim": ssim, "pcc": pcc, "data_range": data_range}


def compare(gt, pred, input=None, data_range=None, *, register: bool = False) -> dict:
    """Metrics of ``pred`` (and of ``input``, with the gains pred - input) against ``gt``.

    Both use the same data range (the ground truth's unless given).

    ``register=True`` is for a real pair (a ground truth shot separately, never pixel-aligned
    nor equally bright): ``pred`` and ``input`` are each shifted onto ``gt`` and fitted to its
    intensities (``a * x + b``) on the region all of them cover
    (:func:`registered_metrics`), and the report adds
    ``"registration"``: each image's shift (px), fit and that region. Without it a PSNR
    against a real in-focus shot mostly measures the brightness difference.
    """
    return drain(iter_compare(gt, pred, input, data_range, register=register))


def iter_compare(gt, pred, input=None, data_range=None, *, register: bool = False):
    """Generator form of :func:`compare`: yields Progress after each image's shift and each
    image's metrics (each a cancellation checkpoint: on a 4096^2 pair, registered, the whole
    takes ~18 s here, one step ~3-6 s); returns the report."""
    if register:
        images = {"pred": pred} if input is None else {"pred": pred, "input": input}
        reg = yield from iter_registered_metrics(images, gt, data_range=data_range)
        out = dict(reg.pop("metrics"))
        dr = out["pred"]["data_range"]
    else:
        out = {"pred": metrics(pred, gt, data_range)}
        dr = out["pred"]["data_range"]
        total = 1 if input is None else 2
        yield Progress(1, total, "metrics")
        if input is not None:
            check_cancelled()
            out["input"] = metrics(input, gt, dr)
            yield Progress(2, total, "metrics")
    if input is not None:
        out["gain"] = {k: out["pred"][k] - out["input"][k] for k in ("psnr", "ssim", "pcc")}
    out["data_range"] = dr
    if register:
        out["registration"] = reg
    return out


def registered_metrics(images: dict, reference, *, margin_px: int = 2, data_range=None) -> dict:
    """See :func:`iter_registered_metrics` (its result, without the progress)."""
    return drain(iter_registered_metrics(images, reference, margin_px=margin_px, data_range=data_range))


def iter_registered_metrics(images: dict, reference, *, margin_px: int = 2, data_range=None):
    """PSNR / SSIM / PCC of each of ``images`` (``{name: 2-D array}``) against ``reference``
    after registering and intensity-matching it: the protocol for a real pair.

    Each image is shifted onto ``reference`` (:func:`~.align.estimate_shift`, :func:`~.align.register_translation`),
    all are cropped to the region every shifted image still covers (:func:`~.align.valid_box`, less
    ``margin_px``), and each is replaced by its least-squares ``a * x + b`` fit to the reference
    there (:func:`~.align.match_intensity`). ``data_range`` defaults to the reference's on that region,
    the same for every image. Returns ``{"metrics": {name: {psnr, ssim, pcc, data_range}},
    "shift_px": {name: [dy, dx]}, "intensity": {name: [a, b]}, "box": [y0, y1, x0, x1]}``.
    A generator: Progress after each image's shift and each image's metrics.
    """
    from .align import estimate_shift, fit_intensity, register_translation, valid_box

    ref = as_image(reference, name="reference image", allow_negative=True).astype(np.float64)
    total, shifts = 2 * len(images), {}
    for k, v in images.items():
        check_cancelled()
        shifts[k] = estimate_shift(v, ref)
        yield Progress(len(shifts), total, "registration")
    rows, cols = valid_box(list(shifts.values()), ref.shape, margin_px=margin_px)
    r = ref[rows, cols]
    dr = float(np.ptp(r)) if data_range is None else float(data_range)
    out = {"metrics": {}, "shift_px": {}, "intensity": {},
           "box": [rows.start, rows.stop, cols.start, cols.stop]}
    for name, v in images.items():
        check_cancelled()
        moved = register_translation(v, ref, shift_px=shifts[name])[rows, cols]
        a, b = fit_intensity(moved, r)
        out["metrics"][name] = metrics(a * moved + b, r, data_range=dr)
        out["shift_px"][name] = [round(float(s), 3) for s in shifts[name]]
        out["intensity"][name] = [float(a), float(b)]
        yield Progress(len(images) + len(out["metrics"]), total, "metrics")
    return out
