"""Inference-time fusion of a network's layers (done once, when the run-time loader loads it).

* BatchNorm after a convolution is folded into the convolution's weights and bias
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``): in eval mode BN is an affine map per channel,
  so ``bn(conv(x)) = conv'(x)`` up to float32 rounding. Dropout (the identity in eval mode) is
  dropped.
* On a CPU with oneDNN, a convolution followed by ReLU runs as one oneDNN call with the ReLU
  fused (``torch.ops.mkldnn._convolution_pointwise``, what TorchInductor emits for conv + ReLU):
  one pass over the activations instead of two.

The fused module computes the same function as the trained one (logits equal to float32
rounding, ``tests/test_fused.py``); it is for inference only (no BatchNorm statistics, no
dropout), which is all :func:`napari_refocus.models.loader.load_model` serves. Training and
export use :func:`~napari_refocus.models.loader.load_fresh`, which is never fused.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvReLU(nn.Module):
    """A 2-D convolution with the ReLU after it fused into one oneDNN call (CPU only)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups, "relu", [], "")


def _fused_relu_works(device) -> bool:
    """True when oneDNN's conv + ReLU op exists here and agrees with the unfused pair."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.random.fork_rng(devices=[]):  # the check leaves the caller's random state alone
            torch.manual_seed(0)
            conv = nn.Conv2d(2, 3, 3, padding=1)
            x = torch.rand(1, 2, 5, 5)
        with torch.inference_mode():
            return bool(torch.allclose(ConvReLU(conv)(x), torch.relu(conv(x)), atol=1e-5))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def fuse_sequential(seq: nn.Sequential, *, fuse_relu: bool = False) -> nn.Sequential:
    """A new Sequential: Conv2d + BatchNorm2d folded into one Conv2d, Dropout removed, and
    (``fuse_relu``) Conv2d + ReLU as :class:`ConvReLU`. The input module is not modified."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    mods = [m for m in seq if not isinstance(m, nn.Dropout)]
    folded: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and not m.training and not nxt.training:
            folded.append(fuse_conv_bn_eval(m, nxt))
            i += 2
        else:
            folded.append(m)
            i += 1
    if not fuse_relu:
        return nn.Sequential(*folded)
    out: list[nn.Module] = []
    i = 0
    while i < len(folded):
        m = folded[i]
        nxt = folded[i + 1] if i + 1 < len(folded) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.ReLU) and m.padding_mode == "zeros" \
                and not isinstance(m.padding, str):
            out.append(ConvReLU(m))
            i += 2
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out)


def fuse_delpnet(model, device="cpu"):
    """``model`` (a :class:`~napari_refocus.models.delpnet.DelpNet` in eval mode) with its
    ``features`` fused for inference on ``device`` (modified in place and returned); the
    head's dropout becomes the identity. ``model.fused`` names what was fused."""
    model.eval()
    relu = _fused_relu_works(device)
    with torch.no_grad():
        model.features = fuse_sequential(model.features, fuse_relu=relu)
    model.head_dropout = nn.Identity()
    model.fused = "conv+bn" + ("+relu (oneDNN)" if relu else "")
    return model
