"""Running a method on one 2-D image in memory: parameters checked, provenance true."""

from __future__ import annotations

import time

import numpy as np

from ..core.devices import resolve_device
from ..core.padding import padding_note, restore_padding
from ..core.progress import drain
from ..core.validation import as_image
from .base import RefocusResult, RunReport
from .gate import unchanged_on
from .padding import filled, on_canvas
from .registry import get_method


def check_weights(method) -> None:
    """ValueError when a method's shipped weights are not installed."""
    m = get_method(method)
    if not m.weights_present():
        missing = ", ".join(f"{w}.safetensors" for w in m.weights)
        raise ValueError(f"method {m.name!r} needs weights/{missing}, which is not installed")


def split_inputs(method, kwargs: dict) -> tuple[dict, dict]:
    """(parameters, run-time inputs) of a method's keywords (``defocus_map=``, ``stats=``)."""
    m = get_method(method)
    inputs = {k: kwargs[k] for k in m.inputs if k in kwargs and kwargs[k] is not None}
    params = {k: v for k, v in kwargs.items() if k not in m.inputs}
    return params, inputs


def iter_refocus(image, *, method="lbdvd", device="auto", **kwargs):
    """Generator form of :func:`refocus`: yields Progress, returns a :class:`RefocusResult`.

    ``image`` is a 2-D array in memory (big and lazy images go through
    :func:`napari_refocus.refocus`, which hands them to :mod:`napari_refocus.bigimage`).
    Keywords are the method's parameters (its schema; unknown names are a ValueError) and
    its run-time inputs (``defocus_map=`` for lbdvd).
    """
    m = get_method(method)
    raw, inputs = split_inputs(m, kwargs)
    params = m.parse(**raw)
    if getattr(params, "weights", None) is None:  # a custom weights file needs no shipped one
        check_weights(m)
    arr = as_image(image)
    dev = resolve_device(device)
    report = RunReport(dev)
    t0 = time.perf_counter()
    # an empty canvas (exact zeros around or inside the data) is filled for the method and
    # given back as it was: the method never sees the step from the cells to the zeros
    source, (arr, canvas) = arr, filled(arr)
    restored = np.asarray((yield from m.run(arr, params, device=dev, report=report, **inputs)), dtype=np.float32)
    gate = dict(report.extras.get("gate") or {})
    weights, changed = gate.pop("weights", None), gate.pop("changed_fraction", None)
    dmap = report.extras.get("defocus_map")
    if canvas is not None:
        restore_padding(restored, source, canvas, upscale=m.upscale)
        report.note(padding_note(canvas))
        dmap = on_canvas(dmap, canvas) if dmap is not None else None
        if weights is not None:
            weights, changed = unchanged_on(weights, canvas, m.upscale)
    return RefocusResult(
        image=restored,
        method=m.name,
        parameters=params.as_dict(),
        defocus_map=dmap,
        upscale=m.upscale,
        seconds=time.perf_counter() - t0,
        weights_sha256=dict(report.weights_sha256),
        device=str(report.device),
        notes=list(report.fallbacks) + (["defocus map given by the caller"] if "defocus_map" in inputs else []),
        gate_weights=weights,
        changed_fraction=changed,
        gating=gate or None,
    )


def refocus_array(image, *, method="lbdvd", device="auto", progress=None, **kwargs) -> RefocusResult:
    """:func:`iter_refocus` run to the end (``progress`` is called with every Progress)."""
    return drain(iter_refocus(image, method=method, device=device, **kwargs), progress)
