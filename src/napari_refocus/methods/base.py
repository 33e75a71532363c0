"""What a restoration method is (:class:`Method`) and what a run returns (:class:`RefocusResult`).

A method is data: a name, a parameter schema (:mod:`.params`), the weights it needs and a
``run`` generator. ``run(image, params, *, device, report, **inputs)`` takes the caller's 2-D
array in memory (any real dtype, often uint16: convert before arithmetic that could wrap), yields :class:`~napari_refocus.core.progress.Progress` and returns the
restored float32 image; it tells ``report`` (a :class:`RunReport`) what it really used: the
device after any out-of-memory fallback, the SHA-256 of the weights file it loaded, and extra
outputs such as the defocus map. Provenance is built from that report, never from what was
asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.devices import DeviceReport
from .params import describe, field_names, parse


def window_runner(run_region, *, halo: int, upscale: int = 1):
    """``restore(source, bounds)``: ``run_region`` (float32 array -> its restored float32 array,
    ``upscale`` x its size) on the block ``bounds = (y0, y1, x0, x1)`` of ``source`` plus ``halo``
    pixels of context (clipped to the image), cropped back to the block: a method's block form
    where it has no exact one (``bigimage.in_memory_block_runner``; rl's Richardson-Lucy)."""
    halo, r = int(halo), int(upscale)

    def restore(source, bounds):
        y0, y1, x0, x1 = bounds
        h, w = source.shape[-2:]
        ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
        out = np.asarray(run_region(np.asarray(source[ya:yb, xa:xb], dtype=np.float32)), dtype=np.float32)
        return out[(y0 - ya) * r:(y1 - ya) * r, (x0 - xa) * r:(x1 - xa) * r]

    return restore


class RunReport(DeviceReport):
    """A method run's account of what it used (device, weights) and extra outputs."""

    def __init__(self, device):
        super().__init__(device)
        self.weights_sha256: dict[str, str] = {}
        self.extras: dict[str, Any] = {}

    def used_weights(self, name: str, model) -> None:
        """Record the weights file a loaded network came from (its own hash), and the loader's
        notice when the network had to go onto the CPU (out of memory on the accelerator)."""
        self.weights_sha256[name] = getattr(model, "sha256", "")
        self.note(getattr(model, "device_note", None))


@dataclass
class RefocusResult:
    """What a method returns: the restored image and how it was made.

    ``image`` is float32 in the input's intensity units; ``upscale`` > 1 means the image is
    that many times larger than the input (a viewer divides the input's scale by it).
    ``parameters`` are the method's parameters as used (its schema, defaults filled in);
    ``device`` is the device that did the work; ``weights_sha256`` the files really loaded.
    ``gate_weights``: where the method was let change the input (``never_worse``, float32
    0..1 of the output's shape: output = input + w * (restored - input); a numpy array, or for
    the learned methods a lazy :class:`~napari_refocus.methods.gate.GateWeights` that
    ``np.asarray`` or slicing makes; None when it did not run, or for a lazy result);
    ``changed_fraction``: the share of pixels with w > 0.01;
    ``gating``: the gate's rule and parameters (provenance).
    """

    image: np.ndarray
    method: str
    parameters: dict = field(default_factory=dict)
    defocus_map: Any = None
    upscale: int = 1
    seconds: float = 0.0
    weights_sha256: dict = field(default_factory=dict)
    device: str = "cpu"
    notes: list = field(default_factory=list)
    gate_weights: Any = None
    changed_fraction: float | None = None
    gating: dict | None = None

    def provenance(self) -> dict:
        """A JSON-able record for layer metadata and TIFF descriptions."""
        from ..core.resources import package_version

        out = {
            "method": self.method,
            "parameters": _jsonable(self.parameters),
            "weights_sha256": dict(self.weights_sha256),
            "napari_refocus_version": package_version(),
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "upscale": self.upscale,
        }
        if self.gating is not None:
            out["never_worse"] = _jsonable({**self.gating, "changed_fraction": self.changed_fraction})
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return str(value)


@dataclass(frozen=True)
class Method:
    """One restoration method.

    ``schema``: its parameter dataclass; ``inputs``: names of run-time inputs that are not
    parameters (``defocus_map`` for lbdvd, ``stats`` for the learned methods run on blocks).

    How a big image runs block by block (:mod:`napari_refocus.bigimage`):

    ``halo``: input pixels of context each output block is read with (clipped at the image
    borders, where the method meets the true border as it does in memory).
    ``block_runner``: for a method with its own exact block form (lbdvd's global patch grid),
    ``block_runner(params, *, device, **inputs) -> restore`` with
    ``restore(source, (y0, y1, x0, x1)) -> float32 block`` of ``upscale`` x the bounds' size;
    ``source`` is in the whole image's coordinates and is read only within the bounds plus
    ``halo``. None: the method's ``run`` on each block plus its halo, cropped to the block.
    ``block_multiple``: block sides must be multiples of it.
    ``image_stats``: ``(sample, *, params, sample_stride) -> dict`` of run-time inputs computed
    once per image and given to every block (the learned methods' intensity normalisation
    ``stats``), so that no block uses statistics of its own. ``sample``: the whole image, or every
    ``sample_stride``-th row and column of a big one (float32); ``params``: the parsed parameters
    (lbdvd resamples the sample to DelpNet's sampling for its optics).
    ``canvas_per_block``: a method without ``image_stats`` (which reads a whole-image sample to
    look for an empty canvas in) has each block look for one in its own window, read
    :data:`~.padding.FILL_MARGIN_PX` px beyond its halo (a custom method; rl did, before it was gated).
    """

    name: str
    title: str
    description: str
    schema: type
    run: Callable
    weights: tuple = ()
    upscale: int = 1
    halo: int = 96
    inputs: tuple = ()
    block_runner: Callable | None = None
    block_multiple: int = 1
    image_stats: Callable | None = None
    canvas_per_block: bool = False
    #: which schema fields the user sets in a form (others: advanced, API and CLI only)
    form_fields: tuple = ()

    def parse(self, **kwargs):
        """This method's parameters from keywords (ValueError for unknown or bad values)."""
        return parse(self.schema, self.name, **kwargs)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return field_names(self.schema)

    def accepts(self, name: str) -> bool:
        return name in self.parameter_names

    @property
    def defaults(self) -> dict:
        """The schema's default values (optics as a nested dict)."""
        return self.schema().as_dict()

    def describe(self) -> list[dict]:
        return describe(self.schema)

    def weights_present(self) -> bool:
        from ..core.resources import weights_dir

        try:
            folder = weights_dir()
        except FileNotFoundError:
            return False
        return all((folder / f"{w}.safetensors").exists() for w in self.weights)
