"""DelpNet: defocus-level prediction network (LB-DVD, He et al. 2020, section 2.2).

A lossless 2x2 space-to-depth stem (84x84x1 -> 42x42x4, ``space_to_depth=2``), then seven plain 3x3 convolutions (no residuals), each followed by BatchNorm + ReLU, with Dropout
used densely (after every block but the first, and before the classifier), 2x2 max pooling
after blocks 2 and 4 (``pool_after``, 0-based), global max pooling and one dense layer to 12 logits: defocus levels
0..10 and "bg" (index 11 = :data:`napari_refocus.optics.BACKGROUND`).

Channels per block for ``width=w``: ``w, w, 2w, 2w, 4w, 4w, 8w``. ``width=64``
(:data:`PAPER_WIDTH`) gives 2.33 M parameters, the paper's "about 2.3 M" configuration;
the shipped weights use a narrower net (:data:`SHIPPED_WIDTH`) so it trains on a 2-core CPU.

Input: ``(N, 1, 84, 84)`` float, raw 16-bit counts divided by 65535 (as in the paper). With
``standardised_channel=True`` (default) the network first appends a second channel, the patch
standardised to zero mean / unit variance, so that the level features do not have to be
learnt at every brightness (patches span 150..6000 counts); the raw channel keeps the
absolute counts that the "bg" rule is about. Measured: faster convergence on a CPU budget. Output: float32 logits
``(N, 12)``. BatchNorm momentum 0.4 in torch's convention (= 0.6 in Keras's, as in the paper).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .layers import n_parameters  # noqa: F401  (re-exported for the training code and tests)
from .layers import to_device as prepare, use_channels_last  # noqa: F401  (DelpNet's names for them)

PAPER_WIDTH = 64
SHIPPED_WIDTH = 16
N_CLASSES = 12
#: blocks (0-based) followed by 2x2 max pooling. With the default 2x2 space-to-depth stem the
#: blocks run at 42 -> 21 -> 11 pixels; no pixel is thrown away before block 0 (the stem only
#: rearranges each 2x2 pixel block into 4 channels), which keeps the net cheap on a CPU.
POOL_AFTER = (1, 3)
PATCH = 84


class DelpNet(nn.Module):
    """The DelpNet classifier; see the module docstring for the layout.

    Parameters
    ----------
    width : channels of the first block (``PAPER_WIDTH`` = 64 -> ~2.3 M parameters).
    n_classes : 12 (levels 0..10 and bg).
    dropout : dropout probability after conv blocks 2..7.
    head_dropout : dropout probability before the dense layer.
    bn_momentum : torch BatchNorm momentum (0.4 = Keras 0.6).
    """

    def __init__(
        self,
        width: int = SHIPPED_WIDTH,
        n_classes: int = N_CLASSES,
        dropout: float = 0.1,
        head_dropout: float = 0.3,
        bn_momentum: float = 0.4,
        pool_after=POOL_AFTER,
        space_to_depth: int = 2,
        standardised_channel: bool = True,
    ):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        self.config = {
            "width": int(width),
            "n_classes": int(n_classes),
            "dropout": float(dropout),
            "head_dropout": float(head_dropout),
            "bn_momentum": float(bn_momentum),
            "pool_after": [int(i) for i in pool_after],
            "space_to_depth": int(space_to_depth),
            "standardised_channel": bool(standardised_channel),
        }
        self.std_channel = bool(standardised_channel)
        self.s2d = int(space_to_depth)
        w = int(width)
        chans = [w, w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        cin = self.s2d * self.s2d * (2 if self.std_channel else 1)
        for i, cout in enumerate(chans):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout, momentum=bn_momentum),
                nn.ReLU(inplace=True),
            ]
            if i in self.config["pool_after"]:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            if i > 0 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head_dropout = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(cin, n_classes)

    def prepare_input(self, x):
        """What the first convolution sees: the patch and its standardised copy, space-to-depth."""
        if self.std_channel:
            # brightness-free copy of the patch; the raw channel keeps absolute counts (bg rule)
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True)
            x = torch.cat([x, (x - mean) / (std + 1e-5)], dim=1)
        if self.s2d > 1:
            x = nn.functional.pixel_unshuffle(x, self.s2d)
        return x

    def forward(self, x):
        x = self.features(self.prepare_input(x))
        x = torch.amax(x, dim=(-2, -1))  # global max pooling
        return self.classifier(self.head_dropout(x)).float()



def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 / AMX).

    Measured on an AVX2-only 2-core CPU: bf16 autocast made DelpNet training ~10x SLOWER
    (emulated bf16), so it is only switched on where the hardware has it.
    """
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # pragma: no cover - old torch
        return False
    return "AMX" in cap or "BF16" in cap


