"""The Defocus map dock widget: DelpNet's per-patch defocus levels as an overlay on the image."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    ERR_STYLE,
    N_LEVELS,
    DevicePicker,
    JobPanel,
    LayerCombo,
    PlotCanvas,
    hex_color,
    layer_plane,
    level_colors,
)

BACKGROUND = 11
BASE_OPACITY = 0.55


def _is_source_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and "defocus_map" not in layer.metadata


def _defocus_module():
    import importlib

    try:
        return importlib.import_module("napari_refocus.methods.defocus")
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        raise ValueError(f"the defocus-map module is not available: {exc}") from None


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


def overlay_features(dm, level_step_um: float = 2.0):
    """Per-cell table shown in the status bar on hover: level, defocus (µm), certainty."""
    import pandas as pd

    levels = np.asarray(dm.levels).ravel().astype(int)
    cert = np.asarray(dm.certainty, dtype=float).ravel()
    rows, cols = np.asarray(dm.levels).shape
    ii, jj = np.divmod(np.arange(levels.size), cols)
    return pd.DataFrame({
        "index": np.arange(1, levels.size + 1),
        "level": [("background" if lv == BACKGROUND else str(lv)) for lv in levels],
        "defocus_um": np.where(levels == BACKGROUND, np.nan, levels * level_step_um),
        "certainty": np.round(cert, 3),
        "patch": [f"({i}, {j})" for i, j in zip(ii, jj)],
    })


class DefocusMapWidget(QWidget):
    """Compute a DelpNet defocus map of the chosen image and show it over the image.

    :meth:`run` starts the map (returns the worker), :meth:`refocus_with_map` runs LB-DVD
    with that map (no recomputation), :meth:`cancel` stops either; :attr:`map_layer` is the
    overlay (a Labels layer, one label per patch, coloured by level, with level/certainty
    shown on hover) and its ``metadata["defocus_map"]`` is the :class:`DefocusMap`.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.map_layer = None
        self.last_layer = None
        self._map_source = None

        self.layer_combo = LayerCombo(napari_viewer, accept=_is_source_image)
        self.device = DevicePicker()
        self.stride = QSpinBox()
        self.stride.setRange(1, 84)
        self.stride.setValue(42)
        self.stride.setToolTip("patch-grid stride in pixels (84x84 patches; 42 = half overlap)")
        self.tta = QCheckBox("average 8 flips/rotations")
        self.tta.setToolTip("test-time augmentation: 8x slower, more accurate (see weights/delpnet.md)")
        self.use_certainty = QCheckBox("certainty as opacity")
        self.use_certainty.setToolTip("draw uncertain patches more transparent")
        self.use_certainty.toggled.connect(self._recolor)
        self.weights_note = QLabel("")
        self.weights_note.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("device", self.device)
        form.addRow("stride", self.stride)
        form.addRow("", self.tta)
        form.addRow("", self.use_certainty)

        self.panel = JobPanel("Compute defocus map", self.run, what="defocus map")

        self.legend = self._make_legend()
        self.hist = PlotCanvas(150)
        if self.hist.ax is not None:
            self.hist.ax.text(0.5, 0.5, "no defocus map yet", ha="center", va="center",
                              color="#aaaaaa", fontsize=8, transform=self.hist.ax.transAxes)
            self.hist.ax.set_xticks([])
            self.hist.ax.set_yticks([])
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        self.iterations = QSpinBox()
        self.iterations.setRange(1, 500)
        self.iterations.setValue(15)
        form2 = QFormLayout()
        form2.addRow("RL iterations", self.iterations)
        self.refocus_panel = JobPanel("Refocus with this map", self.refocus_with_map,
                                      what="refocus (LB-DVD)")
        self.refocus_panel.button.setEnabled(False)

        lay = QVBoxLayout(self)
        lay.addWidget(self.weights_note)
        lay.addLayout(form)
        lay.addWidget(self.panel)
        lay.addWidget(QLabel("<b>Defocus level</b> (hover the overlay for level and certainty)"))
        lay.addWidget(self.legend)
        lay.addWidget(self.hist)
        lay.addWidget(self.summary)
        lay.addLayout(form2)
        lay.addWidget(self.refocus_panel)
        lay.addStretch(1)
        self._check_weights()

    # -------------------------------------------------------------- pieces
    def _make_legend(self) -> QWidget:
        w = QWidget()
        grid = QGridLayout(w)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(1)
        colors = level_colors(N_LEVELS)
        entries = [(hex_color(colors[k]), f"{k}: {2 * k} µm" + (" (in focus)" if k == 0 else ""))
                   for k in range(N_LEVELS)]
        entries.append((None, "bg: background (not drawn)"))
        per_col = 6
        for n, (col, text) in enumerate(entries):
            sw = QLabel()
            sw.setFixedSize(14, 14)
            sw.setStyleSheet(f"background: {col}; border: 1px solid #888;" if col
                             else "background: transparent; border: 1px dashed #888;")
            lab = QLabel(text)
            lab.setStyleSheet("font-size: 10px;")
            r, c = n % per_col, 2 * (n // per_col)
            grid.addWidget(sw, r, c)
            grid.addWidget(lab, r, c + 1)
        return w

    def _check_weights(self) -> bool:
        from ..methods import get_method

        ok = get_method("lbdvd").weights_present()
        if ok:
            self.weights_note.setText("")
            self.weights_note.hide()
        else:
            self.weights_note.setText(
                "DelpNet weights are not installed (weights/delpnet.safetensors): the defocus "
                "map and LB-DVD cannot run yet. Use Refocus with Richardson-Lucy meanwhile.")
            self.weights_note.setStyleSheet(ERR_STYLE)
            self.weights_note.show()
        return ok

    @property
    def worker(self):
        return self.panel.worker or self.refocus_panel.worker

    def cancel(self):
        self.panel.cancel()
        self.refocus_panel.cancel()

    # -------------------------------------------------------------- map
    def run(self, layer=None):
        """Compute the defocus map of ``layer`` (default: the chosen one); returns the worker."""
        from napari.utils.notifications import show_warning

        self._check_weights()
        layer = layer if layer is not None else self.layer_combo.layer()
        if layer is None:
            show_warning("napari-refocus: choose an image layer first")
            return None
        plane, index = layer_plane(self.viewer, layer)
        device, stride, tta = self.device.device, int(self.stride.value()), self.tta.isChecked()

        def job():
            mod = _defocus_module()
            return (yield from mod.iter_defocus_map(plane, device=device, stride=stride, tta=tta))

        def done(dm):
            self._show_map(layer, dm, index, plane)

        return self.panel.start(job, done, label=f"defocus map of {layer.name}")

    def _show_map(self, source, dm, index, plane):
        levels = np.asarray(dm.levels)
        rows, cols = levels.shape
        ids = (np.arange(rows * cols, dtype=np.int32) + 1).reshape(rows, cols)
        scale, translate = dm.grid.layer_transform(source.scale[-2:], source.translate[-2:])
        from napari.utils.colormaps import DirectLabelColormap

        meta = {
            "defocus_map": dm,
            "source_layer": source.name,
            "source_plane": list(index),
            "grid": dm.grid.as_dict(),
            "levels": levels.tolist(),
        }
        name = f"{source.name} defocus map"
        cmap = DirectLabelColormap(color_dict=overlay_colors(dm, self.use_certainty.isChecked()))
        features = overlay_features(dm)
        if self.map_layer is not None and self.map_layer in self.viewer.layers \
                and self.map_layer.metadata.get("source_layer") == source.name:
            ly = self.map_layer
            ly.data = ids
            ly.scale, ly.translate = scale, translate
            ly.metadata = meta
            ly.features = features
            ly.colormap = cmap
        else:
            ly = self.viewer.add_labels(
                ids, name=name, scale=scale, translate=translate, metadata=meta,
                features=features, colormap=cmap, opacity=BASE_OPACITY, blending="translucent",
            )
            ly.editable = False
        self.map_layer = ly
        self._map_source = source
        self._map_plane = plane
        self._map_index = index
        self._plot_histogram(dm)
        self.refocus_panel.button.setEnabled(True)
        # keep the image selected so its values show in the status bar too
        self.viewer.layers.selection.active = ly

    def _recolor(self, *_):
        ly = self.map_layer
        if ly is None or ly not in self.viewer.layers:
            return
        from napari.utils.colormaps import DirectLabelColormap

        dm = ly.metadata["defocus_map"]
        ly.colormap = DirectLabelColormap(color_dict=overlay_colors(dm, self.use_certainty.isChecked()))

    def _plot_histogram(self, dm):
        levels = np.asarray(dm.levels).ravel()
        counts = np.array([(levels == k).sum() for k in range(N_LEVELS + 1)])
        cert = np.asarray(dm.certainty, dtype=float).ravel()
        fg = levels != BACKGROUND
        if fg.any():
            med = int(np.median(levels[fg]))
            self.summary.setText(
                f"{levels.size} patches ({np.asarray(dm.levels).shape[0]}x{np.asarray(dm.levels).shape[1]}), "
                f"{int((~fg).sum())} background; median level {med} ({2 * med} µm), "
                f"mean certainty {cert[fg].mean():.2f}")
        else:
            self.summary.setText(f"{levels.size} patches, all background")
        if self.hist.ax is None:
            return
        colors = [*level_colors(N_LEVELS), np.array([0.5, 0.5, 0.5, 1.0])]
        self.hist.clear()
        ax = self.hist.ax
        ax.bar(np.arange(N_LEVELS + 1), counts, color=[c[:3] for c in colors], edgecolor="#222")
        ax.set_xticks(np.arange(N_LEVELS + 1))
        ax.set_xticklabels([str(k) for k in range(N_LEVELS)] + ["bg"])
        ax.set_xlabel("defocus level (2 µm each)", fontsize=7)
        ax.set_ylabel("patches", fontsize=7)
        self.hist.draw()

    def histogram_counts(self) -> np.ndarray:
        """Patches per level 0..10 and background of the shown map (for tests)."""
        dm = self.map_layer.metadata["defocus_map"]
        levels = np.asarray(dm.levels).ravel()
        return np.array([(levels == k).sum() for k in range(N_LEVELS + 1)])

    # -------------------------------------------------------------- refocus with the map
    def refocus_with_map(self):
        """LB-DVD on the map's source plane with this map (DelpNet is not run again)."""
        from napari.utils.notifications import show_warning

        from .refocus import _guess_pixel_um, start_refocus

        ly = self.map_layer
        source = self._map_source
        if ly is None or ly not in self.viewer.layers:
            show_warning("napari-refocus: compute a defocus map first")
            return None
        if source is None or source not in self.viewer.layers:
            show_warning("napari-refocus: the map's image layer is gone")
            return None
        dm = ly.metadata["defocus_map"]
        params = {"defocus_map": dm, "iterations": int(self.iterations.value())}
        px = _guess_pixel_um(source)
        if px is not None:
            params["pixel_um"] = px
        extra = {"defocus_map_layer": ly.name}
        if self._map_index:
            extra["source_plane"] = list(self._map_index)
        data = None if (not self._map_index and not source.rgb) else self._map_plane
        return start_refocus(self.viewer, self.refocus_panel, source, method="lbdvd",
                             device=self.device.device, params=params, owner=self,
                             extra_meta=extra, data=data)
