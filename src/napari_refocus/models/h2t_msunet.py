"""Head-to-tail multi-scale U-Net (seed 004).

``K`` U-Net sub-networks, one per scale (input down-sampled by 2**(K-1), ..., 2, 1). The
decoder features of each coarser sub-network are up-sampled and fused into the encoder (after
its first block) of the next finer one, by summation (``fusion="sum"``) or concatenation
(``"concat"``): the *tail* of one U-Net feeds the *head* of the next. Each sub-network has
its own output, compared with the ground truth down-sampled to its scale (multi-scale loss,
see :mod:`napari_refocus.training.train_generators`). Every output is ``input + correction``.
``s2d=2`` runs every sub-network on a lossless 2x2 space-to-depth rearrangement (CPU setting).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .layers import Generator, depth_to_space, space_to_depth
from .unet import PlainUNet


class HeadToTailUNet(Generator):
    def __init__(self, in_channels=1, width=32, depth=4, n_scales=3, fusion="sum", norm="none", s2d=1):
        super().__init__()
        if fusion not in ("sum", "concat"):
            raise ValueError(f"fusion must be 'sum' or 'concat', got {fusion!r}")
        self.config = dict(in_channels=in_channels, width=width, depth=depth, n_scales=n_scales,
                           fusion=fusion, norm=norm, s2d=s2d)
        self.s2d = int(s2d)
        c = in_channels * self.s2d ** 2
        self.nets = nn.ModuleList(
            PlainUNet(c, c, width, depth, norm=norm,
                      fuse_channels=0 if k == 0 else width, fusion=fusion)
            for k in range(n_scales)
        )
        self.n_scales = n_scales
        self.multiple = 2 ** (depth + n_scales - 1) * self.s2d
        self.upscale = 1

    def forward(self, x, return_all=False):
        K = self.n_scales
        pyramid = [x]
        for _ in range(K - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        pyramid = pyramid[::-1]  # coarsest first
        outs, feats = [], None
        for k, (net, xi) in enumerate(zip(self.nets, pyramid)):
            xs = space_to_depth(xi, self.s2d)
            # the finest sub-network's features feed nothing: it runs banded (PlainUNet._banded)
            y, feats = net(xs, feats, features=k < K - 1)
            outs.append(depth_to_space(xs + y, self.s2d))
        return (outs[-1], outs) if return_all else outs[-1]
