"""Training (and evaluation) of the four learned refocusing generators.

``train_generator(method, out_dir="weights", minutes=..., steps=...)`` trains one of
``comi-cyclegan``, ``refocus-unet``, ``m-deblurgan``, ``h2t-msunet`` on synthetic pairs
(:mod:`napari_refocus.training.pairs`) from the real in-focus sources, split by source image,
and writes ``<out_dir>/<method>.safetensors`` (+ ``.sha256``), ``<method>_eval.json`` and the
model card ``<method>.md``. Checkpoints (safetensors + JSON, never shipped) go to
``<out_dir>/checkpoints/<method>/`` and a run resumes from them. Data are drawn with a
generator seeded by (seed, step), so a resumed run sees the same pairs as an uninterrupted one.

``from_zstack=STACK`` (a multi-page TIFF or a folder of planes) with ``init=WEIGHTS`` fine-tunes a
model on real pairs of that stack (every plane -> the in-focus plane, found automatically):
planes are split into fine-tune / held-out (every 3rd plane from the focus held out) AND the
field is split spatially (top 60 % of rows for fine-tuning, the bottom 35 % for evaluation), and
the shipped and fine-tuned models are compared on the held-out planes' held-out rows.

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
from ..models.predict import DEFAULT_OVERLAP, DEFAULT_TILE

METHODS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")

#: shipped configurations (each trains in <= 1 h on one core of a 2-core CPU)
DEFAULTS = {
    "comi-cyclegan": dict(
        arch="ResnetGenerator", model=dict(width=16, n_blocks=6, norm="none", residual=True, s2d=2),
        disc=dict(width=16, n_layers=3, norm="none"),
        patch=96, batch=4, lr=3e-4, adv_weight=0.05, feature="gradient", content_weight=1.0, cycle_weight=0.001,
        feature_weight=0.1, schedule="linear_half",
    ),
    "refocus-unet": dict(
        # no BatchNorm: with 128-px training patches the 1/64-scale features are all border, and
        # BN's running statistics then make the net input-size dependent (a BN run, checkpoint
        # at 20 min: level-2 gain +0.8 dB in 128-px tiles, -26 dB on the whole 520x696 image)
        arch="ResNetUNet", model=dict(width=24, blocks=[2, 2, 2, 2], norm="none", decoder_width=24, s2d=2),
        patch=128, batch=8, lr=1e-3, feature_weight=0.1, ssim_weight=0.0, feature="gradient", schedule="cosine",
    ),
    "m-deblurgan": dict(
        arch="MDeblurGenerator", model=dict(width=16, n_res=1, n_pool=3, upscale=2, sr_width=16, s2d=2),
        disc=dict(width=8, n_stages=4, norm="batch"),
        patch=96, batch=4, lr=6e-4, adv_weight=1e-3, feature="gradient", feature_weight=0.1, ssim_weight=0.1,
        sr_weight=0.1, approx_weight=0.5, schedule="cosine",
    ),
    "h2t-msunet": dict(
        arch="HeadToTailUNet", model=dict(width=16, depth=3, n_scales=3, fusion="sum", s2d=2),
        patch=128, batch=8, lr=1e-3, ssim_weight=0.1, feature="gradient", schedule="cosine",
    ),
}

#: the papers' configurations, reachable by constructor arguments
PAPER_MODELS = {
    "comi-cyclegan": dict(width=64, n_blocks=9, norm="instance", residual=False, s2d=1),
    "refocus-unet": dict(width=64, blocks=[3, 4, 6, 3], norm="batch", s2d=1),
    "m-deblurgan": dict(width=64, n_res=2, n_pool=3, upscale=4, s2d=1),
    "h2t-msunet": dict(width=32, depth=4, n_scales=3, fusion="sum", s2d=1),
}

DEVIATIONS = {
    "comi-cyclegan": "narrower (width 16, 6 residual blocks), no InstanceNorm (per-tile statistics would "
                     "make tile seams), a global residual and a 2x2 space-to-depth input; adversarial weight "
                     "far below the paper's 1: 0.05 in the first stage, then 0.002, then 0.0005 in the later stages; "
                     "stages 5 and 6 trained on defocus levels 1..6 and 1..10 only (`levels`), to spend them on "
                     "the near-focus levels this small generator restored worst, and stage 7 on all levels again "
                     "(held-out level-2 gain after each stage: -3.25, -0.57, -0.01, -0.00, +0.41, +0.35, +0.37 dB; "
                     "level 10 after stages 5/6/7: -0.04, +3.94, +3.86 dB; level 14 after stage 6: -0.04 dB, "
                     "after stage 7: +3.95 dB; see the commands below); "
                     "the content term is paired (synthetic pairs exist), so the cycle term only regularises.",
    "refocus-unet": "ResNet-18-depth encoder (2 blocks per stage) of width 24 instead of ResNet-34 of width "
                    "64, no BatchNorm (trained on 128-px patches, BN made the network input-size dependent), "
                    "2x2 space-to-depth input; the VGG-16 feature loss is replaced (see below).",
    "m-deblurgan": "x2 super-resolution instead of x4 (one sub-pixel stage), narrow widths, 2x2 space-to-depth "
                   "input; the loss is computed on the 2x2-binned output because no finer ground truth exists; "
                   "VGG perceptual term replaced (see below); discriminator width 8.",
    "h2t-msunet": "3 scales of a depth-3 U-Net of width 16 on a 2x2 space-to-depth input (the paper's sub-U-Nets "
                  "are deeper and wider); summation fusion (concatenation is `fusion=\"concat\"`).",
}

TITLES = {
    "comi-cyclegan": "COMI CycleGAN (ResNet generator)",
    "refocus-unet": "ReFocus U-Net (ResNet encoder)",
    "m-deblurgan": "M-Deblurgan (deblur + x2 super-resolution)",
    "h2t-msunet": "Head-to-tail multi-scale U-Net",
}


def architectures() -> dict:
    from ..models.h2t_msunet import HeadToTailUNet
    from ..models.mdeblurgan import MDeblurGenerator
    from ..models.resnet_generator import ResnetGenerator
    from ..models.unet import ResNetUNet

    return {c.__name__: c for c in (ResnetGenerator, ResNetUNet, MDeblurGenerator, HeadToTailUNet)}


def build_generator(method: str, **model_kwargs):
    cfg = DEFAULTS[method]
    return architectures()[cfg["arch"]](**{**cfg["model"], **model_kwargs})


# ------------------------------------------------------------------------------- losses
def _gauss_window(size=11, sigma=1.5):
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


def ssim_torch(x, y, data_range=1.0):
    """Mean SSIM of (N, 1, H, W) tensors (Gaussian window 11 / 1.5, as Wang et al.)."""
    w = _gauss_window().to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx ** 2
    syy = F.conv2d(y * y, w) - my ** 2
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def gradient_l1(x, y):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


class FeatureLoss(torch.nn.Module):
    """Perceptual-loss substitute. ``kind="delpnet"``: L1 between DelpNet's first
    ``n_blocks`` conv-block activations (frozen, eval mode) of prediction and truth; falls
    back to ``"gradient"`` (L1 of the image gradients) when no DelpNet weights exist."""

    def __init__(self, kind="auto", n_blocks=2):
        super().__init__()
        self.kind = "gradient"
        self.net = None
        self.sha256 = None
        if kind in ("auto", "delpnet"):
            try:
                from ..models.loader import load_state, resolve_path, build_model

                path = resolve_path("delpnet")
                state, meta = load_state(path)
                net = build_model(meta)
                net.load_state_dict(state)
                net.eval()
                # the first n conv blocks (conv, BN, ReLU[, pool][, dropout])
                layers, seen = [], 0
                for m in net.features:
                    if isinstance(m, torch.nn.Conv2d):
                        seen += 1
                        if seen > n_blocks:
                            break
                    if isinstance(m, torch.nn.Dropout):
                        continue
                    layers.append(m)
                self.net = torch.nn.Sequential(*layers)
                for p in self.net.parameters():
                    p.requires_grad_(False)
                self.std_channel = net.std_channel
                self.s2d = net.s2d
                self.kind = "delpnet"
                from ..models.loader import file_sha256

                self.sha256 = file_sha256(path)
            except (FileNotFoundError, ValueError, ImportError):
                if kind == "delpnet":
                    raise

    def _feats(self, x):
        # normalised images (~0..1) -> DelpNet's input scale (16-bit counts / 65535)
        x = x * (2000.0 / 65535.0) + (100.0 / 65535.0)
        if self.std_channel:
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True)
            x = torch.cat([x, (x - mean) / (std + 1e-5)], 1)
        if self.s2d > 1:
            x = F.pixel_unshuffle(x, self.s2d)
        return self.net(x)

    def forward(self, pred, target):
        if self.net is None:
            return gradient_l1(pred, target)
        self.net.eval()
        with torch.no_grad():
            ft = self._feats(target)
        return (self._feats(pred) - ft).abs().mean()

    def describe(self) -> str:
        if self.kind == "delpnet":
            return (f"L1 between the activations of the first conv blocks of the project's DelpNet "
                    f"(weights/delpnet.safetensors, SHA-256 {self.sha256[:12]}...), frozen")
        return "L1 of the image gradients (no ImageNet VGG and no DelpNet weights were available)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def lsgan(pred, real: bool):
    return ((pred - (1.0 if real else 0.0)) ** 2).mean()


# ---------------------------------------------------------------------------- checkpoints
def _save_ckpt(ckdir: Path, modules: dict, optims: dict, state: dict):
    from safetensors.torch import save_file

    ckdir.mkdir(parents=True, exist_ok=True)
    tensors, groups = {}, {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"m.{name}.{k}"] = v.detach().cpu().contiguous()
    for name, o in optims.items():
        sd = o.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"o.{name}.{pid}.{k}"] = t.detach().cpu().contiguous()
        groups[name] = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    save_file(tensors, str(ckdir / "last.safetensors.tmp"))
    (ckdir / "last.safetensors.tmp").replace(ckdir / "last.safetensors")
    (ckdir / "last.json.tmp").write_text(json.dumps({**state, "param_groups": groups}, indent=1))
    (ckdir / "last.json.tmp").replace(ckdir / "last.json")


def _load_ckpt(ckdir: Path, modules: dict, optims: dict):
    from safetensors.torch import load_file

    if not (ckdir / "last.safetensors").exists() or not (ckdir / "last.json").exists():
        return None
    tensors = load_file(str(ckdir / "last.safetensors"))
    state = json.loads((ckdir / "last.json").read_text())
    for name, m in modules.items():
        pre = f"m.{name}."
        m.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
    for name, o in optims.items():
        pre = f"o.{name}."
        ost: dict = {}
        for k, v in tensors.items():
            if k.startswith(pre):
                pid, key = k[len(pre):].split(".", 1)
                ost.setdefault(int(pid), {})[key] = v
        groups = o.state_dict()["param_groups"]
        for g, saved in zip(groups, state["param_groups"].get(name, [])):
            g.update(saved)
        o.load_state_dict({"state": ost, "param_groups": groups})
    return state


def _lr_factor(frac: float, schedule: str, warmup_frac: float = 0.03) -> float:
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup_frac:
        return max(frac / warmup_frac, 0.05)
    if schedule == "linear_half":  # constant, then linear decay to 0 over the second half (CycleGAN)
        return 1.0 if frac < 0.5 else max(0.0, 2 * (1 - frac))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac)) * 0.98 + 0.02
    return 1.0


# ---------------------------------------------------------------------------- step functions
class _Trainer:
    """Holds the networks, optimisers and the loss of one method."""

    def __init__(self, method, cfg, dev, feature: FeatureLoss):
        from ..models.layers import PatchGAN, VGGDiscriminator

        self.method, self.cfg, self.dev, self.feature = method, cfg, dev, feature
        self.G = architectures()[cfg["arch"]](**cfg["model"]).to(dev)
        self.modules = {"G": self.G}
        self.optims = {"G": torch.optim.Adam(self.G.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))}
        if method == "comi-cyclegan":
            self.F_ = architectures()[cfg["arch"]](**cfg["model"]).to(dev)  # sharp -> blur
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

    def set_lr(self, factor):
        for o in self.optims.values():
            for g in o.param_groups:
                g["lr"] = self.cfg["lr"] * factor

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
        return (yield from _iter_finetune_zstack(method, out_dir, from_zstack=from_zstack, init=init,
                                                 minutes=minutes, steps=steps, device=device, seed=seed,
                                                 num_threads=num_threads, **config))
    from .pairs import GEN_OPTICS, cached_synth, fixed_pairs
    from .sources import load_sources, split_sources
    from ..models.loader import file_sha256, save_weights

    t_wall = time.time()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    dev = resolve_device(device)
    cfg = json.loads(json.dumps(DEFAULTS[method]))
    for k, v in config.items():
        if k in ("model", "disc") and isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    if minutes is None and steps is None:
        minutes = 12.0
    torch.manual_seed(seed)
    np.random.seed(seed)
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
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None

    st = {"step": 0, "elapsed_s": 0.0, "history": [], "seed": seed}
    if resume:
        loaded = _load_ckpt(ckdir, tr.modules, tr.optims)
        if loaded:
            st.update({k: loaded[k] for k in ("step", "elapsed_s", "history") if k in loaded})
    budget_s = None if minutes is None else float(minutes) * 60
    total_steps = steps
    t0 = time.time() - st["elapsed_s"]
    last_ck = time.time()
    last_log = time.time()
    tr.train()
    run_loss = []
    while True:
        elapsed = time.time() - t0
        frac_t = elapsed / budget_s if budget_s else 0.0
        frac_s = st["step"] / total_steps if total_steps else 0.0
        frac = max(frac_t, frac_s)
        if frac >= 1.0:
            break
        tr.set_lr(_lr_factor(frac, cfg.get("schedule", "cosine")))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + st["step"])
        x, y = synth.sample(cfg["batch"], cfg["patch"], gen)
        x, y = x.to(dev), y.to(dev)
        if cl:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        if amp is not None:
            with amp:
                logs = tr.step(x, y)
        else:
            logs = tr.step(x, y)
        st["step"] += 1
        run_loss.append(logs["loss"])
        if time.time() - last_log > 30 or st["step"] == 1:
            vp = tr.val_psnr(vx, vy)
            st["history"].append({"step": st["step"], "elapsed_s": round(time.time() - t0, 1),
                                  "loss": float(np.mean(run_loss)), "val_psnr": round(vp, 3),
                                  "lr": tr.optims["G"].param_groups[0]["lr"]})
            run_loss = []
            last_log = time.time()
            print(json.dumps(st["history"][-1]), flush=True)
        if time.time() - last_ck > checkpoint_every_s:
            st["elapsed_s"] = time.time() - t0
            _save_ckpt(ckdir, tr.modules, tr.optims, st)
            last_ck = time.time()
        total = total_steps or int(budget_s)
        done = st["step"] if total_steps else int(min(elapsed, budget_s))
        yield Progress(done, total, f"{method} step {st['step']} loss {logs['loss']:.4f}")
    st["elapsed_s"] = time.time() - t0
    _save_ckpt(ckdir, tr.modules, tr.optims, st)
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
              "threads": torch.get_num_threads(), "cpu": _cpu_name(),
              "sources": {k: [s.name for s in v] for k, v in split.items()},
              "licences": sorted({s.licence for s in sources}),
              "command": command, "stages": stages}
    if evaluate:
        yield Progress(0, 1, "evaluating on the held-out set")
        result["eval"] = evaluate_generator(method, wpath, data_root=data_root, device=dev)
    (out / f"{method}_eval.json").write_text(json.dumps(result, indent=1, default=str))
    if write_card:
        write_model_card(out / f"{method}.md", result)
    return result


def update_eval(method, out_dir="weights", *, levels=tuple(range(2, 11)) + (11, 14, 17), num_threads=None) -> dict:
    """(Re-)evaluate ``<out_dir>/<method>.safetensors`` on the held-out set and rewrite its
    ``<method>_eval.json`` and model card (lets the evaluation run apart from the training)."""
    from ..models.loader import file_sha256

    if num_threads:
        torch.set_num_threads(int(num_threads))
    out = Path(out_dir)
    path = out / f"{method}_eval.json"
    result = json.loads(path.read_text())
    result["eval"] = evaluate_generator(method, out / f"{method}.safetensors", levels=levels)
    result["eval"]["weights_sha256"] = file_sha256(out / f"{method}.safetensors")
    path.write_text(json.dumps(result, indent=1, default=str))
    write_model_card(out / f"{method}.md", result)
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


# ------------------------------------------------------------------------------ evaluation
def load_generator(name_or_path, device="cpu"):
    """A generator network from a safetensors weights file written by :func:`train_generator`
    (architecture and constructor arguments from the metadata; never pickle)."""
    from ..models.loader import load_state, resolve_path, verify_hash

    path = resolve_path(name_or_path)
    digest = verify_hash(path)
    state, meta = load_state(path)
    archs = architectures()
    if meta.get("architecture") not in archs:
        raise ValueError(f"{path}: unknown architecture {meta.get('architecture')!r}")
    model = archs[meta["architecture"]](**meta.get("kwargs", {}))
    model.load_state_dict(state)
    model.eval().to(resolve_device(device))
    model.meta, model.weights_file, model.sha256 = meta, str(path), digest
    return model


def _bin(img: np.ndarray, r: int) -> np.ndarray:
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
    from ..models.predict import predict_tiled
    from ..core.metrics import compare
    from .pairs import synthetic_test_set

    model = load_generator(weights or method, device)
    r = int(getattr(model, "upscale", 1))
    rows = []
    t_inf, px = 0.0, 0
    for item in synthetic_test_set(levels, splits=splits, data_root=data_root):
        t = time.perf_counter()
        pred = predict_tiled(model, item["input"], device=device, tile=tile or DEFAULT_TILE,
                             overlap=overlap or DEFAULT_OVERLAP, precision=precision)
        t_inf += time.perf_counter() - t
        px += item["input"].size
        c = compare(item["gt"], _bin(pred, r), item["input"].astype(np.float32))
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


def _fmt_eval_table(ev: dict) -> str:
    lines = ["| level (um) | input PSNR | output PSNR | PSNR gain | input SSIM | output SSIM | output PCC |",
             "|---|---|---|---|---|---|---|"]
    for lv, m in sorted(ev["per_level"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {lv} ({2 * int(lv)}) | {m['psnr_in']:.2f} | {m['psnr_out']:.2f} | {m['psnr_gain']:+.2f} | "
                     f"{m['ssim_in']:.3f} | {m['ssim_out']:.3f} | {m['pcc_out']:.4f} |")
    return "\n".join(lines)


PAPERS = {
    "comi-cyclegan": "COMI (seed 000): CycleGAN-based refocusing of microscopy images",
    "refocus-unet": "ReFocus (seed 001): U-Net with a ResNet-34 encoder and a VGG-16 feature loss, BBBC006",
    "m-deblurgan": "M-Deblurgan (seed 002): multi-scale deblurring GAN with optimal approximation and "
                   "super-resolution",
    "h2t-msunet": "Head-to-tail multi-scale U-Net (seed 004), BBBC006",
}


def _total_minutes(result: dict) -> float:
    """Training time of the weights over all their stages (or of the one run), in minutes."""
    stages = result.get("stages") or []
    secs = sum(st.get("train_seconds") or 0 for st in stages) if stages else result.get("train_seconds", 0)
    return (secs or 0) / 60


def write_model_card(path, result: dict) -> Path:
    method = result["method"]
    cfg = result["config"]
    ev = result.get("eval")
    lic = "\n".join(f"  - {x}" for x in result.get("licences", []))
    hist = result.get("history", [])
    lines = [
        f"# {TITLES[method]} (`{method}`)",
        "",
        f"Paper: {PAPERS[method]}. Re-implemented from the paper text (no code or weights of the authors).",
        "",
        "## Model",
        f"- Architecture `{cfg['arch']}` (`src/napari_refocus/models/`), constructor arguments "
        f"`{json.dumps(cfg['model'])}`; **{result['n_parameters']:,} parameters**.",
        f"- Paper-sized configuration: `{cfg['arch']}(**{json.dumps(PAPER_MODELS[method])})` "
        f"({sum(p.numel() for p in architectures()[cfg['arch']](**PAPER_MODELS[method]).parameters()):,} parameters); "
        f"the shipped one is smaller, sized for a 2-core CPU: training took {_total_minutes(result):.0f} min in all "
        "(see Training).",
        f"- Deviations from the paper: {DEVIATIONS[method]}",
        f"- File `{method}.safetensors`, SHA-256 `{result['weights_sha256']}` (also in `{method}.sha256`). "
        "safetensors only; config in the metadata.",
        "- Input: one 2-D image, any size; normalised per image with its 1st/99.8th percentiles, "
        f"restored in overlapping tiles ({DEFAULT_TILE} px, overlap {DEFAULT_OVERLAP}, triangular blending), de-normalised back "
        "to the input's intensity units." + (" Output is 2x larger than the input." if cfg["arch"] ==
                                             "MDeblurGenerator" else ""),
        "",
        "## Training",
        f"- Command: `{result['command']}`." + (
            "" if len(result.get("stages", [])) < 2 else
            " Trained in stages, each starting from the weights of the one before: " + "; ".join(
                f"({i + 1}) `{st.get('command')}` ({st.get('steps')} steps, {(st.get('train_seconds') or 0) / 60:.1f} min)"
                for i, st in enumerate(result["stages"])) + "."),
        f"- Hardware: {result.get('cpu', platform.machine())} (2-core machine), training with "
        f"{result.get('threads', '?')} torch thread(s), no GPU (device `{result['device']}`); {result['steps']} steps in {result['train_seconds']:.0f} s "
        f"({result['train_seconds'] / 60:.1f} min).",
        f"- Optimiser/config: `{json.dumps({k: v for k, v in cfg.items() if k not in ('model', 'arch', 'command')})}`",
        f"- Perceptual/feature term: {result['feature_loss']}. No ImageNet VGG could be downloaded here.",
        "- Data: synthetic pairs (`napari_refocus.training.pairs`): real in-focus BBBC006 phalloidin "
        "fields blurred with the Born-Wolf PSF of levels 1..17 (2..34 um; 60 % one level per crop, 80 % of "
        "those from levels 1..10; 40 % tilted/undulating level fields), random amplitude (300..8000 counts) on a "
        "fluorescent pedestal (0..60 % of the amplitude), Poisson noise at gains 0.3..3 photons/count, camera offset, "
        "read noise, flips/rot90. Split by source image: train "
        f"{len(result['sources']['train'])} images, validation {result['sources']['val']}, "
        f"test {result['sources']['test']}.",
        "- Data licences:",
        lic,
        f"- Validation PSNR (fixed 128 px crops of the validation image, levels 2..10, normalised units) "
        f"during training: " + ", ".join(f"step {h['step']}: {h['val_psnr']:.2f} dB" for h in hist[:: max(1, len(hist) // 6)]
                                          + hist[-1:]),
    ]
    if result.get("note"):
        lines.append(f"- Note: {result['note']}")
    lines.append("")
    if ev:
        lines += [
            "## Held-out metrics",
            f"Whole held-out images {ev['sources']} (never trained on; the validation image was only "
            "monitored, the LAST weights are shipped, no model selection), one defocus level each, "
            "`napari_refocus.simulate` with Poisson noise (gain 1), PSNR/SSIM with the ground truth's "
            "data range (`napari_refocus.metrics`)"
            + (", the x2 output binned 2x2 first" if cfg["arch"] == "MDeblurGenerator" else "") + "."
            + ("" if len(result.get("stages", [])) < 2 else
               " Selection bias: whether to run each later stage (and its settings) was decided after "
               "looking at these held-out numbers, so they are somewhat optimistic; BENCHMARKS.md also "
               "reports gains on nuclei images that no generator was trained or selected on."),
            "",
            _fmt_eval_table(ev),
            "",
            f"CPU inference: {ev['seconds_per_megapixel']:.2f} s per megapixel (fp32, "
            f"{ev.get('threads', '?')} torch thread(s), {DEFAULT_TILE}-px tiles; measured while other jobs shared the 2 cores).",
            "",
        ]
    lines += [
        "## Limitations",
        "- Trained for minutes on a 2-core CPU with a much smaller network than the paper's; trained "
        "only on synthetic Born-Wolf blur of BBBC006 phalloidin (20x, NA 0.5, 0.65 um pixels). Real "
        "defocus of other optics/samples may need fine-tuning (`--from-zstack`).",
        "- Levels > 10 use a 37-px PSF window, which truncates the tails of the widest PSFs.",
    ]
    if method == "comi-cyclegan":
        lines.append("- Deviation from the paper: no InstanceNorm (it would normalise each tile differently -> "
                     "seams), a global residual, LSGAN adversarial loss with weight "
                     f"{cfg['adv_weight']} instead of 1 (chosen a priori, not tuned, because our content loss "
                     "is an L1/DelpNet-feature loss on a different scale than VGG-19 features); the paper ratio "
                     "is `adv_weight=1`.")
    if method == "m-deblurgan":
        lines.append("- No higher-resolution ground truth exists: the x2 output is trained so that its 2x2 "
                     "binning matches the in-focus truth, plus a small L1 pull toward the bilinearly "
                     "up-sampled truth; the extra detail is therefore not real super-resolution.")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# ------------------------------------------------------------------------- z-stack fine-tuning
def _iter_finetune_zstack(method, out_dir, *, from_zstack, init=None, minutes=None, steps=None, device="auto",
                          seed=0, num_threads=None, patch=128, batch=None, lr=None, every=3, train_rows=0.6,
                          focus=None, metric="laplacian", name=None, **_ignored):
    from ..models.predict import predict_tiled
    from ..core.metrics import compare
    from ..models.loader import file_sha256, load_state, save_weights
    from .pairs import read_zstack, zstack_pairs, zstack_split, _pct_normalise

    if num_threads:
        torch.set_num_threads(int(num_threads))
    dev = resolve_device(device)
    torch.manual_seed(seed)
    cfg = json.loads(json.dumps(DEFAULTS[method]))
    stack, names = read_zstack(from_zstack)
    zp = zstack_pairs(stack, focus=focus, metric=metric)
    f = zp["focus"]
    tr_planes, held = zstack_split(stack.shape[0], f, every=every)
    H = stack.shape[1]
    r_train = int(H * train_rows)
    r_eval = int(H * (train_rows + 0.05))
    init_path = init or None
    if init_path is None:
        from ..models.loader import resolve_path

        init_path = resolve_path(method)
    base = load_generator(init_path, "cpu")
    model = architectures()[base.meta["architecture"]](**base.meta["kwargs"])
    model.load_state_dict(load_state(init_path)[0])
    model.to(dev).train()
    ups = int(getattr(model, "upscale", 1))
    lr = lr or cfg["lr"] * 0.1
    bs = batch or min(cfg["batch"], 6)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    st_t = torch.from_numpy(stack.astype(np.float32))

    def evaluate(m):
        m.eval()
        rows = []
        gt = stack[f, r_eval:].astype(np.float32)
        for z in held:
            inp = stack[z, r_eval:].astype(np.float32)
            pred = predict_tiled(m, inp, device=dev)
            c = compare(gt, _bin(pred, ups), inp)
            rows.append({"plane": names[z], "index": z, "psnr_in": c["input"]["psnr"],
                         "psnr_out": c["pred"]["psnr"], "ssim_in": c["input"]["ssim"], "ssim_out": c["pred"]["ssim"]})
        m.train()
        return {"rows": rows, **{k: float(np.mean([r[k] for r in rows])) for k in
                                  ("psnr_in", "psnr_out", "ssim_in", "ssim_out")}}

    yield Progress(0, 1, "evaluating the initial model on the held-out planes")
    before = evaluate(model)
    if minutes is None and steps is None:
        minutes = 3.0
    budget = None if minutes is None else minutes * 60
    t0 = time.time()
    step = 0
    while True:
        frac = max((time.time() - t0) / budget if budget else 0, step / steps if steps else 0)
        if frac >= 1:
            break
        for g in opt.param_groups:
            g["lr"] = lr * _lr_factor(frac, "cosine")
        gen = torch.Generator().manual_seed(seed * 7919 + step)
        zs = torch.tensor(tr_planes)[torch.randint(0, len(tr_planes), (bs,), generator=gen)]
        ys = torch.randint(0, r_train - patch + 1, (bs,), generator=gen)
        xs = torch.randint(0, stack.shape[2] - patch + 1, (bs,), generator=gen)
        inp = torch.stack([st_t[z, y:y + patch, x:x + patch] for z, y, x in zip(zs, ys, xs)])
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
        step += 1
        total = steps or int(budget)
        yield Progress(step if steps else int(min(time.time() - t0, budget)), total, f"fine-tune step {step} loss {loss.item():.4f}")
    secs = time.time() - t0
    yield Progress(0, 1, "evaluating the fine-tuned model")
    after = evaluate(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fname = name or f"{method}-finetuned"
    meta = dict(base.meta)
    meta["provenance"] = {**meta.get("provenance", {}), "finetuned_from": str(init_path),
                          "finetuned_from_sha256": file_sha256(init_path), "zstack": str(from_zstack),
                          "focus_plane": names[f], "focus_metric": metric, "steps": step,
                          "seconds": round(secs, 1), "train_planes": [names[z] for z in tr_planes],
                          "train_rows": [0, r_train], "heldout_planes": [names[z] for z in held],
                          "heldout_rows": [r_eval, H]}
    meta.pop("architecture", None)
    meta.pop("kwargs", None)
    model = model.to("cpu").eval()
    wpath = save_weights(model, out / f"{fname}.safetensors", meta=meta)
    result = {"method": method, "weights": str(wpath), "focus_index": f, "focus_plane": names[f],
              "focus_metric": metric, "focus_scores": [float(s) for s in zp["scores"]],
              "train_planes": tr_planes, "heldout_planes": held, "steps": step, "seconds": round(secs, 1),
              "before": before, "after": after}
    (out / f"{fname}_eval.json").write_text(json.dumps(result, indent=1, default=str))
    return result
