"""COMI generator (seed 000): a Johnson-style ResNet encoder/decoder (CycleGAN's generator).

7x7 conv -> two stride-2 3x3 convs -> ``n_blocks`` residual blocks -> two transposed
stride-2 convs -> 7x7 conv. ``ResnetGenerator(width=64, n_blocks=9, norm="instance")`` is
the paper configuration (11.4 M parameters); the shipped weights are narrower and use no
InstanceNorm (which would make every tile normalise differently, i.e. tile seams), and add
a global residual (output = input + correction), which trains faster on a CPU budget, and
work on a 2x2 space-to-depth rearrangement of the image (``s2d=2``: lossless, 4x fewer
pixels per layer; ``s2d=1`` is the paper's full-resolution layout).
"""

from __future__ import annotations

from torch import nn

from .layers import (Generator, ConvBlock, ResBlock, band_safe, depth_to_space, norm_layer, row_bands,
                     space_to_depth)


class ResnetGenerator(Generator):
    def __init__(self, in_channels=1, out_channels=1, width=64, n_blocks=9, norm="instance",
                 residual=False, res_scale=1.0, s2d=1):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, width=width,
                           n_blocks=n_blocks, norm=norm, residual=residual, res_scale=res_scale, s2d=s2d)
        w = width
        self.s2d = int(s2d)
        in_channels, out_channels = in_channels * self.s2d ** 2, out_channels * self.s2d ** 2
        self.head = nn.Sequential(
            ConvBlock(in_channels, w, 7, norm=norm, pad_mode="reflect"),
            ConvBlock(w, 2 * w, 3, stride=2, norm=norm),
            ConvBlock(2 * w, 4 * w, 3, stride=2, norm=norm),
        )
        self.body = nn.Sequential(*[ResBlock(4 * w, norm=norm, res_scale=res_scale, pad_mode="reflect")
                                    for _ in range(n_blocks)])
        self.tail = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1, output_padding=1),
            norm_layer(norm, 2 * w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1),
            norm_layer(norm, w), nn.ReLU(inplace=True),
            nn.Conv2d(w, out_channels, 7, padding=3, padding_mode="reflect"),
        )
        self.residual = residual and in_channels == out_channels
        self.multiple = 4 * self.s2d
        self.upscale = 1

    def forward(self, x):
        x = space_to_depth(x, self.s2d)
        h = self.tail[:3](self.body(self.head(x)))
        # the last up-sampling and convolution in bands of rows (see row_bands): their maps at
        # full resolution were the tile's largest; radius: the 7x7 convolution (3 rows) and the
        # transposed convolution's row at the coarser grid (2), rounded up to the coarser step
        tail = self.tail[3:]
        y = row_bands(lambda x, h: tail(h), (x, h), margin=6) if band_safe(tail) else tail(h)
        return depth_to_space(x + y if self.residual else y, self.s2d)
