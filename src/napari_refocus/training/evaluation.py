"""Held-out evaluation of the shipped networks.

DelpNet: classification reports on fixed synthetic test sets (:func:`evaluate_delpnet`,
:func:`score_on`) and level histograms on real BBBC006 images (:func:`real_data_check`).
Generators: per-level PSNR/SSIM/PCC on the held-out synthetic set (:func:`evaluate_generator`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..core.devices import resolve_device
from ..core.optics import BACKGROUND, Optics
from ..models.loader import file_sha256, load_model, read_metadata, resolve_path
from ..models.predict import DEFAULT_OVERLAP, DEFAULT_TILE
from .configs import CLASS_NAMES, DELPNET
from .delpnet_data import fixed_set
from .sources import load_sources, real_check_images, split_sources


# ----------------------------------------------------------------------------------- DelpNet
@torch.no_grad()
def predict_proba(model, x, device, batch_size: int = 256, tta: bool = False) -> torch.Tensor:
    """Softmax probabilities (N, 12) of (N, 84, 84) inputs already scaled to 0..1
    (``tta``: averaged over the 8 flips/rotations)."""
    from ..models.delpnet import mean_softmax

    model.eval()
    out = [mean_softmax(model, x[i : i + batch_size], device, tta) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, 12)


def classification_report(y_true, y_pred, n_classes: int = 12) -> dict:
    """top-1, within-one-level, per-class precision/recall/F1 and the confusion matrix.

    Within-one-level: a level patch counts when the predicted level is off by at most one
    (a "bg" prediction for a level patch never counts); a "bg" patch only when predicted bg.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    lv = (y_true != BACKGROUND) & (y_pred != BACKGROUND)
    within = np.where(y_true == BACKGROUND, y_pred == BACKGROUND, lv & (np.abs(y_true - y_pred) <= 1))
    per = {}
    for c in range(n_classes):
        tp = cm[c, c]
        prec = tp / cm[:, c].sum() if cm[:, c].sum() else float("nan")
        rec = tp / cm[c, :].sum() if cm[c, :].sum() else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan")
        per[CLASS_NAMES[c]] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(f1),
            "support": int(cm[c, :].sum()),
        }
    return {
        "n": int(y_true.size),
        "top1": float((y_true == y_pred).mean()),
        "within_one": float(within.mean()),
        "macro_precision": float(np.nanmean([v["precision"] for v in per.values()])),
        "macro_recall": float(np.nanmean([v["recall"] for v in per.values()])),
        "macro_f1": float(np.nanmean([v["f1"] for v in per.values()])),
        "per_class": per,
        "confusion": cm.tolist(),
        "classes": CLASS_NAMES,
    }


def plot_confusion(cm, path, title: str = "DelpNet, held-out test set") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.2, 6.2), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(12), CLASS_NAMES)
    ax.set_yticks(range(12), CLASS_NAMES)
    ax.set_xlabel("predicted level")
    ax.set_ylabel("true level")
    ax.set_title(title)
    for i in range(12):
        for j in range(12):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluate_delpnet(weights_path=None, *, data_root=None, wheels_dir=None, device="auto",
                     n_per_class: int = 200, seed: int = 20_000, real_check: bool = True,
                     tta: bool = False) -> dict:
    """Evaluate weights on the held-out synthetic test sources (+ the real-data checks).

    Returns {"test": classification_report, "real": real_data_check(...), "weights_sha256"}.
    """
    path = resolve_path(weights_path or DELPNET)
    dev = resolve_device(device)
    model = load_model(str(path), dev)
    meta = read_metadata(path)
    # weights made before ``psf_model`` existed were trained on LB-DVD eq. 2 ("paraxial")
    optics = Optics(**{"psf_model": "paraxial", **meta.get("optics", {})})
    split = split_sources(load_sources(data_root, wheels_dir=wheels_dir))
    images = [s.image for s in split["test"]]
    res = {"weights_sha256": file_sha256(path),
           "test_sources": [s.name for s in split["test"]],
           "test": score_on(model, images, dev, n_per_class=n_per_class, seed=seed, optics=optics, tta=tta),
           "test_paper_protocol": score_on(model, images, dev, n_per_class=n_per_class, seed=seed + 1,
                                           optics=optics, tta=tta, paper_protocol=True)}
    if real_check:
        res["real"] = real_data_check(path, data_root=data_root, device=dev, tta=tta)
    return res


def score_on(model, images, device, *, n_per_class: int, seed: int, optics=None, tta: bool = False,
             paper_protocol: bool = False) -> dict:
    """:func:`classification_report` of ``model`` on a fixed class-balanced set drawn from
    ``images`` (see :func:`~.delpnet_data.fixed_set`)."""
    x, y = fixed_set(images, n_per_class, seed=seed, optics=optics, paper_protocol=paper_protocol)
    return classification_report(y.numpy(), predict_proba(model, x, device, tta=tta).argmax(1).numpy())


