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

import math

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


class Upsampled:
    """A part of :func:`conv_cat`: ``upsample_to(x, ref)``, which at inference is convolved band by
    band as it is made (:func:`row_bands`), so the whole up-sampled map (a U-Net decoder's
    largest input: 4x its source) is never held. Called, it makes the whole map (training)."""

    def __init__(self, x, ref):
        self.x, self.ref = x, ref
        self.channels = x.shape[1]

    def __call__(self):
        return upsample_to(self.x, self.ref)

    def convolve(self, weight, bias, conv: nn.Conv2d, add_to=None):
        """``conv2d(upsample_to(x, ref), weight, bias)`` with ``conv``'s geometry (added into
        ``add_to`` if given), in bands of rows (margin: the kernel's radius and a row of the
        up-sampling's edge)."""
        def stage(ref, x):
            return F.conv2d(upsample_to(x, ref), weight, bias, conv.stride, conv.padding, conv.dilation)

        parts, self.x, self.ref = (self.ref, self.x), None, None  # not held past their use
        return _banded_conv(stage, parts, conv, edge=1, add_to=add_to)


def _banded_conv(stage, parts, conv: nn.Conv2d, *, edge: int = 0, add_to=None):
    """A convolution ``stage`` (of ``conv``'s geometry) in bands of rows (:func:`row_bands`), whole
    where strided; ``edge``: rows of context the stage needs besides the kernel's."""
    if conv.stride != (1, 1):
        return stage(*parts) if add_to is None else add_to.add_(stage(*parts))
    margin = conv.dilation[0] * (conv.kernel_size[0] // 2) + edge
    return row_bands(stage, parts, margin=margin + margin % 2, add_to=add_to)


def conv_cat(block: nn.Sequential, parts):
    """``block(torch.cat(parts, 1))``; at inference without the concatenated tensor.

    ``block``: a Conv2d, or a Sequential whose first layer is one (or a ConvBlock that starts with one);
    ``parts``: tensors, callables that make them (each called when its turn comes), or
    :class:`Upsampled` maps (convolved band by band as they are made). With
    gradients off, the first convolution runs on each part with its slice of the input channels
    and the outputs are summed (a convolution is linear in its input channels): a U-Net decoder
    then never holds the concatenation (skip + upsampled features: at h2t-msunet's top level 48
    channels of 512^2 float32, 50 MB of a 1024-px tile), and a part made here (a callable; the
    caller holding no other reference to it) is freed before the next is made and before the
    block's other layers run.
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
    for make in parts:  # the first part makes y; each next one is convolved band by band into it
        if isinstance(make, Upsampled):
            w = head.weight[:, start:start + make.channels]
            start += make.channels
            y = make.convolve(w, head.bias if y is None else None, head, add_to=y)
        else:
            part = make() if callable(make) else make
            w = head.weight[:, start:start + part.shape[1]]
            start += part.shape[1]
            if y is None:
                y = F.conv2d(part, w, head.bias, head.stride, head.padding, head.dilation)
            else:
                y = _banded_conv(lambda p, w=w: F.conv2d(p, w, None, head.stride, head.padding, head.dilation),
                                 (part,), head, add_to=y)
            del part
        del make
    del parts
    if start != head.in_channels:
        raise ValueError(f"conv_cat: the parts have {start} channels, the convolution takes {head.in_channels}")
    for layer in rest:
        y = layer(y)
    return y


def band_safe(*modules: nn.Module) -> bool:
    """Whether ``modules`` compute each pixel from its neighbourhood alone, so that
    :func:`row_bands` may run them band by band: no normalisation over the image (InstanceNorm,
    GroupNorm, LayerNorm; the paper's CycleGAN uses InstanceNorm) and no BatchNorm in training mode."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)):
                return False
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
                return False
    return True


#: rows (of the network's own grid) per band of :func:`row_bands`: a 24-channel band of a 1024-px
#: tile's 512-px grid is 3 MB of float32 where the whole stage held 24 MB per feature map
BAND_ROWS = 64


def row_bands(stage, parts, *, margin: int, rows: int | None = None, upscale: int = 1, downscale: int = 1,
              add_to=None):
    """``stage(*parts)``; at inference computed in horizontal bands of ``rows`` rows.

    For the full-resolution end of a network: a *local* stage (convolutions, bilinear
    up-sampling by 2) whose feature maps are the largest tensors of a tile. ``parts[0]`` sets the
    grid (height ``H``); every other part is ``H / 2**k`` rows high. Each band reads its rows of
    every part plus ``margin`` rows of context on each side (an even number, at least the stage's
    receptive radius in ``parts[0]``'s rows, counting the rows a bilinear up-sampling clamps at a
    band's edge: 1 for x2, 2 for x4; and a multiple of the coarsest part's step),
    runs the stage and keeps its own rows, so no whole-tile feature map is held; the output is
    ``upscale`` x (or 1 / ``downscale`` x: a stage that ends in pooling) the band's rows.
    ``rows``: None is :data:`BAND_ROWS`. ``add_to``: a tensor of the output's shape that the
    stage's output is added into, band by band (returned), instead of a new one.

    The bands meet the padding only at the tile's own border, so the result is the whole stage's
    up to float32 rounding (on this project's CPU bit for bit; tests/test_generators.py). With
    gradients on (training), one band, or parts whose rows do not map onto the first's, the
    stage runs whole."""
    height = parts[0].shape[-2]
    rows = BAND_ROWS if rows is None else int(rows)
    steps = [height // p.shape[-2] for p in parts]
    step = math.lcm(max(steps), downscale)
    if torch.is_grad_enabled() or height <= rows + 2 * margin or margin % step or rows % step \
            or height % downscale or any(p.shape[-2] * s != height for p, s in zip(parts, steps)):
        # training, one band, or rows that do not map onto a coarser part's rows: whole
        return stage(*parts) if add_to is None else add_to.add_(stage(*parts))

    def out_rows(n):
        return n * upscale // downscale

    out = add_to
    for a in range(0, height, rows):
        b = min(height, a + rows)
        lo, hi = max(0, a - margin), min(height, b + margin)
        y = stage(*(p[..., lo // s:hi // s, :] for p, s in zip(parts, steps)))
        y = y[..., out_rows(a - lo):out_rows(b - lo), :]
        if out is None:
            fmt = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) or \
                parts[0].is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            out = torch.empty((*y.shape[:-2], out_rows(height), y.shape[-1]), dtype=y.dtype, device=y.device,
                              memory_format=fmt)
        if add_to is None:
            out[..., out_rows(a):out_rows(b), :] = y
        else:
            out[..., out_rows(a):out_rows(b), :] += y
        del y
    return out


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
