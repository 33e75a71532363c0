"""Colours and small display helpers shared by the widgets (no computation here).

* status styles (ok / warning / error) for labels,
* one fixed colour per defocus level (level 0 = in focus, blue -> level 10, dark red),
* :func:`info_label`, a word-wrapped magicgui label, and :func:`show`, its text + style.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Label

OK_STYLE = "color: #3fbf5f;"
WARN_STYLE = "color: #e0a030;"
ERR_STYLE = "color: #e05050;"

N_LEVELS = 11
#: colormap sampled at 11 points: level 0 (in focus) blue -> level 10 (most defocused) dark red
LEVEL_CMAP = "turbo"
_CMAP_RANGE = (0.08, 0.97)


def level_colors(n_levels: int = N_LEVELS) -> np.ndarray:
    """(n_levels, 4) RGBA floats, one fixed colour per defocus level (0 = in focus)."""
    from napari.utils.colormaps import ensure_colormap

    cmap = ensure_colormap(LEVEL_CMAP)
    pos = np.linspace(*_CMAP_RANGE, n_levels)
    return np.asarray(cmap.map(pos), dtype=np.float32)


def hex_color(rgba) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def info_label(name: str, text: str = "", label: str = "") -> Label:
    """A word-wrapped read-only text line (status, descriptions)."""
    lab = Label(name=name, value=text)
    lab.label = label  # (magicgui's constructor would take "" for "use the name")
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    lab.native.setWordWrap(True)
    lab.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    lab.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
    return lab


def section(name: str, widgets=(), *, labels: bool = True):
    """A borderless labelled part of a dock widget (its label column aligned by the caller)."""
    from magicgui.widgets import Container

    from qtpy.QtWidgets import QSizePolicy

    box = Container(name=name, labels=labels, widgets=list(widgets))
    box.margins = (0, 0, 0, 0)
    box.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # no stretching
    return box


def show(label: Label, text: str, style: str = "") -> None:
    """Set a label's text and colour style; an empty text hides nothing (layout stays put)."""
    label.value = text
    label.native.setStyleSheet(style)