def _patch_levels(model, image, device, tta: bool = False):
    """(levels, certainties) of DelpNet on the stride-42 patch grid of a 2-D count image
    (edge patches mirror-padded), as :func:`napari_refocus.defocus_map` computes them."""
    from ..core.tiling import PATCH, STRIDE, extract_patches, patch_grid
    from ..models.delpnet import certainty

    grid = patch_grid(image.shape, patch=PATCH, stride=STRIDE)
    patches = extract_patches(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), grid,
                              context=0, mode="reflect")
    p = predict_proba(model, patches / 65535.0, device, tta=tta).numpy().astype(np.float32)
    p = p.reshape(*grid.shape, len(CLASS_NAMES))
    return p.argmax(-1).astype(np.int64), certainty(p)


def real_data_check(weights_path=None, *, data_root=None, device="auto", tta: bool = False) -> dict:
    """Level histograms of DelpNet on the real BBBC006 z_00 TIFFs and near-focus PNGs."""
    from ..models.delpnet import focus_score

    dev = resolve_device(device)
    model = load_model(weights_path or DELPNET, dev)
    out = {}
    for key, images in real_check_images(data_root).items():
        hist = np.zeros(12, dtype=np.int64)
        per_image = {}
        for name, img in images:
            levels, cert = _patch_levels(model, img, dev, tta)
            h = np.bincount(levels.ravel(), minlength=12)
            hist += h
            per_image[name] = {"histogram": h.tolist(), "focus_score": focus_score(levels, cert, BACKGROUND)[0]}
        nonbg = hist[:11].sum()
        out[key] = {
            "n_images": len(images),
            "histogram": hist.tolist(),
            "n_patches": int(hist.sum()),
            "n_non_bg": int(nonbg),
            "frac_non_bg_ge9": float(hist[9:11].sum() / nonbg) if nonbg else float("nan"),
            "frac_non_bg_le2": float(hist[:3].sum() / nonbg) if nonbg else float("nan"),
            "per_image": per_image,
        }
    return out


# -------------------------------------------------------------------------------- generators
def bin_output(img: np.ndarray, r: int) -> np.ndarray:
    if r == 1:
        return img
    h, w = img.shape[0] // r, img.shape[1] // r
    return img[: h * r, : w * r].reshape(h, r, w, r).mean(axis=(1, 3))


def evaluate_generator(method, weights=None, *, levels=(2, 4, 6, 8, 10, 14, 17), splits=("test", "val"),
                       data_root=None, device="cpu", tile=None, overlap=None, precision="auto") -> dict:
    """Per-level PSNR/SSIM/PCC of a generator (and of its input) on the held-out synthetic set
    (:func:`napari_refocus.training.pairs.synthetic_test_set`: whole held-out BBBC006 images,
    one defocus level each, Poisson noise). An x2 output is binned 2x2 before comparing.
    Levels above 10 use 18-level optics (up to 34 um)."""
    from ..core.metrics import compare
    from ..models.predict import predict_tiled
    from .pairs import synthetic_test_set

    source = weights or method
    model = load_model(source, device)
    r = int(getattr(model, "upscale", 1))
    rows = []
    t_inf, px = 0.0, 0
    for item in synthetic_test_set(levels, splits=splits, data_root=data_root):
        t = time.perf_counter()
        pred = predict_tiled(lambda d: load_model(source, d), item["input"], device=device,
                             tile=tile or DEFAULT_TILE, overlap=overlap or DEFAULT_OVERLAP, precision=precision)
        t_inf += time.perf_counter() - t
        px += item["input"].size
        c = compare(item["gt"], bin_output(pred, r), item["input"].astype(np.float32))
        rows.append({"source": item["source"], "level": item["level"],
                     **{f"{k}_in": c["input"][k] for k in ("psnr", "ssim", "pcc")},
                     **{f"{k}_out": c["pred"][k] for k in ("psnr", "ssim", "pcc")}})
    per_level = {}
    for lv in levels:
        rs = [r_ for r_ in rows if r_["level"] == lv]
        per_level[int(lv)] = {k: float(np.mean([r_[k] for r_ in rs])) for k in rs[0] if k.endswith(("_in", "_out"))}
        per_level[int(lv)]["psnr_gain"] = per_level[int(lv)]["psnr_out"] - per_level[int(lv)]["psnr_in"]
        per_level[int(lv)]["ssim_gain"] = per_level[int(lv)]["ssim_out"] - per_level[int(lv)]["ssim_in"]
    return {"per_level": per_level, "rows": rows, "seconds_per_megapixel": t_inf / (px / 1e6),
            "threads": torch.get_num_threads(),
            "sources": sorted({r_["source"] for r_ in rows})}
