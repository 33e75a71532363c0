"""Fine-tuning a generator on the real pairs of one z-stack (``train_generator(...,
from_zstack=STACK, init=WEIGHTS)``).

Every plane is paired with the in-focus plane (found automatically). Planes are split into
fine-tune / held-out (every 3rd plane from the focus held out) AND the field is split
spatially (the top 60 % of rows for fine-tuning, the bottom 35 % for evaluation); the initial
and the fine-tuned model are compared on the held-out planes' held-out rows.

With ``optics=`` (a calibration of this microscope, ``napari-refocus calibrate``: the fitted
optics fields plus ``z_step_um`` and ``focal_plane_index``), the in-focus plane is the fitted
focal plane (unless ``focus`` is given), and half of every batch pairs the in-focus plane
blurred by the fitted PSF at a fine-tune plane's distance (``defocus_scale`` included, Poisson
noise at the plane's own brightness) with the in-focus plane: synthetic pairs with exactly the
real pairs' blur, registered by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.devices import resolve_device
from ..core.progress import Progress
from ..core.torchstate import torch_threads
from .configs import generator_config
from .evaluation import bin_output
from .losses import ssim_torch
from .schedules import Budget, FunctionLR, generator_factor


def iter_finetune_zstack(method, out_dir, *, from_zstack, init=None, minutes=None, steps=None, device="auto",
                         seed=0, num_threads=None, patch=128, batch=None, lr=None, every=3, train_rows=0.6,
                         focus=None, metric="laplacian", name=None, optics=None, **_ignored):
    """Generator: yields Progress, returns the result dict (also written to
    ``<out_dir>/<name>_eval.json``, the weights to ``<out_dir>/<name>.safetensors``;
    ``name`` defaults to ``<method>-finetuned``)."""
    with torch_threads(num_threads):
        return (yield from _finetune(method, out_dir, from_zstack=from_zstack, init=init, minutes=minutes,
                                     steps=steps, device=device, seed=seed, patch=patch, batch=batch, lr=lr,
                                     every=every, train_rows=train_rows, focus=focus, metric=metric, name=name,
                                     optics=optics))


def fitted_blur_planes(stack, focus: int, planes, optics: dict, *, seed: int = 0) -> dict:
    """``{plane: the in-focus plane blurred by the calibrated PSF at that plane's distance}``
    (``optics``: Optics fields + ``z_step_um``; Poisson noise at the plane's mean counts)."""
    from ..core.forward import simulate
    from ..core.optics import Optics

    fields = {k: v for k, v in optics.items() if k in Optics.__dataclass_fields__}
    step = float(optics["z_step_um"])
    sharp = np.asarray(stack[focus], dtype=np.float32)
    out = {}
    for z in planes:
        dz = abs(z - focus) * step
        if dz == 0:
            out[z] = sharp
            continue
        o = Optics(**{**fields, "level_step_um": dz, "n_levels": 2})
        sin = min(o.na / o.refractive_index, 0.99)
        reach = dz * o.defocus_scale * sin / np.sqrt(1 - sin * sin) / o.pixel_um + 8
        size = int(min(min(sharp.shape) // 2 * 2 - 1, 2 * np.ceil(reach) + 1))
        o = Optics(**{**o.as_dict(), "psf_size": max(3, size)})
        gain = 1.0 if float(stack[z].mean()) > 20 else 100.0  # raw counts: Poisson as they are
        out[z] = simulate(sharp, level=1, optics=o, noise="poisson", gain=gain, seed=seed + z).astype(np.float32)
    return out


def _finetune(method, out_dir, *, from_zstack, init, minutes, steps, device, seed, patch, batch, lr, every,
              train_rows, focus, metric, name, optics):
    from ..core.metrics import compare
    from ..models.loader import load_fresh, resolve_path, save_weights
    from ..models.predict import predict_tiled
    from .pairs import _pct_normalise, read_zstack, zstack_pairs, zstack_split

    dev = resolve_device(device)
    cfg = generator_config(method)
    stack, names = read_zstack(from_zstack)
    if optics is not None and focus is None and optics.get("focal_plane_index") is not None:
        focus = int(np.clip(round(float(optics["focal_plane_index"])), 0, stack.shape[0] - 1))
    zp = zstack_pairs(stack, focus=focus, metric=metric)
    f = zp["focus"]
    tr_planes, held = zstack_split(stack.shape[0], f, every=every)
    H = stack.shape[1]
    r_train = int(H * train_rows)
    r_eval = int(H * (train_rows + 0.05))
    init_path = init or resolve_path(method)
    model = load_fresh(init_path)
    base_meta = model.meta
    model.to(dev).train()
    ups = int(getattr(model, "upscale", 1))
    lr = lr or cfg["lr"] * 0.1
    bs = batch or min(cfg["batch"], 6)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    st_t = torch.from_numpy(stack.astype(np.float32))
    synthetic = None
    if optics is not None:
        yield Progress(0, 1, "blurring the in-focus plane with the calibrated PSF")
        blurred = fitted_blur_planes(stack, f, tr_planes, optics, seed=seed)
        synthetic = torch.from_numpy(np.stack([blurred.get(z, stack[z]) for z in range(stack.shape[0])]).astype(np.float32))

    def evaluate(m):
        m.eval()
        rows = []
        gt = stack[f, r_eval:].astype(np.float32)
        for z in held:
            inp = stack[z, r_eval:].astype(np.float32)
            pred = predict_tiled(m, inp, device=dev)
            c = compare(gt, bin_output(pred, ups), inp)
            rows.append({"plane": names[z], "index": z, "psnr_in": c["input"]["psnr"],
                         "psnr_out": c["pred"]["psnr"], "ssim_in": c["input"]["ssim"], "ssim_out": c["pred"]["ssim"]})
        m.train()
        return {"rows": rows, **{k: float(np.mean([r[k] for r in rows])) for k in
                                  ("psnr_in", "psnr_out", "ssim_in", "ssim_out")}}

    yield Progress(0, 1, "evaluating the initial model on the held-out planes")
    before = evaluate(model)
    if minutes is None and steps is None:
        minutes = 3.0
    budget = Budget(minutes, steps)
    sched = FunctionLR(opt, lambda k: lr * generator_factor(budget.fraction(k), "cosine"))
    step = 0
    while budget.fraction(step) < 1:
        gen = torch.Generator().manual_seed(seed * 7919 + step)
        zs = torch.tensor(tr_planes)[torch.randint(0, len(tr_planes), (bs,), generator=gen)]
        ys = torch.randint(0, r_train - patch + 1, (bs,), generator=gen)
        xs = torch.randint(0, stack.shape[2] - patch + 1, (bs,), generator=gen)
        # with a calibration, every other sample's input is the fitted blur of the in-focus plane
        src = [synthetic if synthetic is not None and k % 2 else st_t for k in range(bs)]
        inp = torch.stack([s_[z, y:y + patch, x:x + patch] for s_, z, y, x in zip(src, zs, ys, xs)])
        tgt = torch.stack([st_t[f, y:y + patch, x:x + patch] for y, x in zip(ys, xs)])
        xi, yt = _pct_normalise(inp, inp), _pct_normalise(tgt, inp)
        k = int(torch.randint(0, 4, (1,), generator=gen))
        xi, yt = torch.rot90(xi, k, (1, 2))[:, None].to(dev), torch.rot90(yt, k, (1, 2))[:, None].to(dev)
        out = model(xi)
        if ups > 1:
            out = F.avg_pool2d(out, ups)
        loss = (out - yt).abs().mean() + 0.1 * (1 - ssim_torch(out, yt))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        yield Progress(*budget.progress(step), f"fine-tune step {step} loss {loss.item():.4f}")
    secs = budget.elapsed()
    yield Progress(0, 1, "evaluating the fine-tuned model")
    after = evaluate(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fname = name or f"{method}-finetuned"
    meta = {k: v for k, v in base_meta.items() if k not in ("architecture", "kwargs")}
    meta["provenance"] = {**meta.get("provenance", {}), "finetuned_from": str(init_path),
                          "finetuned_from_sha256": model.sha256, "zstack": str(from_zstack),
                          "focus_plane": names[f], "focus_metric": metric, "steps": step,
                          "seconds": round(secs, 1), "train_planes": [names[z] for z in tr_planes],
                          "train_rows": [0, r_train], "heldout_planes": [names[z] for z in held],
                          "heldout_rows": [r_eval, H], "optics": optics,
                          "synthetic_share": 0.5 if synthetic is not None else 0.0}
    model = model.to("cpu").eval()
    wpath = save_weights(model, out / f"{fname}.safetensors", meta=meta)
    result = {"method": method, "weights": str(wpath), "focus_index": f, "focus_plane": names[f],
              "focus_metric": metric, "focus_scores": [float(s) for s in zp["scores"]],
              "train_planes": tr_planes, "heldout_planes": held, "steps": step, "seconds": round(secs, 1),
              "optics": optics, "synthetic_share": 0.5 if synthetic is not None else 0.0,
              "before": before, "after": after}
    (out / f"{fname}_eval.json").write_text(json.dumps(result, indent=1, default=str))
    return result
