"""How a defocus map is drawn: where its cells lie over the image, label colours per patch, the
hover table, legend and histogram. Defocus is in um of the map's own objective
(``DefocusMap.defocus_um``: each class's defocus for the optics the map was made with)."""

from __future__ import annotations

import numpy as np

from ..core.optics import BACKGROUND
from .style import N_LEVELS, hex_color, level_colors

BASE_OPACITY = 0.55
#: each class's defocus before any map is made: DelpNet's training objective, 2 um per class
TRAINING_DEFOCUS_UM = tuple(2.0 * k for k in range(N_LEVELS))


def map_transform(dm, scale, translate):
    """(scale, translate) of the overlay of ``dm`` over an image layer with ``scale`` and
    ``translate`` (Y, X): one cell per patch, ``grid.stride * dm.scale`` native pixels wide.

    The map's pixel ``c`` covers the image's pixels from ``c * dm.scale`` to ``(c + 1) *
    dm.scale`` (edges), so its centre is at pixel ``(c + 1/2) * dm.scale - 1/2`` in napari's
    pixel-centre coordinates.
    """
    s = np.asarray(scale, dtype=float)[-2:]
    t = np.asarray(translate, dtype=float)[-2:]
    return dm.grid.layer_transform(s * dm.scale, t + s * (dm.scale - 1) / 2)


def _um(z: float) -> str:
    return f"{z:.2g}" if z < 10 else f"{z:.0f}"


def overlay_colors(dm, use_certainty: bool) -> dict:
    """Label id -> RGBA for every grid cell: level colour, background transparent."""
    colors = level_colors(N_LEVELS)
    levels = np.asarray(dm.levels).ravel()
    cert = np.asarray(dm.certainty, dtype=float).ravel()
    out = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    for k, (lv, c) in enumerate(zip(levels, cert)):
        if 0 <= lv < N_LEVELS:
            rgba = colors[int(lv)].copy()
            rgba[3] = float(np.clip(c, 0.0, 1.0)) if use_certainty else 1.0
        else:
            rgba = np.zeros(4, np.float32)
        out[k + 1] = rgba
    return out


def overlay_features(dm):
    """Per-cell table shown in the status bar on hover: level, defocus (µm), certainty."""
    import pandas as pd

    levels = np.asarray(dm.levels).ravel().astype(int)
    cert = np.asarray(dm.certainty, dtype=float).ravel()
    rows, cols = np.asarray(dm.levels).shape
    ii, jj = np.divmod(np.arange(levels.size), cols)
    return pd.DataFrame({
        "index": np.arange(1, levels.size + 1),
        "level": [("background" if lv == BACKGROUND else str(lv)) for lv in levels],
        "defocus_um": np.round(np.asarray(dm.defocus_map_um(), float).ravel(), 3),
        "certainty": np.round(cert, 3),
        "patch": [f"({i}, {j})" for i, j in zip(ii, jj)],
    })


def beyond_range_um(dm):
    """``(lowest, highest)`` defocus (um) of the patches the map read beyond its top class
    (``DefocusMap.coarse``, methods.deep), or None."""
    um = dm.deep_um() if hasattr(dm, "deep_um") else None
    if um is None or not np.isfinite(um).any():
        return None
    return float(np.nanmin(um)), float(np.nanmax(um))


def legend_html(defocus_um=TRAINING_DEFOCUS_UM, per_column: int = 6, beyond=None) -> str:
    """The level colours as a rich-text table (two columns of swatch + "k: z µm", ``z`` the
    class's defocus ``defocus_um[k]``); ``beyond``: :func:`beyond_range_um` of the map, shown
    with the top class (its patches read farther at half the sampling)."""
    colors = level_colors(N_LEVELS)

    def text(k):
        t = f"{k}: {_um(defocus_um[k])} µm" + (" (in focus)" if k == 0 else "")
        if k == N_LEVELS - 1 and beyond is not None:
            t += f", some read beyond: {_um(beyond[0])}-{_um(beyond[1])} µm"
        return t

    entries = [(hex_color(colors[k]), text(k)) for k in range(N_LEVELS)]
    entries.append((None, "bg: background (not drawn)"))
    columns = [entries[i:i + per_column] for i in range(0, len(entries), per_column)]
    rows = []
    for r in range(per_column):
        cells = []
        for col in columns:
            if r < len(col):
                color, text = col[r]
                swatch = f'bgcolor="{color}"' if color else 'style="border: 1px dashed #888"'
                cells.append(f'<td width="14" {swatch}>&nbsp;</td><td style="font-size: 10px">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<table cellspacing="2">' + "".join(rows) + "</table>"


def level_counts(dm) -> np.ndarray:
    """Patches per level 0..10 and background."""
    levels = np.asarray(dm.levels).ravel()
    return np.array([(levels == k).sum() for k in range(N_LEVELS + 1)])


def summary_text(dm) -> str:
    levels2d = np.asarray(dm.levels)
    levels = levels2d.ravel()
    cert = np.asarray(dm.certainty, dtype=float).ravel()
    fg = levels != BACKGROUND
    if not fg.any():
        return f"{levels.size} patches, all background"
    med = int(np.median(levels[fg]))
    text = (f"{levels.size} patches ({levels2d.shape[0]}x{levels2d.shape[1]}), {int((~fg).sum())} background; "
            f"median level {med} ({_um(dm.defocus_um[med])} µm), whole image "
            f"{_um(dm.focus_defocus_um())} µm, mean certainty {cert[fg].mean():.2f}")
    beyond = beyond_range_um(dm)
    if beyond is not None:
        n = int(np.isfinite(dm.deep_um()).sum())
        text += (f"; {n} top-level patches read beyond it at half the sampling: "
                 f"{_um(beyond[0])}-{_um(beyond[1])} µm")
    if getattr(dm, "choice", ""):  # map_pixel_um="auto"
        text += f"; {dm.choice}"
    return text


def plot_histogram(canvas, dm) -> None:
    """Bars of :func:`level_counts` in the level colours on a :class:`~.plots.PlotCanvas`."""
    if canvas.ax is None:
        return
    colors = [*level_colors(N_LEVELS), np.array([0.5, 0.5, 0.5, 1.0])]
    canvas.clear()
    ax = canvas.ax
    ax.bar(np.arange(N_LEVELS + 1), level_counts(dm), color=[c[:3] for c in colors], edgecolor="#222")
    ax.set_xticks(np.arange(N_LEVELS + 1))
    ticks = [_um(z) for z in dm.defocus_um[:N_LEVELS]] + ["bg"]
    beyond = beyond_range_um(dm)
    if beyond is not None:  # the top bar holds the patches read farther too
        ticks[N_LEVELS - 1] += f"\n-{_um(beyond[1])}"
    ax.set_xticklabels(ticks, fontsize=6)
    ax.set_xlabel("defocus (µm) of each level, for the map's optics", fontsize=7)
    ax.set_ylabel("patches", fontsize=7)
    canvas.draw()
