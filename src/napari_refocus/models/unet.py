"""ReFocus U-Net (seed 001): a U-Net whose encoder is a ResNet (ResNet-34 in the paper).

Encoder: stem (7x7 stride-2 conv + 3x3 max pool), then ResNet stages of BasicBlocks with
``blocks`` per stage and widths ``width * 2**i`` (stride 2 from the second stage). Decoder:
upsample x2, concatenate the encoder skip, two 3x3 convs, down to full resolution, then a
1x1 conv and a global residual. ``ResNetUNet(width=64, blocks=(3, 4, 6, 3))`` is the
paper's ResNet-34 encoder (about 24 M parameters with this decoder). ``s2d=2`` runs the whole
net on a lossless 2x2 space-to-depth rearrangement (4x fewer pixels; the shipped CPU setting).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (Generator, BasicBlock, ConvBlock, DoubleConv, Upsampled, band_safe, conv_cat, depth_to_space,
                     row_bands, space_to_depth, upsample_to)


class ResNetUNet(Generator):
    def __init__(self, in_channels=1, out_channels=1, width=64, blocks=(3, 4, 6, 3), norm="batch",
                 decoder_width=None, residual=True, s2d=1):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        self.config = dict(in_channels=in_channels, out_channels=out_channels, width=width,
                           blocks=list(blocks), norm=norm, decoder_width=decoder_width, residual=residual,
                           s2d=s2d)
        self.s2d = int(s2d)
        in_channels, out_channels = in_channels * self.s2d ** 2, out_channels * self.s2d ** 2
        w = width
        dw = decoder_width or width
        self.full = ConvBlock(in_channels, dw, 3, norm="none")  # full-resolution skip
        self.stem = ConvBlock(in_channels, w, 7, stride=2, norm=norm)  # 1/2
        self.pool = nn.MaxPool2d(3, 2, 1)  # 1/4
        stages, ch = [], w
        for i, nb in enumerate(blocks):
            cout = w * 2 ** i
            layers = [BasicBlock(ch, cout, stride=1 if i == 0 else 2, norm=norm)]
            layers += [BasicBlock(cout, cout, norm=norm) for _ in range(nb - 1)]
            stages.append(nn.Sequential(*layers))
            ch = cout
        self.stages = nn.ModuleList(stages)
        # decoder: from the deepest stage up to 1/4, then 1/2 (stem), then full
        skips = [w * 2 ** i for i in range(len(blocks))][::-1]  # deepest first
        dec, ch = [], skips[0]
        for skip in skips[1:]:
            out = max(dw, skip)
            dec.append(DoubleConv(ch + skip, out, norm=norm))
            ch = out
        self.dec = nn.ModuleList(dec)
        self.dec_half = DoubleConv(ch + w, dw, norm=norm)
        self.dec_full = DoubleConv(dw + dw, dw, norm="none")
        self.out = nn.Conv2d(dw, out_channels, 1)
        self.residual = residual and in_channels == out_channels
        self.multiple = 2 ** (len(blocks) + 1) * self.s2d
        self.upscale = 1

    def forward(self, x):
        x = space_to_depth(x, self.s2d)
        s = [self.stem(x)]
        h = self.pool(s[0])
        feats = []
        for st in self.stages:
            h = st(h)
            feats.append(h)
        del h
        h = feats.pop()
        # each decoder's inputs are made (the upsampled features, band by band) or let go (the
        # skips) inside conv_cat, so that neither is held while its block's second convolution
        # runs; the full-resolution skip is made only where it is used (the same numbers as before)
        while feats:
            h = conv_cat(self.dec[len(self.dec) - len(feats)], (Upsampled(h, feats[-1]), feats.pop))
        h = conv_cat(self.dec_half, (Upsampled(h, s[0]), s.pop))
        # the full-resolution end (the full skip, dec_full, out) in bands of rows: a whole tile's
        # 24-channel maps there were the largest tensors of the network (see row_bands);
        # radius: the skip's and dec_full's three 3x3 convolutions, +1 row of up-sampling
        y = row_bands(self._top, (x, h), margin=4)  # (dec_full, full: no normalisation layers)
        return depth_to_space(x + y if self.residual else y, self.s2d)

    def _top(self, x, h):
        """out(dec_full(cat(upsampled h, full(x)))): the network's full-resolution end."""
        return self.out(conv_cat(self.dec_full, (lambda: upsample_to(h, x), lambda: self.full(x))))


