"""The Calibrate dock widget: fit the effective optics of a microscope to a z-stack layer.

A bead stack (``bead`` checked) or a thin sample (cells on a coverslip) scanned through focus:
the fit (:func:`napari_refocus.io.calibration.iter_calibrate`) runs in a thread worker with
progress and Cancel, the fitted values and the quality show below, the plot compares the
measured and the model curves at a few planes (bead: radial profiles; thin sample: radially
averaged spectra), and "Save optics…" writes the JSON that ``--optics`` and the widgets'
"Load optics…" accept.
"""

from __future__ import annotations

import hashlib

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton

from .base import ViewerWidget
from .forms import align_labels
from .jobs import JobPanel
from .layers import layer_data, layer_pixel_um
from .plots import PlotCanvas
from .style import ERR_STYLE, info_label, section, show


def _is_stack(layer) -> bool:
    return not getattr(layer, "rgb", False) and sum(n > 1 for n in layer_data(layer).shape) == 3


class CalibrateWidget(ViewerWidget):
    """Calibrate to my microscope (see the module docstring). After a run :attr:`result` is
    the :class:`~napari_refocus.core.calibration.Calibration` and :attr:`record` its JSON form;
    :meth:`save_optics` writes it."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, labels=False, name="calibrate")
        self.result = None
        self.record = None
        self.stack = self.layer_chooser("stack", "z-stack", accept=_is_stack)
        self.z_step = FloatSpinBox(name="z_step_um", label="z step (µm)", value=1.0, min=0.001, max=100.0,
                                   step=0.01)
        self.pixel = FloatSpinBox(name="pixel_um", label="pixel size (µm)", value=0.65, min=0.001, max=100.0,
                                  step=0.0001)
        self.wavelength = FloatSpinBox(name="wavelength_nm", label="wavelength (nm)", value=520.0, min=200.0,
                                       max=1200.0, step=1.0)
        self.index = FloatSpinBox(name="refractive_index", label="refractive index", value=1.0, min=1.0,
                                  max=1.7, step=0.001)
        self.psf_model = ComboBox(name="psf_model", label="PSF model", choices=["exact", "paraxial"], value="exact")
        self.bead = CheckBox(name="bead", text="a bead scanned through focus (else: a thin sample)", value=False)
        self.form = section("form", [self.stack, self.z_step, self.pixel, self.wavelength, self.index,
                                     self.psf_model])
        align_labels(self.form)
        self.max_iter = 300
        self.panel = JobPanel("Calibrate", self.run, what="calibration")
        self.values = info_label("values")
        self.plot = PlotCanvas(200)
        self.save_button = PushButton(name="save", text="Save optics…")
        self.save_button.enabled = False
        self.extend([self.form, self.bead, self.panel, self.values, self.plot, self.save_button])
        self.save_button.changed.connect(self._save_clicked)
        self.stack.changed.connect(self._layer_changed)
        self._layer_changed()

    @property
    def worker(self):
        return self.panel.worker

    def _layer_changed(self, *_):
        layer = self.stack.value
        if layer is None:
            return
        pixel, _how = layer_pixel_um(layer)
        if pixel:
            self.pixel.value = pixel
        z = float(layer.scale[-3]) if layer.ndim >= 3 else 1.0
        if z != 1.0 and z > 0:  # napari's default scale 1 says nothing
            self.z_step.value = z

    def settings(self) -> dict:
        return {"bead": bool(self.bead.value), "z_step_um": float(self.z_step.value),
                "pixel_um": float(self.pixel.value), "wavelength_nm": float(self.wavelength.value),
                "refractive_index": float(self.index.value), "psf_model": self.psf_model.value,
                "max_iter": self.max_iter}

    def run(self):
        """Fit the chosen layer in a worker; returns the worker (None without a stack)."""
        layer = self.stack.value
        if layer is None:
            from napari.utils.notifications import show_warning

            show_warning("napari-refocus: choose a z-stack layer (z, y, x)")
            return None
        data, name, kw = layer_data(layer), layer.name, self.settings()
        source = getattr(getattr(layer, "source", None), "path", None)

        def job():
            from ..io.calibration import as_zstack, calibration_record, iter_calibrate

            stack = as_zstack(np.asarray(data))
            cal = yield from iter_calibrate(stack, **kw)
            sha = hashlib.sha256(np.ascontiguousarray(stack).tobytes()).hexdigest()
            command = f"napari Calibrate widget on layer {name!r}: " + ", ".join(f"{k}={v}" for k, v in kw.items())
            return cal, calibration_record(cal, stack_sha256=sha, source=source or f"layer {name}", command=command)

        return self.panel.start(job, self.show_result, label="calibration")

    def show_result(self, value) -> None:
        self.result, self.record = value
        r = self.result
        text = (f"NA {r.na:.3f}, defocus scale {r.defocus_scale:.3f}, focal plane {r.focal_plane_index:.2f} "
                f"({r.focal_plane_um:.2f} µm)\nresidual {r.residual:.3f} — {r.quality}")
        if r.reasons:
            text += "\n" + "\n".join(r.reasons)
        show(self.values, text, "" if r.quality == "good" else ERR_STYLE)
        self.save_button.enabled = True
        self.plot_curves(r.curves)

    def plot_curves(self, curves: dict) -> None:
        """Measured (solid) vs model (dashed) curves of a few planes."""
        ax = self.plot.ax
        if ax is None or not curves:
            return
        self.plot.clear()
        x = np.asarray(curves["x"])
        for k, plane in enumerate(curves["planes"]):
            color = f"C{k}"
            ax.plot(x, curves["measured"][k], color=color, lw=1.2, label=f"z {plane}")
            ax.plot(x, curves["model"][k], color=color, lw=1.0, ls="--")
        if curves.get("log_y"):
            ax.set_yscale("log")
        ax.set_xlabel(curves["x_label"], fontsize=7)
        ax.set_title("measured (solid) vs model (dashed)", fontsize=8)
        ax.legend(fontsize=6, frameon=False, labelcolor="#dddddd")
        self.plot.draw()

    def save_optics(self, path) -> str:
        """Write the last fit's JSON to ``path``; returns the path."""
        from ..io.calibration import write_calibration

        if self.record is None:
            raise ValueError("nothing to save: run the calibration first")
        return str(write_calibration(self.record, path))

    def _save_clicked(self, *_):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Save optics", "optics.json", "Optics (*.json)")
        if path:
            self.save_optics(path)
