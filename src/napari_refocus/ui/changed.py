"""Where a result changed its input: the never-worse gate's weights as a text and an overlay.

A method run with ``never_worse=True`` (the default) reports, per output pixel, the weight ``w``
its change to the input was given (:mod:`napari_refocus.methods.gate`): 0 where the region was
in focus and left as it was, 1 where it was restored fully. The Refocus widget states the share
of pixels changed and can add ``w`` as an overlay over the result, so a user sees that in-focus
regions were left alone.
"""

from __future__ import annotations

import numpy as np

from .layers import placed_like

#: the overlay's look: magenta where the result differs from the input, transparent elsewhere
OVERLAY = {"colormap": "magenta", "blending": "additive", "opacity": 0.5, "contrast_limits": (0.0, 1.0)}


def changed_text(result) -> str:
    """One line on what the gate changed (empty when the method ran without it)."""
    fraction = getattr(result, "changed_fraction", None)
    if fraction is None:
        params = getattr(result, "parameters", {}) or {}
        return "" if not params.get("never_worse") else "never worse: gated (block by block)"
    return f"never worse: changed {fraction:.0%} of the image; in-focus regions left as they were"


def add_changed_layer(viewer, result_layer, result):
    """Add the gate's weights over ``result_layer`` (same scale and translate), or None when the
    result has no weights of its shape (ungated, lazy, or a stack restored plane by plane)."""
    w = getattr(result, "gate_weights", None)
    if w is None or np.shape(w) != tuple(result_layer.data.shape[-2:]) or result_layer.data.ndim != 2:
        return None
    return viewer.add_image(np.asarray(w, np.float32), name=f"{result_layer.name} changed",
                            **placed_like(result_layer, result_layer.scale, result_layer.translate),
                            metadata={"changed_of": result_layer.name, "changed_fraction": result.changed_fraction},
                            **OVERLAY)
