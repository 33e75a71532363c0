"""The Refocus dock widget: pick an image layer, a method and a device, press Refocus.

The form is generated: one chooser of the registered methods, and for the chosen method the
fields of its schema it shows (``Method.form_fields``), the optics when its schema has them,
and the persisted preferences (device, iterations). :meth:`RefocusWidget.params` is the one
place form values become the method's keyword parameters (:func:`.forms.method_kwargs`).
"""

from __future__ import annotations

import time

from magicgui.widgets import CheckBox, ComboBox, Container, PushButton

from ..core.progress import Progress
from .base import ViewerWidget
from .changed import add_changed_layer, changed_text
from .forms import (
    PREFERENCES,
    Preferences,
    align_labels,
    device_status,
    form_values,
    method_kwargs,
    schema_form,
    set_defaults,
)
from .jobs import JobPanel
from .layers import (
    add_result_layer,
    display_limits,
    is_result,
    layer_axes,
    layer_data,
    plane_count,
    read_plane,
)
from .optics_panel import OpticsPanel
from .style import ERR_STYLE, WARN_STYLE, info_label, section, show


def _not_result(layer) -> int:
    return 0 if is_result(layer) else 1


def iterations_spec(methods) -> dict | None:
    """The ``iterations`` field of the first method that has one (the preference's limits)."""
    for m in methods:
        for spec in m.describe():
            if spec["name"] == "iterations":
                return spec
    return None