class PlainUNet(Generator):
    """A plain U-Net (DoubleConv encoder, max pooling, bilinear upsampling, skips); used as the
    sub-network of the head-to-tail model. ``fuse_channels`` > 0 adds an input for features
    fused in from a coarser sub-network (summed or concatenated after the first block)."""

    def __init__(self, in_channels=1, out_channels=1, width=32, depth=4, norm="none", fuse_channels=0,
                 fusion="sum"):
        super().__init__()
        self.depth = depth
        self.fusion = fusion
        ws = [width * 2 ** i for i in range(depth + 1)]
        self.first = DoubleConv(in_channels, ws[0], norm=norm)
        if fuse_channels:
            self.fuse = (nn.Conv2d(fuse_channels, ws[0], 1) if fusion == "sum"
                         else nn.Conv2d(fuse_channels + ws[0], ws[0], 1))
        else:
            self.fuse = None
        self.down = nn.ModuleList(DoubleConv(ws[i], ws[i + 1], norm=norm) for i in range(depth))
        self.up = nn.ModuleList(DoubleConv(ws[i + 1] + ws[i], ws[i], norm=norm) for i in reversed(range(depth)))
        self.out = nn.Conv2d(ws[0], out_channels, 1)
        self.out_channels_features = ws[0]

    def forward(self, x, fused=None, features=True):
        """``(output, features)``: the output (``out_channels``) and the top decoder's features
        (what a finer sub-network fuses in; None with ``features=False``)."""
        if not self.depth:
            h = self._head(x, fused)
            return self.out(h), h
        if not features and not torch.is_grad_enabled() and band_safe(self):
            return self._banded(x, fused), None
        first = [self._head(x, fused)]
        h = self._inner(nn.functional.max_pool2d(first[0], 2))
        # the skip popped and the upsampled features made inside conv_cat
        h = conv_cat(self.up[-1], (Upsampled(h, first[0]), first.pop))
        return self.out(h), h

    def _inner(self, h):
        """From the first block's pooled features: the encoder, then every decoder but the last."""
        skips = []
        for d in self.down:
            h = d(h if not skips else nn.functional.max_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for u in self.up[:-1]:  # the skip popped and the upsampled features made inside conv_cat
            h = conv_cat(u, (Upsampled(h, skips[-1]), skips.pop))
        return h

    def _head(self, x, fused=None):
        """The first block, with the coarser sub-network's features fused in."""
        h = self.first(x)
        if self.fuse is not None and fused is not None:
            fused = upsample_to(fused, h)
            if self.fusion == "sum":
                f = self.fuse(fused)
                del fused
                # at inference in place: one full-resolution feature map fewer at this step
                h = h + f if torch.is_grad_enabled() else h.add_(f)
                del f
            else:
                h = conv_cat(self.fuse, (h, fused))
        return h

    def _banded(self, x, fused):
        """The output alone, its full-resolution ends in bands of rows (:func:`row_bands`): the
        first block runs twice, once for the pooled input of the encoder and once for the last
        decoder's skip, so that no full-resolution feature map of the whole tile is held (the
        skip, 16 MB of a 1024-px tile at width 16, was held through the whole U-Net). Radius:
        the first block's two 3x3 convolutions and a row of the fused features' up-sampling
        (2 rows), then the last decoder's two (4)."""
        parts = (x,) if fused is None else (x, fused)
        h = self._inner(row_bands(lambda *p: nn.functional.max_pool2d(self._head(*p), 2), parts, margin=4,
                                  downscale=2))

        def tail(x, h, *fused):
            return self.out(conv_cat(self.up[-1], (lambda: upsample_to(h, x), lambda: self._head(x, *fused))))

        return row_bands(tail, (x, h, *parts[1:]), margin=4)
