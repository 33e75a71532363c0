"""Training losses of the generators: SSIM, image-gradient L1, the DelpNet feature loss
(the perceptual-loss substitute: no ImageNet VGG can be downloaded here) and the LSGAN term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
                from ..models.loader import load_fresh

                net = load_fresh("delpnet")
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
                self.sha256 = net.sha256
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


def lsgan(pred, real: bool):
    return ((pred - (1.0 if real else 0.0)) ** 2).mean()
