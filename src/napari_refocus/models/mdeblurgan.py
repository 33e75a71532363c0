"""M-Deblurgan generator (seed 002): deblurring encoder-decoder + optimal approximation +
super-resolution module.

* Encoder-decoder: 5x5 conv, ``n_res`` 3x3 ResBlocks (no BatchNorm) per scale, three 2x2
  max poolings; decoder upsamples x2 and ADDS the encoder skip after a 3x3 conv; the
  decoder's feature maps of all scales are brought to full size (bilinear) and concatenated
  (multi-scale fusion) -> "deblur output"; the last decoder map alone -> "encoder-decoder
  output".
* Optimal approximation: a small conv net looks at {input, encoder-decoder output, deblur
  output} and predicts per-pixel softmax weights; the approximation is their weighted sum
  (so it can pick or blend the best of the three).
* Super-resolution: 3x3 convs, ``log2(upscale)`` sub-pixel (PixelShuffle x2) upsamplers, final
  3x3 conv, plus a global residual (bilinear upsampling of the approximation).

``MDeblurGenerator(width=64, n_res=2, upscale=4)`` is the paper-sized variant (two sub-pixel
upsamplers, x4); the shipped weights use ``upscale=2`` (one upsampler), a narrow width and
``s2d=2`` (the net runs on a lossless 2x2 space-to-depth rearrangement; 4x fewer pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (Generator, ConvBlock, ResBlock, conv_cat, depth_to_space, row_bands, space_to_depth,
                     upsample_to)


class MDeblurGenerator(Generator):
    def __init__(self, in_channels=1, width=64, n_res=2, n_pool=3, upscale=2, sr_width=None, s2d=1):
        super().__init__()
        if upscale < 1 or (upscale & (upscale - 1)):
            raise ValueError(f"upscale must be a power of 2, got {upscale}")
        self.config = dict(in_channels=in_channels, width=width, n_res=n_res, n_pool=n_pool,
                           upscale=upscale, sr_width=sr_width, s2d=s2d)
        w = width
        self.s2d = int(s2d)
        in_channels = in_channels * self.s2d ** 2
        ws = [min(w * 2 ** i, 4 * w) for i in range(n_pool + 1)]
        self.head = ConvBlock(in_channels, ws[0], 5)
        self.enc = nn.ModuleList()
        for i in range(n_pool + 1):
            layers = [] if i == 0 else [ConvBlock(ws[i - 1], ws[i], 3)]
            layers += [ResBlock(ws[i]) for _ in range(n_res)]
            self.enc.append(nn.Sequential(*layers))
        self.skip = nn.ModuleList(nn.Conv2d(ws[i], ws[i], 3, padding=1) for i in range(n_pool))
        self.dec = nn.ModuleList()
        self.reduce = nn.ModuleList()
        for i in reversed(range(n_pool)):
            self.reduce.append(ConvBlock(ws[i + 1], ws[i], 3))
            self.dec.append(nn.Sequential(*[ResBlock(ws[i]) for _ in range(n_res)]))
        fuse_in = sum(ws[i] for i in range(n_pool))
        self.fuse = nn.Sequential(ConvBlock(fuse_in, w, 3), nn.Conv2d(w, in_channels, 3, padding=1))
        self.ed_out = nn.Conv2d(ws[0], in_channels, 3, padding=1)
        self.oa = nn.Sequential(ConvBlock(3 * in_channels, w // 2 or 1, 3), nn.Conv2d(w // 2 or 1, 3, 3, padding=1))
        sw = sr_width or w
        sr = [ConvBlock(in_channels + ws[0], sw, 3), ConvBlock(sw, sw, 3)]
        for _ in range(int(math.log2(upscale))):
            sr += [nn.Conv2d(sw, 4 * sw, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        sr.append(nn.Conv2d(sw, in_channels, 3, padding=1))
        self.sr = nn.Sequential(*sr)
        self.upscale = int(upscale)
        self.multiple = 2 ** n_pool * self.s2d
        self.n_pool = n_pool

    def forward(self, x, return_all=False):
        s = self.s2d
        x = space_to_depth(x, s)
        h = self.head(x)
        skips = []
        for i, e in enumerate(self.enc):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = e(h)
            skips.append(h)
        h = skips.pop()
        maps = []
        for red, dec, sk in zip(self.reduce, self.dec, reversed(range(self.n_pool))):
            sk_map = skips[sk]
            skips[sk] = None  # used once: not held through the rest of the network
            h = dec(upsample_to(red(h), sk_map) + self.skip[sk](sk_map))
            del sk_map
            maps.append(h)
        del h
        full = maps[-1]
        # the multi-scale fusion in bands of rows too: the deepest map up-sampled to full size
        # was the largest tensor left (64 channels); radius: two 3x3 convolutions, and two rows
        # of a x4 up-sampling's edge (the margin a multiple of 4: the deepest map's rows)
        deblur = row_bands(self._fuse, (x, *maps[::-1]), margin=4)
        del maps
        ed = x + self.ed_out(full)
        cands = torch.stack([x, ed, deblur], 1)  # (N, 3, C, H, W)
        wts = torch.softmax(self.oa(torch.cat([x, ed, deblur], 1)), dim=1)  # (N, 3, H, W)
        approx = (cands * wts[:, :, None]).sum(1)
        if not return_all:  # the super-resolution stage holds the tile's largest tensors: these go first
            del cands, wts, ed, deblur
        # in bands of rows: the super-resolution stage's maps, at the output's size, are the
        # tile's largest tensors (see row_bands); radius 4: three 3x3 convolutions and one at x2
        # (one input row); the bilinear up-sampling's edge row lies within it
        y = depth_to_space(row_bands(self._sr, (approx, full), margin=4, upscale=self.upscale), s)
        if return_all:
            return y, {"approx": depth_to_space(approx, s), "deblur": depth_to_space(deblur, s),
                       "ed": depth_to_space(ed, s)}
        return y

    def _fuse(self, x, *maps):
        """``x + fuse(cat(maps up-sampled to full size))``, ``maps`` finest first (one at a time)."""
        return x + conv_cat(self.fuse, (upsample_to(m, x) for m in maps[::-1]))

    def _sr(self, approx, full):
        """The super-resolution stage: ``sr(cat(approx, full))`` plus the up-sampled approximation."""
        y = conv_cat(self.sr, (approx, full))
        if self.upscale > 1:
            return y + F.interpolate(approx, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return y + approx
