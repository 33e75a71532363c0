"""Building blocks shared by the learned refocusing generators (torch only).

Every generator here is a plain ``nn.Module`` whose constructor arguments are stored in
``self.config`` (so :func:`napari_refocus.models.loader.save_weights` records them), with a
``multiple`` attribute (input height/width must be a multiple of it), an ``upscale``
attribute (output = ``upscale`` x input) and ``n_parameters``.

No normalisation layer here depends on the image content at inference (no InstanceNorm by
default): a tile then gives the same values as the whole image, which is what makes the
tiled inference seam-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def space_to_depth(x, s: int):
    """(N, C, H, W) -> (N, C*s*s, H/s, W/s), lossless (pixel_unshuffle); identity for s=1."""
    return x if s == 1 else F.pixel_unshuffle(x, s)


def depth_to_space(x, s: int):
    """Inverse of :func:`space_to_depth`."""
    return x if s == 1 else F.pixel_shuffle(x, s)


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def norm_layer(kind: str, channels: int) -> nn.Module:
    """"none" | "batch" | "instance" (the paper's choice for CycleGAN; makes tiles differ)."""
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; choose none, batch or instance")


def act(kind: str = "relu") -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {kind!r}")


def use_channels_last(device) -> bool:
    """Whether networks run channels-last on ``device`` (CUDA and CPU). On this project's 2-core
    CPU it made DelpNet 1.3-1.5x faster, and the generators 1.3-1.9x faster with up to half the
    activation memory (a 1024-px tile: refocus-unet 183 -> 114 MB, comi-cyclegan 105 -> 49):
    oneDNN then convolves in place of reordering every plain (NCHW) tensor to its own layout."""
    return torch.device(device).type in ("cuda", "cpu")


def to_device(model: nn.Module, device) -> nn.Module:
    """``model`` moved to ``device``, channels-last where :func:`use_channels_last`."""
    dev = torch.device(device)
    if use_channels_last(dev):
        return model.to(device=dev, memory_format=torch.channels_last)
    return model.to(device=dev)


class Generator(nn.Module):
    """Base of the restoration networks: ``multiple`` and ``upscale`` are set by each model."""

    multiple = 1
    upscale = 1

    @property
    def n_parameters(self) -> int:
        return n_parameters(self)


class ConvBlock(nn.Sequential):
    """conv (k x k, 'same' reflect padding) -> norm -> activation."""

    def __init__(self, cin, cout, k=3, stride=1, norm="none", activation="relu", pad_mode="zeros"):
        layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode=pad_mode,
                            bias=norm in (None, "none"))]
        layers.append(norm_layer(norm, cout))
        if activation:
            layers.append(act(activation))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBlocks (the U-Net unit)."""

    def __init__(self, cin, cout, norm="none", activation="relu"):
        super().__init__(ConvBlock(cin, cout, 3, norm=norm, activation=activation),
                         ConvBlock(cout, cout, 3, norm=norm, activation=activation))


class ResBlock(nn.Module):
    """x + conv(act(conv(x))) with an optional residual scale (no BatchNorm by default)."""

    def __init__(self, channels, norm="none", activation="relu", res_scale=1.0, pad_mode="zeros"):
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm, activation=activation, pad_mode=pad_mode),
            ConvBlock(channels, channels, 3, norm=norm, activation=None, pad_mode=pad_mode),
        )
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block (two 3x3 convs, projection shortcut when the shape changes)."""

    def __init__(self, cin, cout, stride=1, norm="batch"):
        super().__init__()
        self.c1 = ConvBlock(cin, cout, 3, stride=stride, norm=norm)
        self.c2 = ConvBlock(cout, cout, 3, norm=norm, activation=None)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm_layer(norm, cout)))
        self.out = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.out(self.c2(self.c1(x)) + self.short(x))


def upsample_to(x, ref_or_size, mode="bilinear"):
    size = ref_or_size.shape[-2:] if torch.is_tensor(ref_or_size) else ref_or_size
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def conv_cat(block: nn.Sequential, parts):
    """``block(torch.cat(parts, 1))``; at inference without the concatenated tensor.

    ``block``: a Conv2d, or a Sequential whose first layer is one (or a ConvBlock that starts with one);
    ``parts``: tensors, or callables that make them (each called when its turn comes). With
    gradients off, the first convolution runs on each part with its slice of the input channels
    and the outputs are summed (a convolution is linear in its input channels): a U-Net decoder
    then never holds the concatenation (skip + upsampled features, the largest tensor of a tile:
    h2t-msunet's top level, 48 channels of 512^2 float32, is 50 MB of a 1024-px tile), and a part made here (a callable; the caller holding no other
    reference to it) is freed before the next is made and before the block's other layers run.
    The same function, up to float32 rounding (tests/test_generators.py); with gradients on
    (training) the concatenation, as before."""
    layers = [block] if isinstance(block, nn.Conv2d) else list(block.children())
    if isinstance(layers[0], nn.Sequential):  # a ConvBlock: its convolution, then its norm and activation
        layers = [*layers[0].children(), *layers[1:]]
    head, rest = layers[0], layers[1:]
    if torch.is_grad_enabled() or not isinstance(head, nn.Conv2d) or head.groups != 1 \
            or head.padding_mode != "zeros":
        return block(torch.cat([p() if callable(p) else p for p in parts], 1))
    y, start = None, 0
    for make in parts:
        part = make() if callable(make) else make
        del make
        w = head.weight[:, start:start + part.shape[1]]
        start += part.shape[1]
        out = F.conv2d(part, w, head.bias if y is None else None, head.stride, head.padding, head.dilation)
        del part
        y = out if y is None else y.add_(out)
        del out
    del parts
    if start != head.in_channels:
        raise ValueError(f"conv_cat: the parts have {start} channels, the convolution takes {head.in_channels}")
    for layer in rest:
        y = layer(y)
    return y


class PatchGAN(nn.Module):
    """Markovian (PatchGAN) discriminator of pix2pix/CycleGAN: n x n logits, LeakyReLU 0.2.

    ``n_layers=3, width=64`` is the 70x70 PatchGAN of the paper (2.8 M parameters).
    """

    def __init__(self, in_channels=1, width=64, n_layers=3, norm="instance"):
        super().__init__()
        self.config = dict(in_channels=in_channels, width=width, n_layers=n_layers, norm=norm)
        layers = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, n_layers + 1):
            nxt = width * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride, 1), norm_layer(norm, nxt), nn.LeakyReLU(0.2, True)]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class VGGDiscriminator(nn.Module):
    """VGG-like discriminator (M-Deblurgan / SRGAN style): conv pairs (stride 1, 2),
    LeakyReLU 0.2, global average pooling, then a dense head to one logit."""

    def __init__(self, in_channels=1, width=64, n_stages=4, norm="batch"):
        super().__init__()
        self.config = dict(in_channels=in_channels, width=width, n_stages=n_stages, norm=norm)
        layers, ch = [], in_channels
        for i in range(n_stages):
            w = width * 2 ** i
            layers += [ConvBlock(ch, w, 3, norm="none" if i == 0 else norm, activation="lrelu"),
                       ConvBlock(w, w, 3, stride=2, norm=norm, activation="lrelu")]
            ch = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(ch, 2 * ch), nn.LeakyReLU(0.2, True), nn.Linear(2 * ch, 1))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(-2, -1)))
