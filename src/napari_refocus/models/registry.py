"""The one architecture registry: the ``architecture`` name stored in a weights file -> its class.

Every network that :func:`napari_refocus.models.loader.load_model` can load is registered here,
once, with the function that readies a freshly loaded module for inference on a device (DelpNet:
BatchNorm folded into its convolutions and conv + ReLU fused, :func:`.fusion.fuse_delpnet`, then
channels-last, :func:`napari_refocus.models.layers.to_device`; the generators: channels-last too).
Registering a name twice raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .delpnet import DelpNet
from .h2t_msunet import HeadToTailUNet
from .mdeblurgan import MDeblurGenerator
from .resnet_generator import ResnetGenerator
from .layers import to_device
from .unet import ResNetUNet


def _to_device(module, device):
    return module.to(device)


def _prepare_delpnet_inference(module, device):
    """DelpNet for inference: layers fused (:func:`.fusion.fuse_delpnet`), moved, channels-last."""
    from .fusion import fuse_delpnet

    return to_device(fuse_delpnet(module, device), device)


@dataclass(frozen=True)
class Architecture:
    """A registered network class and how a new instance goes onto a device."""

    name: str
    cls: type
    prepare: Callable = _to_device


_REGISTRY: dict[str, Architecture] = {}


def register(cls: type, *, name: str | None = None, prepare: Callable | None = None) -> type:
    """Register ``cls`` under ``name`` (default: the class name); raises ValueError on a duplicate."""
    name = name or cls.__name__
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} is already registered ({_REGISTRY[name].cls.__qualname__})")
    _REGISTRY[name] = Architecture(name, cls, prepare or _to_device)
    return cls


def get_architecture(name) -> Architecture:
    """The registered :class:`Architecture` of ``name``; raises ValueError for an unknown one."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def architectures() -> dict[str, type]:
    """``{name: class}`` of every registered architecture."""
    return {name: arch.cls for name, arch in _REGISTRY.items()}


def build_model(meta: dict):
    """A new (randomly initialised) module from weights metadata: ``architecture`` + ``kwargs``."""
    return get_architecture(meta.get("architecture")).cls(**meta.get("kwargs", {}))


register(DelpNet, prepare=_prepare_delpnet_inference)
for _cls in (ResnetGenerator, ResNetUNet, MDeblurGenerator, HeadToTailUNet):
    register(_cls, prepare=to_device)
del _cls
