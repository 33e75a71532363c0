"""The Refocus dock widget: pick an image layer, a method and a device, press Refocus."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    ERR_STYLE,
    WARN_STYLE,
    DevicePicker,
    JobPanel,
    LayerCombo,
    add_result_layer,
    iter_refocus_layer,
)

#: optics fields shown in the collapsible section: (keyword, label, default, min, max, step, decimals)
OPTICS_FIELDS = (
    ("wavelength_nm", "wavelength (nm)", 451.0, 200.0, 1200.0, 1.0, 1),
    ("na", "numerical aperture", 0.5, 0.01, 1.7, 0.01, 3),
    ("refractive_index", "refractive index", 1.0, 1.0, 1.7, 0.001, 3),
    ("pixel_um", "pixel size (µm)", 0.65, 0.001, 100.0, 0.01, 4),
    ("level_step_um", "µm per defocus level", 2.0, 0.01, 100.0, 0.1, 2),
)


class OpticsBox(QWidget):
    """Optics keywords (a collapsible section when superqt is there)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.spins: dict[str, QDoubleSpinBox] = {}
        inner = QWidget()
        form = QFormLayout(inner)
        form.setContentsMargins(4, 0, 0, 0)
        for key, label, default, lo, hi, step, dec in OPTICS_FIELDS:
            s = QDoubleSpinBox()
            s.setRange(lo, hi)
            s.setDecimals(dec)
            s.setSingleStep(step)
            s.setValue(default)
            self.spins[key] = s
            form.addRow(label, s)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        try:
            from superqt import QCollapsible

            self.collapsible = QCollapsible("Optics (microscope)")
            self.collapsible.addWidget(inner)
            lay.addWidget(self.collapsible)
        except ImportError:  # pragma: no cover - superqt ships with napari
            self.collapsible = None
            lay.addWidget(QLabel("Optics (microscope)"))
            lay.addWidget(inner)

    def values(self) -> dict:
        return {k: float(s.value()) for k, s in self.spins.items()}

    def set_pixel_um(self, value: float):
        self.spins["pixel_um"].setValue(float(value))


def _guess_pixel_um(layer) -> float | None:
    """The layer's pixel size if its scale looks like micrometres (not napari's default 1)."""
    s = [float(v) for v in layer.scale[-2:]]
    if abs(s[0] - s[1]) < 1e-9 and s[0] != 1.0 and 0.001 <= s[0] <= 100:
        return s[0]
    return None


