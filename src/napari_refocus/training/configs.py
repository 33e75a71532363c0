"""Configurations of the shipped networks: the generators' training settings, the papers'
sizes and how the shipped models deviate from them, and DelpNet's class names and input scale."""

from __future__ import annotations

# ------------------------------------------------------------------------------- DelpNet
DELPNET = "delpnet"
CLASS_NAMES = [str(i) for i in range(11)] + ["bg"]
NORMALISATION = {"kind": "divide", "value": 65535.0, "input": "raw 16-bit camera counts"}

# ---------------------------------------------------------------------------- generators
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


PAPERS = {
    "comi-cyclegan": "COMI (seed 000): CycleGAN-based refocusing of microscopy images",
    "refocus-unet": "ReFocus (seed 001): U-Net with a ResNet-34 encoder and a VGG-16 feature loss, BBBC006",
    "m-deblurgan": "M-Deblurgan (seed 002): multi-scale deblurring GAN with optimal approximation and "
                   "super-resolution",
    "h2t-msunet": "Head-to-tail multi-scale U-Net (seed 004), BBBC006",
}


def generator_config(method: str, overrides: dict | None = None) -> dict:
    """A deep copy of ``DEFAULTS[method]`` with ``overrides`` applied (``model``/``disc`` dicts
    are merged key by key, other entries replaced); raises ValueError for an unknown method."""
    import json

    if method not in DEFAULTS:
        raise ValueError(f"unknown generator {method!r}; choose one of {', '.join(METHODS)}")
    cfg = json.loads(json.dumps(DEFAULTS[method]))
    for k, v in (overrides or {}).items():
        if k in ("model", "disc") and isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg

