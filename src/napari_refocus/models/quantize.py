"""DelpNet in int8 for the CPU (issue 16: the map at >= 3,000 patches/s on 2 cores).

In float32 DelpNet's convolutions take ~80 % of the map's time (torch's profiler) and run at
146 GFLOP/s on the 2-core AVX-512 CPU (55.6 MFLOP a patch at 2,625 patches/s), against a float32
matrix-product peak of 149-163 GFLOP/s there, so no float32 rearrangement reaches 3,000
patches/s (BENCHMARKS.md "LB-DVD speed"); in int8 the same network ran 3,684 patches/s. This is
static post-training quantisation with torch's FX tools (x86 backend: weights int8 per output
channel, activations uint8 per tensor, histogram-calibrated):

* calibrated once per process and weights file on patches the caller gives (the map uses the
  shipped in-focus field blurred at every class, on its canonical intensity scale, fixed seed:
  no data beyond the package);
* the first convolution stays float32: its input is the raw patch next to its standardised copy,
  two channels of very different ranges that one per-tensor scale serves badly (quantising it
  cut the agreement with float32 from 97.6 % to 84 % of held-out patches);
* the standardisation, space-to-depth, global max pooling and the dense layer stay float32.

Opt-in (``NAPARI_REFOCUS_INT8=1``, :func:`napari_refocus.methods.canonical.delpnet`): what it
costs in accuracy is measured, not assumed (BENCHMARKS.md "LB-DVD speed"); the map keeps float32
by default, on every other device and where the x86 quantised engine is missing.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..core.progress import check_cancelled


class QuantizedDelpNet(nn.Module):
    """DelpNet with its convolution blocks after the first in int8 (inference only, CPU)."""

    def __init__(self, model: nn.Module, features: nn.Module):
        super().__init__()
        self.std_channel, self.s2d = model.std_channel, model.s2d
        self.features = features
        self.classifier = model.classifier

    def prepare_input(self, x):
        """:meth:`DelpNet.prepare_input <napari_refocus.models.delpnet.DelpNet.prepare_input>`."""
        from .delpnet import DelpNet

        return DelpNet.prepare_input(self, x)  # reads only std_channel and s2d

    def forward(self, x):
        x = self.features(self.prepare_input(x))
        return self.classifier(torch.amax(x, dim=(-2, -1))).float()


def int8_available() -> bool:
    """Whether torch here has the x86 quantised engine and the FX quantisation tools."""
    try:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # noqa: F401
    except ImportError:
        return False
    return "x86" in torch.backends.quantized.supported_engines


def quantize_delpnet(model: nn.Module, calibration, *, batch: int = 64) -> QuantizedDelpNet:
    """An int8 copy of ``model`` (a DelpNet in eval mode, not fused: the loader's ``load_fresh``),
    calibrated on ``calibration``, ``(N, 84, 84)`` float patches as the network sees them (0..1)."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    model = model.eval()
    wrapper = QuantizedDelpNet(model, copy.deepcopy(model.features).eval())
    first = next(name for name, m in wrapper.features.named_children() if isinstance(m, nn.Conv2d))
    qconfig = get_default_qconfig_mapping("x86").set_module_name(first, None)
    x = torch.as_tensor(calibration, dtype=torch.float32)[:, None]
    with warnings.catch_warnings():  # FX quantisation is deprecated in favour of torchao; it still works here
        warnings.simplefilter("ignore")
        prepared = prepare_fx(wrapper.features, qconfig, example_inputs=(wrapper.prepare_input(x[:batch]),))
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch):
                check_cancelled()  # calibration takes seconds: Cancel must not wait for it
                prepared(wrapper.prepare_input(x[start:start + batch]))
        wrapper.features = convert_fx(prepared)
    return wrapper.eval()