def autocast(device):
    """Mixed precision for ``device``: fp16 on CUDA; bf16 on CPUs with native bf16; else fp32."""
    dev = torch.device(device)
    if dev.type == "cpu":
        if cpu_has_fast_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


#: on the CPU every forward pass holds exactly this many patches (the last chunk of a batch is
#: padded with copies of its last patch): the CPU's kernels split a batch between threads and
#: vectorise it by its size, so a patch's softmax depended on how many patches shared its batch
#: (measured 2e-9..2e-8 with 1 and 2 threads); now it does not, so a map made block by block
#: equals the whole image's. 16 = methods.defocus's batch; on a 2-core CPU shared with a load of
#: ~14, passes of 16 ran 25 patches/s against 140 for passes of 256 (at most 16 are wasted a call).
CPU_CHUNK = 16


def mean_softmax(model, batch, device, tta: bool = False):
    """Softmax (N, 12) of (N, 84, 84) inputs already scaled to 0..1, on the CPU; ``tta``:
    averaged over the 8 flips/rotations (:func:`napari_refocus._tta.dihedral_mean`). Call
    under ``torch.no_grad()``. On the CPU the network sees :data:`CPU_CHUNK` patches at a time,
    so that a patch's answer does not depend on its batch."""
    from ..core.tta import dihedral_mean

    def forward(v):
        with autocast(device):
            logits = model(to_input(v, device))
        return torch.softmax(logits.float(), dim=1).cpu()

    def softmax(v):
        if torch.device(device).type != "cpu" or v.shape[0] == 0:
            return forward(v)
        parts = []
        for start in range(0, v.shape[0], CPU_CHUNK):
            chunk = v[start:start + CPU_CHUNK]
            k = chunk.shape[0]
            if k < CPU_CHUNK:
                chunk = torch.cat([chunk, chunk[-1:].expand(CPU_CHUNK - k, *chunk.shape[1:])])
            parts.append(forward(chunk)[:k])
        return torch.cat(parts)

    return dihedral_mean(softmax, batch, equivariant=False) if tta else softmax(batch)


def to_input(batch, device):
    """(N, 84, 84) float tensor of 0..1 values -> (N, 1, 84, 84) on ``device``."""
    dev = torch.device(device)
    x = batch.to(device=dev, dtype=torch.float32, non_blocking=True)[:, None]
    if use_channels_last(dev):
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def certainty(probabilities):
    """1 - entropy / log(n_classes) of softmax probabilities (last axis): float32 in [0, 1]."""
    import math

    import numpy as np

    p = np.asarray(probabilities)
    ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(-1)
    return np.clip(1.0 - ent / math.log(p.shape[-1]), 0.0, 1.0).astype(np.float32)


def focus_score(levels, certainties, background: int = N_CLASSES - 1) -> tuple[float, float]:
    """(score, certainty) of a patch map: the certainty-weighted mean level of the non-bg
    patches (Yang et al. 2018; NaN when all are bg) and their mean certainty (0 then)."""
    import numpy as np

    mask = np.asarray(levels) != background
    if not mask.any():
        return float("nan"), 0.0
    w = np.asarray(certainties)[mask].astype(np.float64)
    lv = np.asarray(levels)[mask].astype(np.float64)
    score = float((w * lv).sum() / w.sum()) if w.sum() > 0 else float(lv.mean())
    return score, float(w.mean())