class RefocusWidget(QWidget):
    """Restore the chosen image layer with a registered method into a new layer.

    Methods tests and scripts can call: :meth:`run` (start; returns the worker),
    :meth:`cancel`, and the attribute :attr:`worker` (None when idle). Results go to a new
    layer ``"{source} [{method}]"`` with the source's scale/translate and the provenance in
    its metadata; the source layer is never modified.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        from ..methods import list_methods

        self.viewer = napari_viewer
        self.methods = list_methods()
        self.last_layer = None

        self.layer_combo = LayerCombo(napari_viewer)
        self.layer_combo.currentIndexChanged.connect(self._layer_changed)
        self.layer_info = QLabel("")
        self.layer_info.setWordWrap(True)

        self.method_combo = QComboBox()
        model = self.method_combo.model()
        for i, m in enumerate(self.methods):
            self.method_combo.addItem(m.title, m.name)
            tip = m.description
            if not m.weights_present():
                missing = ", ".join(f"weights/{w}.safetensors" for w in m.weights)
                tip += f"\n\nNot available: needs {missing}, which is not installed."
                item = model.item(i)
                item.setEnabled(False)
                self.method_combo.setItemText(i, f"{m.title}  (weights missing)")
            self.method_combo.setItemData(i, tip, 3)  # Qt.ToolTipRole
        first_ok = next((i for i, m in enumerate(self.methods) if m.weights_present()), 0)
        self.method_combo.setCurrentIndex(first_ok)
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self.method_info = QLabel("")
        self.method_info.setWordWrap(True)

        self.device = DevicePicker()

        self.iterations = QSpinBox()
        self.iterations.setRange(1, 500)
        self.iterations.setValue(15)
        self.iterations.setToolTip("Richardson-Lucy iterations")
        self.stride = QSpinBox()
        self.stride.setRange(1, 84)
        self.stride.setValue(42)
        self.stride.setToolTip("patch-grid stride in pixels (patches are 84x84; 42 = half overlap)")
        self.tta = QCheckBox("average 8 flips/rotations")
        self.tta.setToolTip("test-time augmentation: average the network (DelpNet for lbdvd, the restoration "
                            "network for learned methods) over the 8 flips/rotations; 8x slower, usually better")
        self.level = QSpinBox()
        self.level.setRange(0, 10)
        self.level.setValue(5)
        self.level.setToolTip("defocus level for the whole image (level x 2 µm by default)")
        self.optics = OpticsBox()

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("", self.layer_info)
        form.addRow("method", self.method_combo)
        form.addRow("", self.method_info)
        form.addRow("device", self.device)
        form.addRow("iterations", self.iterations)
        self._stride_row = ("stride", self.stride)
        form.addRow("stride", self.stride)
        form.addRow("augment", self.tta)
        form.addRow("defocus level", self.level)
        self.form = form

        self.panel = JobPanel("Refocus", self.run, what="refocus")
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.optics)
        lay.addWidget(self.panel)
        lay.addStretch(1)
        self._method_changed()
        self._layer_changed()

    # -------------------------------------------------------------- state
    @property
    def worker(self):
        return self.panel.worker

    @property
    def method(self) -> str:
        return self.method_combo.currentData()

    def set_method(self, name: str):
        idx = self.method_combo.findData(name)
        if idx < 0:
            raise ValueError(f"unknown method {name!r}")
        self.method_combo.setCurrentIndex(idx)

    def _method_changed(self, *_):
        m = self.methods[self.method_combo.currentIndex()]
        keys = set(m.defaults)
        for w, key in ((self.stride, "stride"), (self.tta, "tta"), (self.level, "level")):
            if hasattr(self.form, "setRowVisible"):  # Qt >= 6.4
                self.form.setRowVisible(w, key in keys)
            else:  # pragma: no cover
                w.setEnabled(key in keys)
        if "iterations" in m.defaults:
            self.iterations.setValue(int(m.defaults["iterations"]))
        if "stride" in m.defaults:
            self.stride.setValue(int(m.defaults["stride"]))
        if "level" in m.defaults:
            self.level.setValue(int(m.defaults["level"]))
        if m.weights_present():
            self.method_info.setText(m.description)
            self.method_info.setStyleSheet("")
        else:
            missing = ", ".join(f"weights/{w}.safetensors" for w in m.weights)
            self.method_info.setText(f"{m.title} needs {missing}, which is not installed; "
                                     "choose another method.")
            self.method_info.setStyleSheet(ERR_STYLE)
        self._update_enabled()

    def _layer_changed(self, *_):
        layer = self.layer_combo.layer()
        if layer is None:
            self.layer_info.setText("add an image layer (File > Open Sample > napari-refocus)")
            self.layer_info.setStyleSheet(WARN_STYLE)
        else:
            shape = tuple(layer.data.shape)
            kind = "RGB, channel by channel" if layer.rgb else (
                f"{layer.data.ndim}-D, {self._n_planes(layer)} planes" if layer.data.ndim > 2 else "2-D")
            self.layer_info.setText(f"{shape} {layer.data.dtype}, {kind}")
            self.layer_info.setStyleSheet("")
            px = _guess_pixel_um(layer)
            if px is not None:
                self.optics.set_pixel_um(px)
        self._update_enabled()

    @staticmethod
    def _n_planes(layer) -> int:
        from ._common import layer_planes

        return len(layer_planes(tuple(layer.data.shape), layer.rgb))

    def _update_enabled(self):
        if self.panel.running:
            return
        m = self.methods[self.method_combo.currentIndex()]
        ok = self.layer_combo.layer() is not None and m.weights_present()
        self.panel.button.setEnabled(ok)

    def params(self) -> dict:
        """The method keywords the widget would pass now."""
        m = self.methods[self.method_combo.currentIndex()]
        out = {"iterations": int(self.iterations.value())}
        if "stride" in m.defaults:
            out["stride"] = int(self.stride.value())
        if "level" in m.defaults:
            out["level"] = int(self.level.value())
        if "tta" in m.defaults:
            out["tta"] = bool(self.tta.isChecked())
        out.update(self.optics.values())
        return out

    # -------------------------------------------------------------- actions
    def run(self, layer=None):
        """Start refocusing ``layer`` (default: the chosen one); returns the worker."""
        layer = layer if layer is not None else self.layer_combo.layer()
        if layer is None:
            from napari.utils.notifications import show_warning

            show_warning("napari-refocus: choose an image layer first")
            return None
        return start_refocus(self.viewer, self.panel, layer, method=self.method,
                             device=self.device.device, params=self.params(), owner=self)

    def cancel(self):
        self.panel.cancel()


def start_refocus(viewer, panel: JobPanel, layer, *, method: str, device: str, params: dict,
                  owner=None, extra_meta: dict | None = None, data=None):
    """Run :func:`iter_refocus_layer` on ``layer`` in ``panel``'s worker and add the result layer.

    ``data`` overrides what is restored (e.g. one plane of a stack); it defaults to
    ``layer.data``. ``owner.last_layer`` (if given) is set to the new layer.
    """
    source_data = layer.data if data is None else data
    rgb = bool(layer.rgb) if data is None else False

    import time

    t0 = time.perf_counter()

    def job():
        return (yield from iter_refocus_layer(source_data, rgb=rgb, method=method, device=device, **params))

    def done(value):
        stack, result = value
        extra = dict(extra_meta or {})
        extra["seconds_total"] = round(time.perf_counter() - t0, 3)
        if stack.ndim > 2 and not rgb:
            extra.setdefault("planes", int(stack.size // (stack.shape[-1] * stack.shape[-2])))
        new = add_result_layer(viewer, layer, stack, result, extra)
        if owner is not None:
            owner.last_layer = new
        panel.status.setText(f"added '{new.name}' in {result.seconds:.1f} s on {result.device}")

    return panel.start(job, done, label=f"{method} on {layer.name}")