class RefocusWidget(ViewerWidget):
    """Restore the chosen image layer with a registered method into a new layer.

    :meth:`run` starts (returns the worker), :meth:`cancel` stops, :attr:`worker` is None
    when idle; :meth:`set_method` and :meth:`set_values` change the form as a user would.
    Results go to a new layer ``"{source} [{method}]"`` with the source's scale/translate
    and the provenance in its metadata; the source layer is never modified.
    """

    def __init__(self, napari_viewer):
        from ..core.devices import available_devices
        from ..methods import list_methods

        super().__init__(napari_viewer, labels=False, name="refocus")
        self.methods = list_methods()
        self.devices = available_devices()
        self.last_layer = None
        self.changed_layer = None
        self.image = self.layer_chooser("image", "image", prefer=_not_result)
        self.layer_info = info_label("layer_info")
        self.method = ComboBox(name="method", label="method",
                               choices=[(m.title if m.weights_present() else f"{m.title}  (weights missing)", m.name)
                                        for m in self.methods])
        self.method_info = info_label("method_info")
        self.source = section("source", [self.image, self.layer_info, self.method, self.method_info])
        self.prefs = Preferences(self.devices, iterations_spec(self.methods))
        self.device_note = info_label("device_note")
        self.forms: dict[str, Container] = {}  # one generated form per method, made when first chosen
        self.params_box = section("params_box", labels=False)
        self.optics_panel = OpticsPanel()
        self.show_optics, self.optics = self.optics_panel.show, self.optics_panel.form
        self.reset_button = PushButton(name="reset", text="Reset to defaults")
        self.reset_button.tooltip = "device, iterations, method parameters and optics back to their defaults"
        self.show_changed = CheckBox(name="show_changed", value=False, text="show where it changed (overlay)")
        self.show_changed.tooltip = ("with never worse on: add the weight each pixel's change was given (0: left "
                                     "as it was, 1: restored) as a layer over the result")
        self.panel = JobPanel("Refocus", self.run, what="refocus")
        self.extend([self.source, self.prefs, section("notes", [self.device_note]),
                     self.params_box, self.optics_panel, self.reset_button, self.show_changed, self.panel])
        self._mark_unavailable()
        first_ok = next((m.name for m in self.methods if m.weights_present()), self.methods[0].name)
        self.method.value = first_ok
        self.method.changed.connect(self._method_changed)
        self.image.changed.connect(self._layer_changed)
        self.prefs.device.changed.connect(self._device_changed)
        self.reset_button.changed.connect(self.reset_defaults)
        self.panel.finished.connect(self._update_enabled)
        self._method_changed()
        self._layer_changed()
        self._device_changed()

    # -------------------------------------------------------------- state
    @property
    def worker(self):
        return self.panel.worker

    def current_method(self):
        return next(m for m in self.methods if m.name == self.method.value)

    @property
    def form(self) -> Container:
        """The generated form of the chosen method."""
        return self.forms[self.method.value]

    def set_method(self, name: str):
        if name not in [m.name for m in self.methods]:
            raise ValueError(f"unknown method {name!r}")
        self.method.value = name

    def set_values(self, **values):
        """Set form fields by name (the method's, the optics' or a preference)."""
        for name, value in values.items():
            for form in (self.form, self.optics, self.prefs):
                if form.get_widget(name) is not None:
                    form[name].value = value
                    break
            else:
                raise ValueError(f"the form of {self.method.value!r} has no field {name!r}")

    def values(self) -> dict:
        """Every value the form holds now (preferences, the method's fields, the optics)."""
        return {**form_values(self.prefs, self.form), **self.optics_panel.values()}

    def params(self) -> dict:
        """The method's keyword parameters from the form (only names its schema accepts)."""
        return method_kwargs(self.current_method(), self.values())

    def _mark_unavailable(self):
        from qtpy.QtCore import Qt

        model = self.method.native.model()
        for i, m in enumerate(self.methods):
            tip = m.description
            if not m.weights_present():
                missing = ", ".join(f"weights/{w}.safetensors" for w in m.weights)
                tip += f"\n\nNot available: needs {missing}, which is not installed."
                model.item(i).setEnabled(False)
            self.method.native.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)

    def _method_changed(self, *_):
        m = self.current_method()
        if m.name not in self.forms:
            self.forms[m.name] = schema_form(m.describe(), [n for n in m.form_fields if n not in PREFERENCES],
                                             name=m.name.replace("-", "_"))
            self.params_box.append(self.forms[m.name])
        for name, form in self.forms.items():
            form.visible = name == m.name
        self.prefs.iterations.visible = m.accepts("iterations")
        self.optics_panel.visible = m.accepts("optics")
        align_labels(self.source, self.prefs, self["notes"], self.form, self.optics)
        if m.weights_present():
            show(self.method_info, m.description)
        else:
            missing = ", ".join(f"weights/{w}.safetensors" for w in m.weights)
            show(self.method_info, f"{m.title} needs {missing}, which is not installed; choose another method.",
                 ERR_STYLE)
        self._update_enabled()

    def _layer_changed(self, *_):
        layer = self.image.value
        if layer is None:
            show(self.layer_info, "add an image layer (File > Open Sample > napari-refocus)", WARN_STYLE)
        else:
            data = layer_data(layer)
            kind = "RGB, channel by channel" if layer.rgb else (
                f"{data.ndim}-D, {plane_count(layer)} planes" if data.ndim > 2 else "2-D")
            pyramid = f", the full resolution of {len(layer.data)} levels" if layer.multiscale else ""
            show(self.layer_info, f"{tuple(data.shape)} {data.dtype}, {kind}{pyramid}")
        self.optics_panel.set_layer(layer)
        self._update_enabled()

    def _device_changed(self, *_):
        show(self.device_note, *device_status(self.prefs.device.value, self.devices))
        self.device_note.tooltip = "devices here: " + ", ".join(self.devices)

    def _update_enabled(self, *_):
        if not self.closed and not self.panel.running:
            self.panel.button.enabled = self.image.value is not None and self.current_method().weights_present()

    def reset_defaults(self, *_):
        """Preferences, every method's fields and the optics back to their defaults."""
        self.prefs.reset()
        for m in self.methods:
            if m.name in self.forms:
                set_defaults(self.forms[m.name], m.describe())
        self.optics_panel.reset()  # the layer's optics and the defaults

    # -------------------------------------------------------------- actions
    def run(self, layer=None):
        """Start refocusing ``layer`` (default: the chosen one); returns the worker."""
        layer = layer if layer is not None else self.image.value
        if layer is None:
            from napari.utils.notifications import show_warning

            show_warning("napari-refocus: choose an image layer first")
            return None
        m = self.current_method()
        params = self.params()
        try:  # a bad value is reported now, before any work starts
            if m.accepts("optics"):
                self.optics_panel.optics()
            m.parse(**params)
        except ValueError as exc:
            self.panel.fail(exc)
            return None
        extra = {"optics_source": self.optics_panel.sources()} if m.accepts("optics") else None
        return start_refocus(self.viewer, self.panel, layer, method=m.name, device=self.prefs.device.value,
                             params=params, owner=self, extra_meta=extra, show_changed=self.show_changed.value)

    def cancel(self):
        self.panel.cancel()


