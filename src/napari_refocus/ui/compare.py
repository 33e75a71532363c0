"""The Compare dock widget: PSNR / SSIM / PCC against a ground truth, side by side, profiles."""

from __future__ import annotations

import csv

import numpy as np
from magicgui.widgets import CheckBox, Label, PushButton, Table

from ..core.progress import Progress
from .base import ViewerWidget
from .forms import align_labels
from .jobs import JobPanel
from .layers import displayed_plane_index, is_result, layer_data, read_plane
from .plots import PlotCanvas
from .profiles import layer_profile, plot_profiles, sample_points
from .style import WARN_STYLE, info_label, section, show

METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("pcc", "PCC"))
COLUMNS = ("input", "restored", "gain")
PROFILE_LAYER = "profile line"
ROLES = ("input", "restored", "ground truth")


def _is_gt(layer) -> int:
    n = layer.name.lower()
    return 3 if ("ground truth" in n or n in ("gt", "ground_truth")) else 0


def _is_restored(layer) -> int:
    return 3 if is_result(layer) else 0


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


def _format(value, key: str, gain: bool) -> str:
    if value is None:
        return "–"
    digits = 2 if key == "psnr" else 4
    return f"{value:+.{digits}f}" if gain else f"{value:.{digits}f}"


class CompareWidget(ViewerWidget):
    """Metrics of the input and the restored layer against a ground-truth layer.

    :meth:`run` computes the table in a worker (returns it); :attr:`report` holds the
    :func:`napari_refocus.metrics.compare` result shown; :meth:`export_csv` writes the
    table; :meth:`set_side_by_side` toggles the grid view; :meth:`set_profile_line` draws
    a line (world coordinates) and plots the three intensity profiles along it.
    """

    def __init__(self, napari_viewer):
        from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate

        super().__init__(napari_viewer, labels=False, name="compare")
        self.report = None
        self.downsampled = 1
        self.profiles: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._grid_state = None
        self._names: dict = {}
        self._line_watched = None
        self.choosers = section("choosers", [
            self.layer_chooser("input", "input", prefer=_is_input),
            self.layer_chooser("restored", "restored", prefer=_is_restored),
            self.layer_chooser("gt", "ground truth", prefer=_is_gt),
        ])
        align_labels(self.choosers)
        self.register = CheckBox(name="register", value=False,
                                 text="real pair: register and match intensities")
        self.register.tooltip = ("a ground truth shot separately: shift each image onto it (sub-pixel) and fit its "
                                 "intensities (a*x+b) on the region all cover, before the metrics")
        self.panel = JobPanel("Compute metrics", self.run, what="metrics")
        self.table = Table(name="table", value={"data": [["–"] * len(COLUMNS) for _ in range(len(METRICS) + 1)],
                                                "index": [t for _, t in METRICS] + ["data range"],
                                                "columns": list(COLUMNS)})
        self.table.read_only = True
        self.table.native.setFixedHeight(150)
        self.table.native.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.native.setItemDelegate(QStyledItemDelegate(self.table.native))  # cells shown as written
        self.note = info_label("note")
        self.save_button = PushButton(name="save", text="Save table as CSV…")
        self.save_button.enabled = False
        self.side_by_side = CheckBox(name="side_by_side", text="side by side (grid view, linked cameras)")
        self.line_button = PushButton(name="line", text="Draw profile line")
        self.line_button.tooltip = "adds a Shapes layer in line mode; draw a line on the image"
        self.plot = PlotCanvas(190)
        self.extend([self.choosers, self.register, self.panel, Label(name="title", value="<b>vs ground truth</b> "
                                                                          "(gain = restored - input)"),
                     self.table, self.note, self.save_button, self.side_by_side, self.line_button, self.plot])
        self.save_button.changed.connect(self._save_clicked)
        self.side_by_side.changed.connect(self.set_side_by_side)
        self.line_button.changed.connect(self.start_line)

    @property
    def worker(self):
        return self.panel.worker

    def layers(self):
        return tuple(self.choosers[name].value for name in ("input", "restored", "gt"))

    # -------------------------------------------------------------- metrics
    def run(self):
        """Compute the metrics of the chosen layers in a worker; returns the worker."""
        inp, res, gt = self.layers()
        if res is None or gt is None:
            from napari.utils.notifications import show_warning

            show_warning("napari-refocus: choose a restored and a ground-truth layer")
            return None
        # which plane each layer shows, and its data object: read in the worker
        planes = [None if ly is None else (layer_data(ly), displayed_plane_index(self.viewer, ly), bool(ly.rgb))
                  for ly in (inp, res, gt)]
        names = {"input": inp.name if inp is not None else None, "restored": res.name, "gt": gt.name}
        register = bool(self.register.value)

        def job():
            from ..core.metrics import iter_compare

            yield Progress(0, 1, "metrics")
            inp_plane, res_plane, gt_plane = (None if p is None else read_plane(*p) for p in planes)
            pred, factor = match_to_gt(np.asarray(res_plane), gt_plane.shape)
            # a step per image (and per shift): Cancel waits for one step, not the whole table
            report = yield from iter_compare(gt_plane, pred, inp_plane, register=register)
            return report, factor

        def done(value):
            self._names = names
            self.show_report(*value)

        return self.panel.start(job, done, label="metrics")

    def show_report(self, report: dict, downsampled: int = 1):
        self.report = report
        self.downsampled = downsampled
        for r, (key, _) in enumerate(METRICS):
            vals = (report.get("input", {}).get(key), report["pred"][key], report.get("gain", {}).get(key))
            for c, v in enumerate(vals):
                self._set_cell(r, c, _format(v, key, gain=c == 2))
        dr = f"{report['data_range']:g}"
        for c, text in enumerate((dr, dr, "")):
            self._set_cell(len(METRICS), c, text)
        note = f"data range {dr} (ground-truth max - min), same for both rows."
        style = ""
        reg = report.get("registration")
        if reg is not None:
            y0, y1, x0, x1 = reg["box"]
            moved = ", ".join(f"{k} {dy:+.2f}, {dx:+.2f} px" for k, (dy, dx) in reg["shift_px"].items())
            note = (f"registered (shift onto the ground truth: {moved}) and intensity-matched, on rows {y0}-{y1} and "
                    f"columns {x0}-{x1}; data range {dr} (the ground truth's there), same for both rows.")
        if downsampled > 1:
            note += (f" The restored layer is {downsampled}x finer than the ground truth: it was "
                     f"downsampled by a {downsampled}x{downsampled} block mean for these metrics.")
            style = WARN_STYLE
        show(self.note, note, style)
        self.save_button.enabled = True

    def _set_cell(self, row: int, col: int, text: str):
        # as text, with its sign and digits (magicgui's cells would turn it into a float)
        from qtpy.QtWidgets import QTableWidgetItem

        self.table.native.setItem(row, col, QTableWidgetItem(text))

    def table_values(self) -> dict:
        """The numbers shown, parsed back from the table (for tests)."""
        out = {}
        for r, (key, _) in enumerate(METRICS):
            for c, col in enumerate(("input", "pred", "gain")):
                text = self.table.native.item(r, c).text()
                if text not in ("", "–"):
                    out.setdefault(col, {})[key] = float(text)
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
            reg = rep.get("registration")
            w.writerow(["registered_and_intensity_matched", reg is not None, "", ""])
            if reg is not None:  # what was done to each image before its row's numbers
                roles = {"input": "input", "pred": "restored"}
                for key, (dy, dx) in reg["shift_px"].items():
                    a, b = reg["intensity"][key]
                    w.writerow([f"{roles[key]}_shift_px_dy_dx_and_fit_a_b", f"{dy} {dx}", f"{a} {b}", ""])
                w.writerow(["region_y0_y1_x0_x1", " ".join(map(str, reg["box"])), "", ""])
            for role in ("input", "restored", "gt"):
                w.writerow([f"layer_{role}", self._names.get(role) or "", "", ""])
        return str(path)

    def _save_clicked(self, *_):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Save metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    # -------------------------------------------------------------- side by side
    def set_side_by_side(self, on: bool):
        """Grid view with input, restored and ground truth visible (and back)."""
        if self.side_by_side.value != bool(on):
            self.side_by_side.value = bool(on)  # re-enters through changed
            return
        v = self.viewer
        chosen = [ly for ly in self.layers() if ly is not None]
        if on:
            self._grid_state = {"enabled": v.grid.enabled, "visible": {id(ly): ly.visible for ly in v.layers}}
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
            ly = self.viewer.layers[PROFILE_LAYER]
        elif create:
            ly = self.viewer.add_shapes(name=PROFILE_LAYER, ndim=2, edge_color="yellow", edge_width=2)
        else:
            return None
        if ly is not self._line_watched:  # redraw the profiles whenever the line is edited
            self._line_watched = ly
            self.watch(ly.events.data, self._line_changed)
        return ly

    def start_line(self, *_):
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
            show(self.note, f"profile: {exc}")

    def update_profile(self):
        """Sample the three layers along the last line of the profile layer; returns profiles."""
        ly = self._line_layer(create=False)
        if ly is None or len(ly.data) == 0:
            return {}
        line = np.asarray(ly.data[-1], dtype=float)[[0, -1], -2:]
        world = line * np.asarray(ly.scale[-2:]) + np.asarray(ly.translate[-2:])  # (2, 2) world y, x
        layers = dict(zip(ROLES, self.layers()))
        distance, pts, _ = sample_points(world, layers.values())
        self.profiles = {role: (distance, layer_profile(self.viewer, lay, pts))
                         for role, lay in layers.items() if lay is not None}
        plot_profiles(self.plot, self.profiles)
        return self.profiles
