"""Training (and evaluation) of the four learned refocusing generators.

``train_generator(method, out_dir="weights", minutes=..., steps=...)`` trains one of
``comi-cyclegan``, ``refocus-unet``, ``m-deblurgan``, ``h2t-msunet`` on synthetic pairs
(:mod:`napari_refocus.training.pairs`) from the real in-focus sources, split by source image,
and writes ``<out_dir>/<method>.safetensors`` (+ ``.sha256``), ``<method>_eval.json`` and the
model card ``<method>.md``. Checkpoints (safetensors + JSON, never shipped) go to
``<out_dir>/checkpoints/<method>/`` and a run resumes from them. Data are drawn with a
generator seeded by (seed, step), so a resumed run sees the same pairs as an uninterrupted one;
the initial weights come from torch's random stream seeded with ``seed`` (a private stream: the
process's own random state is left alone).

``from_zstack=STACK`` (a multi-page TIFF or a folder of planes) with ``init=WEIGHTS`` fine-tunes a
model on real pairs of that stack instead (:mod:`napari_refocus.training.finetune`).

Losses (no ImageNet VGG can be downloaded here). "Feature loss" = ``feature="gradient"`` (the
shipped default: L1 between the image gradients of prediction and truth, so every shipped model
is reproducible without other weights) or ``feature="delpnet"`` / ``"auto"``: L1 between the first
conv blocks' activations of the project's own DelpNet (``weights/delpnet.safetensors``, a network
trained to recognise defocus; "auto" falls back to the gradient loss when that file is missing):

* comi-cyclegan: CycleGAN, two generators (blur->sharp, sharp->blur) and two PatchGAN
  discriminators (LSGAN); loss = adv_weight * adversarial + content_weight * content (both
  directions) + cycle_weight * cycle, content = L1 + feature loss. Paper weights 1 / 1 / 0.001.
* m-deblurgan: VGG-like discriminator; loss = MSE + feature ("perceptual") + SSIM on the 2x2-binned
  x2 output vs the truth, + L1 of the x2 output vs the bilinearly up-sampled truth (no finer truth
  exists) + deep supervision of the native-resolution approximation + a small adversarial term.
* refocus-unet: L1 + feature loss.
* h2t-msunet: multi-scale loss: sum over the K scales of L1(output_k, truth down-sampled to k)
  (+ SSIM at the finest scale).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.devices import resolve_device
from ..core.progress import Progress, run_with_bar
from ..core.torchstate import torch_threads
from ..models.loader import file_sha256, load_generator, save_weights  # noqa: F401 (load_generator: old import path)
from ..models.registry import get_architecture
from .cards import write_generator_card
from .checkpoints import load_checkpoint, save_checkpoint
from .configs import DEFAULTS, METHODS, generator_config  # noqa: F401 (DEFAULTS re-exported)
from .evaluation import evaluate_generator
from .finetune import iter_finetune_zstack
from .losses import FeatureLoss, lsgan, ssim_torch
from .runtime import TorchRNG, cpu_name
from .schedules import Budget, FunctionLR, generator_factor


class _Trainer:
    """Holds the networks, optimisers and the loss of one method."""

    def __init__(self, method, cfg, dev, feature: FeatureLoss):
        from ..models.layers import PatchGAN, VGGDiscriminator

        self.method, self.cfg, self.dev, self.feature = method, cfg, dev, feature
        arch = get_architecture(cfg["arch"]).cls
        self.G = arch(**cfg["model"]).to(dev)
        self.modules = {"G": self.G}
        self.optims = {"G": torch.optim.Adam(self.G.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))}
        if method == "comi-cyclegan":
            self.F_ = arch(**cfg["model"]).to(dev)  # sharp -> blur
            self.DA = PatchGAN(**cfg["disc"]).to(dev)  # blurred domain
            self.DB = PatchGAN(**cfg["disc"]).to(dev)  # sharp domain
            self.modules.update(F=self.F_, DA=self.DA, DB=self.DB)
            self.optims["G"] = torch.optim.Adam(list(self.G.parameters()) + list(self.F_.parameters()),
                                                lr=cfg["lr"], betas=(0.5, 0.999))
            self.optims["D"] = torch.optim.Adam(list(self.DA.parameters()) + list(self.DB.parameters()),
                                                lr=cfg["lr"], betas=(0.5, 0.999))
        elif method == "m-deblurgan":
            self.D = VGGDiscriminator(**cfg["disc"]).to(dev)
            self.modules["D"] = self.D
            self.optims["D"] = torch.optim.Adam(self.D.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
        self.feature.to(dev)

    def train(self):
        for m in self.modules.values():
            m.train()

    def step(self, x, y) -> dict:
        c = self.cfg
        fw = c.get("feature_weight", 0.0)
        logs = {}
        if self.method == "refocus-unet":
            p = self.G(x)
            loss = (p - y).abs().mean() + fw * self.feature(p, y)
            if c.get("ssim_weight"):
                loss = loss + c["ssim_weight"] * (1 - ssim_torch(p, y))
            self._update("G", loss)
            logs["loss"] = loss.item()
        elif self.method == "h2t-msunet":
            _, outs = self.G(x, return_all=True)
            K = len(outs)
            loss = 0.0
            for k, o in enumerate(outs):
                f = 2 ** (K - 1 - k)
                yk = F.avg_pool2d(y, f) if f > 1 else y
                loss = loss + (o - yk).abs().mean()
            loss = loss + c.get("ssim_weight", 0.0) * (1 - ssim_torch(outs[-1], y))
            self._update("G", loss)
            logs["loss"] = loss.item()
        elif self.method == "m-deblurgan":
            r = self.G.upscale
            out, aux = self.G(x, return_all=True)
            binned = F.avg_pool2d(out, r) if r > 1 else out
            y_up = F.interpolate(y, scale_factor=r, mode="bilinear", align_corners=False) if r > 1 else y
            content = (F.mse_loss(binned, y) + (binned - y).abs().mean()
                       + fw * self.feature(binned, y)
                       + c["ssim_weight"] * (1 - ssim_torch(binned, y))
                       + c["sr_weight"] * (out - y_up).abs().mean()
                       + c["approx_weight"] * (aux["approx"] - y).abs().mean())
            adv = lsgan(self.D(out), True)
            loss = content + c["adv_weight"] * adv
            self._update("G", loss)
            d_loss = 0.5 * (lsgan(self.D(y_up), True) + lsgan(self.D(out.detach()), False))
            self._update("D", d_loss)
            logs.update(loss=loss.item(), d=d_loss.item())
        elif self.method == "comi-cyclegan":
            fake_b = self.G(x)  # blurred -> sharp
            fake_a = self.F_(y)  # sharp -> blurred
            content = ((fake_b - y).abs().mean() + fw * self.feature(fake_b, y)
                       + (fake_a - x).abs().mean() + fw * self.feature(fake_a, x))
            adv = lsgan(self.DB(fake_b), True) + lsgan(self.DA(fake_a), True)
            cycle = (self.F_(fake_b) - x).abs().mean() + (self.G(fake_a) - y).abs().mean()
            loss = c["adv_weight"] * adv + c["content_weight"] * content + c["cycle_weight"] * cycle
            self._update("G", loss)
            d_loss = 0.5 * (lsgan(self.DB(y), True) + lsgan(self.DB(fake_b.detach()), False)
                            + lsgan(self.DA(x), True) + lsgan(self.DA(fake_a.detach()), False))
            self._update("D", d_loss)
            logs.update(loss=loss.item(), content=content.item(), d=d_loss.item())
        return logs

    def _update(self, name, loss):
        o = self.optims[name]
        o.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in o.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        o.step()

    @torch.no_grad()
    def val_psnr(self, vx, vy, batch=16) -> float:
        self.G.eval()
        ps = []
        for i in range(0, len(vx), batch):
            p = self.G(vx[i:i + batch].to(self.dev))
            r = getattr(self.G, "upscale", 1)
            if r > 1:
                p = F.avg_pool2d(p, r)
            t = vy[i:i + batch].to(self.dev)
            rng = (t.amax(dim=(1, 2, 3)) - t.amin(dim=(1, 2, 3))).clamp_min(1e-6)
            mse = ((p - t) ** 2).mean(dim=(1, 2, 3))
            ps.append(10 * torch.log10(rng ** 2 / mse.clamp_min(1e-12)))
        self.G.train()
        return float(torch.cat(ps).mean())


# -------------------------------------------------------------------------------- training
def iter_train_generator(method, out_dir="weights", *, minutes=None, steps=None, device="auto", seed=0,
                         resume=True, from_zstack=None, init=None, data_root=None, num_threads=None,
                         evaluate=True, write_card=True, checkpoint_every_s=60.0, **config):
    """Generator form of :func:`train_generator`: yields Progress, returns the result dict."""
    if method not in METHODS:
        raise ValueError(f"unknown generator {method!r}; choose one of {', '.join(METHODS)}")
    if from_zstack is not None:
        return (yield from iter_finetune_zstack(method, out_dir, from_zstack=from_zstack, init=init,
                                                minutes=minutes, steps=steps, device=device, seed=seed,
                                                num_threads=num_threads, **config))
    with torch_threads(num_threads):
        return (yield from _train(method, out_dir, minutes=minutes, steps=steps, device=device, seed=seed,
                                  resume=resume, init=init, data_root=data_root, num_threads=num_threads,
                                  evaluate=evaluate, write_card=write_card,
                                  checkpoint_every_s=checkpoint_every_s, config=config))


def _train(method, out_dir, *, minutes, steps, device, seed, resume, init, data_root, num_threads, evaluate,
           write_card, checkpoint_every_s, config):
    from .pairs import GEN_OPTICS, cached_synth, fixed_pairs
    from .sources import load_sources, split_sources

    t_wall = time.time()
    dev = resolve_device(device)
    cfg = generator_config(method, config)
    if minutes is None and steps is None:
        minutes = 12.0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckdir = out / "checkpoints" / method

    yield Progress(0, 1, "loading and blurring the source images")
    sources = load_sources(data_root)
    split = split_sources(sources)
    # optional [min, max] defocus levels of the training pairs (default 1..17); a later stage
    # may narrow them to spend a short run on the levels a model restores worst
    lv = cfg.get("levels")
    synth = cached_synth(split["train"], GEN_OPTICS,
                         **({"min_level": int(lv[0]), "max_level": int(lv[1])} if lv else {}))
    vsynth = cached_synth(split["val"], GEN_OPTICS, max_level=10, min_level=2, p_constant=1.0)
    vx, vy = fixed_pairs(vsynth, 48, 128, seed=777)

    rng = TorchRNG(seed, dev)
    with rng:  # the initial weights
        feature = FeatureLoss(cfg.get("feature", "gradient"))
        tr = _Trainer(method, cfg, dev, feature)
    stages = []  # earlier training stages of the init weights (their commands, steps, time)
    if init:
        from ..models.loader import load_state

        state, init_meta = load_state(init)
        tr.G.load_state_dict(state)
        stages = list(init_meta.get("provenance", {}).get("stages", []))
        if not stages:
            prev = Path(init).with_name(Path(init).stem + "_eval.json")
            if prev.exists():
                pj = json.loads(prev.read_text())
                stages = [{k: pj.get(k) for k in ("command", "steps", "train_seconds", "weights_sha256")}]
            else:
                stages = [{"command": None, "weights_sha256": file_sha256(init)}]
    cl = dev.type == "cuda"
    if cl:
        for m in tr.modules.values():
            m.to(memory_format=torch.channels_last)
    # mixed precision on CUDA: bfloat16 autocast (no loss scaling needed). On this project's
    # AVX2-only CPUs bf16 is emulated and slower (measured for DelpNet), so the CPU trains in fp32.
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()

    budget = Budget(minutes, steps)
    schedule = cfg.get("schedule", "cosine")
    scheds = {name: FunctionLR(o, lambda k: cfg["lr"] * generator_factor(budget.fraction(k), schedule))
              for name, o in tr.optims.items()}
    parts = dict(modules=tr.modules, optimizers=tr.optims, schedulers=scheds)
    st = {"step": 0, "elapsed_s": 0.0, "history": [], "seed": seed}
    if resume:
        loaded = load_checkpoint(ckdir, **parts)
        if loaded:
            st.update({k: loaded[k] for k in ("step", "elapsed_s", "history") if k in loaded})
    budget.start(st["elapsed_s"])
    for s in scheds.values():  # this run's lr at the restored step and time
        s.refresh()
    last_ck = last_log = time.time()
    tr.train()
    run_loss = []
    while budget.fraction(st["step"]) < 1.0:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + st["step"])
        x, y = synth.sample(cfg["batch"], cfg["patch"], gen)
        x, y = x.to(dev), y.to(dev)
        if cl:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        with rng, amp:
            logs = tr.step(x, y)
        st["step"] += 1
        run_loss.append(logs["loss"])
        if time.time() - last_log > 30 or st["step"] == 1:
            vp = tr.val_psnr(vx, vy)
            st["history"].append({"step": st["step"], "elapsed_s": round(budget.elapsed(), 1),
                                  "loss": float(np.mean(run_loss)), "val_psnr": round(vp, 3),
                                  "lr": tr.optims["G"].param_groups[0]["lr"]})
            run_loss = []
            last_log = time.time()
            print(json.dumps(st["history"][-1]), flush=True)
        for s in scheds.values():
            s.step()
        if time.time() - last_ck > checkpoint_every_s:
            st["elapsed_s"] = budget.elapsed()
            save_checkpoint(ckdir, st, **parts)
            last_ck = time.time()
        yield Progress(*budget.progress(st["step"]), f"{method} step {st['step']} loss {logs['loss']:.4f}")
    st["elapsed_s"] = budget.elapsed()
    save_checkpoint(ckdir, st, **parts)
    vp = tr.val_psnr(vx, vy)
    st["history"].append({"step": st["step"], "elapsed_s": round(st["elapsed_s"], 1), "val_psnr": round(vp, 3)})

    G = tr.G.to("cpu").eval().to(memory_format=torch.contiguous_format)
    command = config.get("command") or (
        f"napari-refocus train {method} --out {out_dir} "
        + (f"--minutes {minutes} " if minutes else "") + (f"--steps {steps} " if steps else "")
        + f"--seed {seed}" + (f" --threads {num_threads}" if num_threads else "")
        + (f" --init {init}" if init else "") + (f" --lr {config['lr']}" if "lr" in config else "")
        + "".join(f" --set {k}={json.dumps(v, separators=(',', ':'))}" for k, v in config.items()
                  if k not in ("lr", "command")))
    stages = stages + [{"command": command, "steps": st["step"], "train_seconds": round(st["elapsed_s"], 1)}]
    meta = {
        "method": method,
        "normalisation": {"kind": "percentiles", "percentiles": [1.0, 99.8]},
        "optics": GEN_OPTICS.as_dict(),
        "train_config": {k: v for k, v in cfg.items() if k != "command"},
        "provenance": {
            "train_sources": [s.name for s in split["train"]],
            "val_sources": [s.name for s in split["val"]],
            "test_sources": [s.name for s in split["test"]],
            "steps": st["step"], "train_seconds": round(st["elapsed_s"], 1), "seed": seed,
            "feature_loss": feature.kind, "device": str(dev), "init": str(init) if init else None,
            "command": command, "stages": stages,
        },
    }
    wpath = save_weights(G, out / f"{method}.safetensors", meta=meta)
    result = {"method": method, "weights": str(wpath), "weights_sha256": file_sha256(wpath),
              "n_parameters": int(sum(p.numel() for p in G.parameters())), "config": cfg,
              "steps": st["step"], "train_seconds": round(st["elapsed_s"], 1),
              "wall_seconds": round(time.time() - t_wall, 1), "history": st["history"],
              "feature_loss": feature.describe(), "val_psnr": vp, "device": str(dev),
              "threads": torch.get_num_threads(), "cpu": cpu_name(),
              "sources": {k: [s.name for s in v] for k, v in split.items()},
              "licences": sorted({s.licence for s in sources}),
              "command": command, "stages": stages}
    if evaluate:
        yield Progress(0, 1, "evaluating on the held-out set")
        result["eval"] = evaluate_generator(method, wpath, data_root=data_root, device=dev)
    (out / f"{method}_eval.json").write_text(json.dumps(result, indent=1, default=str))
    if write_card:
        write_generator_card(out / f"{method}.md", result)
    return result


def update_eval(method, out_dir="weights", *, levels=tuple(range(2, 11)) + (11, 14, 17), num_threads=None) -> dict:
    """(Re-)evaluate ``<out_dir>/<method>.safetensors`` on the held-out set and rewrite its
    ``<method>_eval.json`` and model card (lets the evaluation run apart from the training)."""
    out = Path(out_dir)
    path = out / f"{method}_eval.json"
    result = json.loads(path.read_text())
    with torch_threads(num_threads):
        result["eval"] = evaluate_generator(method, out / f"{method}.safetensors", levels=levels)
    result["eval"]["weights_sha256"] = file_sha256(out / f"{method}.safetensors")
    path.write_text(json.dumps(result, indent=1, default=str))
    write_generator_card(out / f"{method}.md", result)
    return result


def train_generator(method, out_dir="weights", *, minutes=None, steps=None, device="auto", seed=0, resume=True,
                    from_zstack=None, init=None, progress=True, **config) -> dict:
    """Train (or, with ``from_zstack``/``init``, fine-tune) one learned generator; see the
    module docstring. Returns a dict with the weights path, its SHA-256, the parameter count,
    the configuration, training time/steps, the history and (unless ``evaluate=False``) the
    held-out per-level metrics."""
    job = iter_train_generator(method, out_dir, minutes=minutes, steps=steps, device=device, seed=seed,
                               resume=resume, from_zstack=from_zstack, init=init, **config)
    return run_with_bar(job, method, enabled=progress, mininterval=5.0)