def refocus_planes(data, *, axes: str, method: str, device: str, params: dict, inputs: dict | None = None):
    """Worker body: restore every plane of ``data`` (read here, one plane at a time).

    Yields Progress, returns ``(stack, first_result)``. A lazy 2-D image (dask, zarr) stays
    lazy: :func:`napari_refocus.refocus` returns a result computed block by block when read; so
    does a 2-D image in memory whose in-memory run would not fit (``core.memory.needs_blocks``).
    """
    from ..api import is_lazy, refocus
    from ..core.memory import needs_blocks
    from ..core.planes import iter_map_planes
    from ..methods import get_method, iter_refocus

    if axes == "YX" and not inputs and not is_lazy(data) and needs_blocks(
            data.shape, data.dtype, get_method(method), input_in_memory=True):
        import dask.array as da  # too big for an in-memory run here: block by block, as a lazy layer

        data = da.from_array(data, chunks=2048)
    if axes == "YX" and is_lazy(data) and not inputs:
        res = refocus(data, method=method, device=device, **params)
        yield Progress(1, 1, "lazy")
        return res.image, res

    def job(plane):
        res = yield from iter_refocus(plane, method=method, device=device, **params, **(inputs or {}))
        return res.image, res

    return (yield from iter_map_planes(data, job, axes=axes, upscale=get_method(method).upscale))


def start_refocus(viewer, panel: JobPanel, layer, *, method: str, device: str, params: dict,
                  inputs: dict | None = None, plane: tuple | None = None, owner=None,
                  extra_meta: dict | None = None, show_changed: bool = False):
    """Restore ``layer`` in ``panel``'s worker and add the result layer.

    ``plane`` (an index into the layer's data) restores only that 2-D plane (RGB: the mean
    of its colour channels); ``inputs`` are run-time inputs such as ``defocus_map``. The
    layer's data is read in the worker. ``owner.last_layer`` (if given) is the new layer;
    ``show_changed`` adds the never-worse gate's weights over it (``owner.changed_layer``).
    """
    data, rgb = layer_data(layer), bool(layer.rgb)
    axes = "YX" if plane is not None else layer_axes(layer)
    t0 = time.perf_counter()

    def job():
        source = read_plane(data, plane, rgb) if plane is not None else data
        stack, result = yield from refocus_planes(source, axes=axes, method=method, device=device, params=params,
                                                  inputs=inputs)
        return stack, result, display_limits(stack)  # the range here, not on the GUI thread

    def done(value):
        stack, result, limits = value
        extra = dict(extra_meta or {})
        extra["seconds_total"] = round(time.perf_counter() - t0, 3)
        if stack.ndim > 2 and "S" not in axes:
            extra.setdefault("planes", int(stack.size // (stack.shape[-1] * stack.shape[-2])))
        new = add_result_layer(viewer, layer, stack, result, extra, limits=limits)
        changed = add_changed_layer(viewer, new, result) if show_changed else None
        if owner is not None:
            owner.last_layer = new
            owner.changed_layer = changed
        note = changed_text(result) if stack.ndim == 2 else ""
        show(panel.status, f"added '{new.name}' in {result.seconds:.1f} s on {result.device}" + (f"; {note}" if note else ""))

    return panel.start(job, done, label=f"{method} on {layer.name}")
