"""Intensity profiles along a line drawn in world coordinates, over layers of any pixel size."""

from __future__ import annotations

import math

import numpy as np

from .layers import displayed_plane_index, layer_data, read_plane

COLORS = {"input": "#ff7f0e", "restored": "#2ca02c", "ground truth": "#dddddd"}


def sample_points(world: np.ndarray, layers) -> tuple[np.ndarray, np.ndarray, float]:
    """(distance along the line, world points, length): one point per finest pixel."""
    length = float(np.hypot(*(world[1] - world[0])))
    px = min((float(np.min(ly.scale[-2:])) for ly in layers if ly is not None), default=1.0)
    n = max(2, int(math.ceil(length / px)) + 1)
    frac = np.linspace(0, 1, n)
    return frac * length, world[0] + frac[:, None] * (world[1] - world[0]), length


def layer_profile(viewer, layer, pts_world: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``layer``'s shown plane at world points (y, x).

    Only the part of the plane around the line is read (the plane of a big or lazy layer
    is never read whole on the GUI thread).
    """
    from scipy.ndimage import map_coordinates

    coords = (pts_world - np.asarray(layer.translate[-2:])) / np.asarray(layer.scale[-2:])
    data = layer_data(layer)
    h, w = data.shape[-3:-1] if layer.rgb else data.shape[-2:]
    y0 = int(np.clip(np.floor(coords[:, 0].min()) - 1, 0, h - 1))
    y1 = int(np.clip(np.ceil(coords[:, 0].max()) + 2, y0 + 1, h))
    x0 = int(np.clip(np.floor(coords[:, 1].min()) - 1, 0, w - 1))
    x1 = int(np.clip(np.ceil(coords[:, 1].max()) + 2, x0 + 1, w))
    index = displayed_plane_index(viewer, layer)
    window = read_plane(data, index, layer.rgb, window=(y0, y1, x0, x1)).astype(np.float64)
    return map_coordinates(window, (coords - (y0, x0)).T, order=1, mode="nearest")


def plot_profiles(canvas, profiles: dict) -> None:
    """The profiles ``{role: (distance, values)}`` on a :class:`~.plots.PlotCanvas`."""
    if canvas.ax is None:
        return
    canvas.clear()
    ax = canvas.ax
    for role, (x, y) in profiles.items():
        ax.plot(x, y, lw=1.2, color=COLORS.get(role, "#1f77b4"), label=role)
    ax.set_xlabel("distance along line (world units, e.g. µm)", fontsize=7)
    ax.set_ylabel("intensity", fontsize=7)
    leg = ax.legend(fontsize=7, facecolor="#262930", edgecolor="#888", labelcolor="#dddddd")
    leg.get_frame().set_alpha(0.8)
    canvas.draw()
