"""The Compare dock widget: PSNR / SSIM / PCC against a ground truth, side by side, profiles."""

from __future__ import annotations

import csv
import math

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.progress import Progress
from ._common import WARN_STYLE, JobPanel, LayerCombo, PlotCanvas, layer_plane

METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("pcc", "PCC"))
COLUMNS = ("input", "restored", "gain")
PROFILE_LAYER = "profile line"


def _is_gt(layer) -> int:
    n = layer.name.lower()
    return 3 if ("ground truth" in n or n in ("gt", "ground_truth")) else 0


def _is_restored(layer) -> int:
    return 3 if "method" in layer.metadata and "source_layer" in layer.metadata else 0


def _is_input(layer) -> int:
    if _is_gt(layer) or _is_restored(layer) or "defocus_map" in layer.metadata:
        return 0
    return 2 if "defocus" in layer.name.lower() else 1


def block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of a 2-D array (shape divisible by factor)."""
    h, w = arr.shape
    return arr.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def match_to_gt(restored: np.ndarray, gt_shape) -> tuple[np.ndarray, int]:
    """``restored`` brought to ``gt_shape``: as is, or block-mean downsampled if upscaled."""
    if restored.shape == tuple(gt_shape):
        return restored, 1
    fy, fx = (r / g for r, g in zip(restored.shape, gt_shape))
    if fy == fx and fy > 1 and float(fy).is_integer():
        return block_mean(restored.astype(np.float64), int(fy)), int(fy)
    raise ValueError(f"restored shape {restored.shape} does not match the ground truth {tuple(gt_shape)} "
                     "(nor an integer upscaling of it)")


class CompareWidget(QWidget):
    """Metrics of the input and the restored layer against a ground-truth layer.

    :meth:`run` computes the table in a worker (returns it); :attr:`report` holds the
    :func:`napari_refocus.metrics.compare` result shown; :meth:`export_csv` writes the
    table; :meth:`set_side_by_side` toggles the grid view; :meth:`set_profile_line` draws
    a line (world coordinates) and plots the three intensity profiles along it.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.report = None
        self.downsampled = 1
        self.profiles: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._grid_state = None
        self._names = {}

        self.input_combo = LayerCombo(napari_viewer, prefer=_is_input)
        self.restored_combo = LayerCombo(napari_viewer, prefer=_is_restored)
        self.gt_combo = LayerCombo(napari_viewer, prefer=_is_gt)
        form = QFormLayout()
        form.addRow("input", self.input_combo)
        form.addRow("restored", self.restored_combo)
        form.addRow("ground truth", self.gt_combo)

        self.panel = JobPanel("Compute metrics", self.run, what="metrics")
        self.table = QTableWidget(len(METRICS) + 1, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setVerticalHeaderLabels([t for _, t in METRICS] + ["data range"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setFixedHeight(150)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.save_button = QPushButton("Save table as CSV…")
        self.save_button.clicked.connect(self._save_clicked)
        self.save_button.setEnabled(False)

        self.side_by_side = QCheckBox("side by side (grid view, linked cameras)")
        self.side_by_side.toggled.connect(self.set_side_by_side)
        self.line_button = QPushButton("Draw profile line")
        self.line_button.setToolTip("adds a Shapes layer in line mode; draw a line on the image")
        self.line_button.clicked.connect(self.start_line)
        self.plot = PlotCanvas(190)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.panel)
        lay.addWidget(QLabel("<b>vs ground truth</b> (gain = restored - input)"))
        lay.addWidget(self.table)
        lay.addWidget(self.note)
        lay.addWidget(self.save_button)
        lay.addWidget(self.side_by_side)
        row = QHBoxLayout()
        row.addWidget(self.line_button)
        lay.addLayout(row)
        lay.addWidget(self.plot)
        lay.addStretch(1)

    @property
    def worker(self):
        return self.panel.worker

    def layers(self):
        return self.input_combo.layer(), self.restored_combo.layer(), self.gt_combo.layer()

    # -------------------------------------------------------------- metrics
    def run(self):
        """Compute the metrics of the chosen layers in a worker; returns the worker."""
        from napari.utils.notifications import show_warning

        inp, res, gt = self.layers()
        if res is None or gt is None:
            show_warning("napari-refocus: choose a restored and a ground-truth layer")
            return None
        gt_plane = layer_plane(self.viewer, gt)[0]
        res_plane = layer_plane(self.viewer, res)[0]
        inp_plane = layer_plane(self.viewer, inp)[0] if inp is not None else None
        names = {"input": inp.name if inp is not None else None, "restored": res.name, "gt": gt.name}

        def job():
            from ..core.metrics import compare

            yield Progress(0, 1, "metrics")
            pred, factor = match_to_gt(np.asarray(res_plane), gt_plane.shape)
            report = compare(gt_plane, pred, inp_plane)
            yield Progress(1, 1, "metrics")
            return report, factor

        def done(value):
            report, factor = value
            self._names = names
            self.show_report(report, factor)

        return self.panel.start(job, done, label="metrics")

    def show_report(self, report: dict, downsampled: int = 1):
        self.report = report
        self.downsampled = downsampled
        for r, (key, _) in enumerate(METRICS):
            vals = (report.get("input", {}).get(key), report["pred"][key], report.get("gain", {}).get(key))
            for c, v in enumerate(vals):
                text = "–" if v is None else (f"{v:+.4f}" if c == 2 else f"{v:.4f}")
                if v is not None and key == "psnr":
                    text = f"{v:+.2f}" if c == 2 else f"{v:.2f}"
                self.table.setItem(r, c, QTableWidgetItem(text))
        dr = f"{report['data_range']:g}"
        self.table.setItem(len(METRICS), 0, QTableWidgetItem(dr))
        self.table.setItem(len(METRICS), 1, QTableWidgetItem(dr))
        self.table.setItem(len(METRICS), 2, QTableWidgetItem(""))
        note = f"data range {dr} (ground-truth max - min), same for both rows."
        if downsampled > 1:
            note += (f" The restored layer is {downsampled}x finer than the ground truth: it was "
                     f"downsampled by a {downsampled}x{downsampled} block mean for these metrics.")
            self.note.setStyleSheet(WARN_STYLE)
        else:
            self.note.setStyleSheet("")
        self.note.setText(note)
        self.save_button.setEnabled(True)

    def table_values(self) -> dict:
        """The numbers shown, parsed back from the table (for tests)."""
        out = {}
        for r, (key, _) in enumerate(METRICS):
            for c, col in enumerate(("input", "pred", "gain")):
                item = self.table.item(r, c)
                if item is not None and item.text() not in ("", "–"):
                    out.setdefault(col, {})[key] = float(item.text())
        return out

    def export_csv(self, path) -> str:
        """Write the shown table (and the layers and data range) to a CSV file."""
        if self.report is None:
            raise ValueError("compute the metrics first")
        rep = self.report
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["metric", "input_vs_gt", "restored_vs_gt", "gain"])
            for key, _ in METRICS:
                w.writerow([key, rep.get("input", {}).get(key, ""), rep["pred"][key],
                            rep.get("gain", {}).get(key, "")])
            w.writerow(["data_range", rep["data_range"], rep["data_range"], ""])
            w.writerow(["restored_downsampled_by", self.downsampled, "", ""])
            for role in ("input", "restored", "gt"):
                w.writerow([f"layer_{role}", self._names.get(role) or "", "", ""])
        return str(path)

    def _save_clicked(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    # -------------------------------------------------------------- side by side
    def set_side_by_side(self, on: bool):
        """Grid view with input, restored and ground truth visible (and back)."""
        if self.side_by_side.isChecked() != bool(on):
            self.side_by_side.setChecked(bool(on))  # re-enters through toggled
            return
        v = self.viewer
        chosen = [ly for ly in self.layers() if ly is not None]
        if on:
            self._grid_state = {
                "enabled": v.grid.enabled,
                "visible": {id(ly): ly.visible for ly in v.layers},
            }
            for ly in v.layers:
                ly.visible = ly in chosen
            v.grid.enabled = True
            v.reset_view()
        else:
            state = self._grid_state or {"enabled": False, "visible": {}}
            for ly in v.layers:
                if id(ly) in state["visible"]:
                    ly.visible = state["visible"][id(ly)]
            v.grid.enabled = state["enabled"]
            self._grid_state = None

    # -------------------------------------------------------------- profiles
    def _line_layer(self, create: bool = True):
        if PROFILE_LAYER in self.viewer.layers:
            return self.viewer.layers[PROFILE_LAYER]
        if not create:
            return None
        ly = self.viewer.add_shapes(name=PROFILE_LAYER, ndim=2, edge_color="yellow", edge_width=2)
        ly.events.data.connect(self._line_changed)
        return ly

    def start_line(self):
        ly = self._line_layer()
        self.viewer.layers.selection.active = ly
        ly.mode = "add_line"

    def set_profile_line(self, start, end):
        """Put a line from ``start`` to ``end`` (world y, x) in the profile layer and plot."""
        ly = self._line_layer()
        s, t = np.asarray(ly.scale[-2:]), np.asarray(ly.translate[-2:])
        pts = (np.array([start, end], dtype=float) - t) / s
        ly.data = []
        ly.add_lines([pts])
        return self.update_profile()

    def _line_changed(self, event=None):
        try:
            self.update_profile()
        except Exception as exc:  # noqa: BLE001 - never break drawing
            self.note.setText(f"profile: {exc}")

    def update_profile(self):
        """Sample the three layers along the last line of the profile layer; returns profiles."""
        from scipy.ndimage import map_coordinates

        ly = self._line_layer(create=False)
        if ly is None or len(ly.data) == 0:
            return {}
        line = np.asarray(ly.data[-1], dtype=float)[[0, -1], -2:]
        s, t = np.asarray(ly.scale[-2:]), np.asarray(ly.translate[-2:])
        world = line * s + t  # (2, 2) world y, x
        length = float(np.hypot(*(world[1] - world[0])))
        layers = dict(zip(("input", "restored", "ground truth"), self.layers()))
        px = min((float(np.min(lay.scale[-2:])) for lay in layers.values() if lay is not None), default=1.0)
        n = max(2, int(math.ceil(length / px)) + 1)
        frac = np.linspace(0, 1, n)
        pts = world[0] + frac[:, None] * (world[1] - world[0])
        self.profiles = {}
        for role, lay in layers.items():
            if lay is None:
                continue
            plane = layer_plane(self.viewer, lay)[0].astype(np.float64)
            coords = (pts - np.asarray(lay.translate[-2:])) / np.asarray(lay.scale[-2:])
            vals = map_coordinates(plane, coords.T, order=1, mode="nearest")
            self.profiles[role] = (frac * length, vals)
        self._plot_profiles()
        return self.profiles

    def _plot_profiles(self):
        if self.plot.ax is None:
            return
        self.plot.clear()
        ax = self.plot.ax
        colors = {"input": "#ff7f0e", "restored": "#2ca02c", "ground truth": "#dddddd"}
        for role, (x, y) in self.profiles.items():
            ax.plot(x, y, lw=1.2, color=colors[role], label=role)
        ax.set_xlabel("distance along line (world units, e.g. µm)", fontsize=7)
        ax.set_ylabel("intensity", fontsize=7)
        leg = ax.legend(fontsize=7, facecolor="#262930", edgecolor="#888", labelcolor="#dddddd")
        leg.get_frame().set_alpha(0.8)
        self.plot.draw()
