"""TorchScript modules that do what the plugin does around each network, for bioimage.io.

The bioimage.io spec's standard processing ops cannot express the plugin's intensity handling:

* the generators normalise by the image's 1st..99.8th percentiles and map the network's output
  back to the input's units with the *same* percentiles (the spec's ``scale_range`` has no
  inverse); their tiles are mirrored by a margin and padded to the network's ``multiple``;
* DelpNet reads each 84x84 patch on the image's canonical intensity scale (robust range ->
  150..1150 counts) divided by 65535, and the background rule needs the image's noise level.

So all of it is baked into the exported TorchScript module: it takes the raw image (float32,
the input's own units) and returns what ``napari_refocus.refocus`` / ``defocus_map`` return.
The networks themselves are traced (:func:`torch.jit.trace`) and wrapped by scripted code
(:func:`torch.jit.script`), so the package needs torch only, not napari-refocus.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the plugin's percentiles (``models.predict.DEFAULT_PERCENTILES``, ``core.intensity.PERCENTILES``)
LOW_PCT, HIGH_PCT = 1.0, 99.8


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile of all values of ``x`` (numpy's default, linear interpolation)."""
    s = torch.sort(x.reshape(-1)).values
    pos = q / 100.0 * float(s.numel() - 1)
    i = int(math.floor(pos))
    j = min(i + 1, s.numel() - 1)
    return s[i] + (s[j] - s[i]) * (pos - float(i))


def median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median (the mean of the two middle values for an even count)."""
    s = torch.sort(x.reshape(-1)).values
    n = s.numel()
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


class GeneratorModule(nn.Module):
    """A generator run as the plugin runs an image that fits in one tile.

    ``(b, 1, H, W)`` float32 in the input's units -> ``(b, 1, r H, r W)`` in the same units:
    per image ``x' = (x - p1) / (p99.8 - p1)``, mirrored by ``margin`` on every side and on the
    bottom/right up to a multiple of ``multiple`` (``models.predict.tile_layout`` for one tile),
    the network, cropped, then ``y * (p99.8 - p1) + p1``.
    """

    def __init__(self, net: nn.Module, multiple: int, upscale: int, margin: int):
        super().__init__()
        self.net = net
        self.multiple = int(multiple)
        self.upscale = int(upscale)
        self.margin = int(margin)
        self.low_pct, self.high_pct = LOW_PCT, HIGH_PCT  # (TorchScript reads no module globals)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for b in range(x.shape[0]):
            img = x[b:b + 1].float()
            lo = percentile(img, self.low_pct)
            hi = percentile(img, self.high_pct)
            scale = hi - lo
            # models.predict.normalise: a flat image falls back to its full range, then 1
            if not bool(torch.isfinite(scale)) or bool(scale <= 1e-6 * torch.clamp(hi.abs(), min=1.0)):
                scale = img.max() - img.min()
                if bool(scale == 0):
                    scale = torch.ones_like(scale)
            xn = (img - lo) / scale
            h, w = img.shape[-2], img.shape[-1]
            m, k = self.margin, self.multiple
            hp = (h + 2 * m + k - 1) // k * k
            wp = (w + 2 * m + k - 1) // k * k
            padded = F.pad(xn, [m, wp - w - m, m, hp - h - m], mode="reflect")
            y = self.net(padded)
            r = self.upscale
            y = y[..., m * r:(m + h) * r, m * r:(m + w) * r]
            outs.append(y * scale + lo)
        return torch.cat(outs, 0)


class DelpNetModule(nn.Module):
    """DelpNet's defocus map of a whole image, as ``napari_refocus.defocus_map`` makes it
    (training optics, stride 42, no TTA).

    ``(1, 1, H, W)`` float32 counts with ``H, W = 84 + 42 n`` -> ``(probabilities (1, 12, rows,
    cols) float32, levels (1, 1, rows, cols) int64)``: the image is put on the canonical
    intensity scale (``methods.defocus.canonical_image``), cut into 84x84 patches every 42 px,
    each divided by 65535 and classified; a patch is background (level 11) when DelpNet says so
    or by the plugin's relative background rule (``methods.defocus.background_rule``).
    """

    def __init__(self, net: nn.Module, *, patch: int, stride: int, span: float, offset: float,
                 intensity_scale: float, bg_above: float, bg_range: float, bg_sigmas: float):
        super().__init__()
        self.net = net
        self.patch, self.stride = int(patch), int(stride)
        self.span, self.offset, self.intensity_scale = float(span), float(offset), float(intensity_scale)
        self.bg_above, self.bg_range, self.bg_sigmas = float(bg_above), float(bg_range), float(bg_sigmas)
        self.low_pct, self.high_pct = LOW_PCT, HIGH_PCT

    def noise_sigma(self, a: torch.Tensor) -> torch.Tensor:
        """``core.intensity.noise_sigma``: Immerkaer's 3x3 kernel, scaled median of |response|."""
        c = a[1:-1, 1:-1]
        d = (4 * c - 2 * (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
             + a[:-2, :-2] + a[:-2, 2:] + a[2:, :-2] + a[2:, 2:])
        return 1.4826 * median(d.abs()) / 6.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = x[0, 0].float()
        lo = percentile(img.double(), self.low_pct).float()
        hi = percentile(img.double(), self.high_pct).float()
        gain = torch.where(hi > lo, self.span / (hi - lo), torch.zeros_like(hi))
        canonical = torch.clamp((img - lo) * gain + self.offset, min=0.0)
        sigma = self.noise_sigma(img) * gain
        rows = (img.shape[0] - self.patch) // self.stride + 1
        cols = (img.shape[1] - self.patch) // self.stride + 1
        patches = F.unfold(canonical[None, None], kernel_size=self.patch, stride=self.stride)
        patches = patches[0].T.reshape(-1, 1, self.patch, self.patch)
        probs = torch.softmax(self.net(patches / self.intensity_scale).float(), dim=1)
        levels = probs.argmax(1)
        flat = patches.reshape(patches.shape[0], -1)
        top, bottom = flat.max(1).values, flat.min(1).values
        limit = torch.clamp(self.bg_sigmas * sigma, min=self.bg_range)
        background = (top < self.offset + self.bg_above) & ((top - bottom) < limit)
        levels = torch.where(background, torch.full_like(levels, probs.shape[1] - 1), levels)
        probs = probs.T.reshape(1, probs.shape[1], rows, cols)
        return probs, levels.reshape(1, 1, rows, cols)
