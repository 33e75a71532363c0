"""Pieces shared by the napari-refocus widgets.

* :class:`LayerCombo` - a layer chooser that follows the viewer's layer list.
* :class:`DevicePicker` - devices that exist here, plus a GPU/CPU indicator.
* :class:`JobPanel` - Run/Cancel button + progress bar around a napari thread worker that
  drives one of the core's progress generators.
* :func:`iter_refocus_layer` - plane-by-plane (nD) / channel-by-channel (RGB) driver of
  :func:`napari_refocus.methods.iter_refocus` (pure numpy, runs in the worker thread).
* :func:`add_result_layer` - puts a :class:`~napari_refocus.methods.RefocusResult` into a new
  layer over the source (scale, translate, provenance); never touches the source layer.
* level colours for defocus maps.

The widgets only gather parameters, start workers and put results into layers; every
computation is in the core modules (``methods``, ``defocus``, ``metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.progress import Progress

# ------------------------------------------------------------------------------ colours
N_LEVELS = 11
#: colormap sampled at 11 points: level 0 (in focus) blue -> level 10 (20 um) dark red
LEVEL_CMAP = "turbo"
_CMAP_RANGE = (0.08, 0.97)
OK_STYLE = "color: #3fbf5f;"
WARN_STYLE = "color: #e0a030;"
ERR_STYLE = "color: #e05050;"


def level_colors(n_levels: int = N_LEVELS) -> np.ndarray:
    """(n_levels, 4) RGBA floats, one fixed colour per defocus level (0 = in focus)."""
    from napari.utils.colormaps import ensure_colormap

    cmap = ensure_colormap(LEVEL_CMAP)
    pos = np.linspace(*_CMAP_RANGE, n_levels)
    return np.asarray(cmap.map(pos), dtype=np.float32)


def hex_color(rgba) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


# ------------------------------------------------------------------------------ layer chooser
def _is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers that pass ``accept`` (image layers by default).

    Keeps its selection when layers are added, removed, moved or renamed. ``prefer(layer)``
    ranks candidates for the automatic choice when nothing valid is selected.
    """

    def __init__(self, viewer, accept: Callable | None = None, prefer: Callable | None = None,
                 allow_none: bool = False, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self._accept = accept or _is_image
        self._prefer = prefer
        self._allow_none = allow_none
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        ev = viewer.layers.events
        ev.inserted.connect(self._on_inserted)
        ev.removed.connect(self.refresh)
        ev.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _on_inserted(self, event=None):
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self.refresh)
        self.refresh()
        # a new layer that fits better than the current choice (e.g. a fresh result) wins
        if layer is not None and self._prefer is not None and self._accept(layer):
            cur = self.layer()
            if cur is None or self._prefer(layer) > self._prefer(cur):
                self.set_layer(layer)

    def layers(self) -> list:
        return [ly for ly in self.viewer.layers if self._accept(ly)]

    def refresh(self, event=None):
        # a renamed layer: follow it by identity
        current = self.layer()
        candidates = self.layers()
        names = [ly.name for ly in candidates]
        self.blockSignals(True)
        self.clear()
        if self._allow_none:
            self.addItem("(none)")
        self.addItems(names)
        self.blockSignals(False)
        if current is not None and current in candidates:
            self.set_layer(current)
        else:
            best = None
            if self._prefer is not None:
                ranked = sorted(candidates, key=lambda ly: -self._prefer(ly))
                best = ranked[0] if ranked and self._prefer(ranked[0]) > 0 else None
            if best is None and candidates and not self._allow_none:
                best = candidates[-1]
            if best is not None:
                self.set_layer(best)
            self.currentIndexChanged.emit(self.currentIndex())
        self._current = self.layer()

    def layer(self):
        """The chosen layer object (None if nothing valid is chosen)."""
        name = self.currentText()
        prev = getattr(self, "_current", None)
        if prev is not None and prev in self.viewer.layers and prev.name == name:
            return prev
        if name and name in self.viewer.layers:
            ly = self.viewer.layers[name]
            return ly if self._accept(ly) else None
        return None

    def set_layer(self, layer):
        name = layer if isinstance(layer, str) else layer.name
        idx = self.findText(name, Qt.MatchFlag.MatchExactly)
        if idx >= 0:
            self.setCurrentIndex(idx)
            self._current = self.layer()


# ------------------------------------------------------------------------------ devices
class DevicePicker(QWidget):
    """"auto" + the devices that exist here, and a label saying whether a GPU is used."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from ..core.devices import available_devices

        self.devices = available_devices()
        self.combo = QComboBox()
        self.combo.addItems(["auto", *self.devices])
        self.combo.setToolTip("auto = the first GPU if there is one, else the CPU")
        self.indicator = QLabel()
        self.indicator.setObjectName("device_indicator")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.indicator)
        self.combo.currentTextChanged.connect(self._update)
        self._update()

    @property
    def device(self) -> str:
        return self.combo.currentText()

    def effective(self) -> str:
        d = self.device
        return self.devices[0] if d == "auto" else d

    def _update(self, *_):
        d = self.effective()
        if d.startswith("cuda"):
            self.indicator.setText("● GPU (CUDA)")
            self.indicator.setStyleSheet(OK_STYLE)
        elif d == "mps":
            self.indicator.setText("● GPU (Apple MPS)")
            self.indicator.setStyleSheet(OK_STYLE)
        else:
            gpu = any(x != "cpu" for x in self.devices)
            self.indicator.setText("● CPU" + ("" if gpu else " (no GPU found)"))
            self.indicator.setStyleSheet(WARN_STYLE)
        self.indicator.setToolTip("devices here: " + ", ".join(self.devices))


# ------------------------------------------------------------------------------ jobs
class JobPanel(QWidget):
    """A Run button that turns into Cancel while a worker runs, a progress bar and a status line.

    ``start(job, on_result)`` runs the generator function ``job()`` (which yields
    :class:`Progress` and returns a value) in a napari thread worker. Errors become a napari
    notification and the panel resets. ``worker`` is the running worker (None when idle).
    """

    started = Signal()
    finished = Signal()  # after success, error or cancel

    def __init__(self, run_text: str, on_run: Callable, parent=None, what: str = "job"):
        super().__init__(parent)
        self.run_text = run_text
        self._on_run = on_run
        self._what = what
        self.worker = None
        self.last_error: BaseException | None = None
        self.cancelled = False
        self.button = QPushButton(run_text)
        self.button.clicked.connect(self._clicked)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.button)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _clicked(self):
        if self.running:
            self.cancel()
        else:
            self._on_run()

    def start(self, job: Callable, on_result: Callable[[Any], None], label: str = "") -> Any:
        """Run ``job()`` (a Progress generator function) in a thread worker."""
        # superqt's create_worker is what napari.qt.threading wraps; napari's own version also
        # relays every error to the notification manager, which would show each error twice
        # (we show one clear notification in _on_error).
        from superqt.utils import create_worker

        if self.running:
            raise RuntimeError(f"a {self._what} is already running")
        self.last_error = None
        self.cancelled = False
        worker = create_worker(job, _start_thread=False, _connect={
            "yielded": self._on_progress,
            "returned": lambda value: self._on_returned(value, on_result),
            "errored": self._on_error,
            "aborted": self._on_aborted,
            "finished": self._on_finished,
        })
        self.worker = worker
        self.button.setText("Cancel")
        self.button.setToolTip(f"stop the running {self._what}")
        self.progress.setValue(0)
        self.progress.setFormat(f"{label or 'starting'}…")
        self.status.setText("")
        self.status.setStyleSheet("")
        # the same progress in napari's activity dock (bottom right), as napari's own jobs do
        from napari.utils import progress as napari_progress

        self._napari_bar = napari_progress(total=1000, desc=f"napari-refocus: {label or self._what}")
        self.started.emit()
        worker.start()
        return worker

    def cancel(self):
        """Ask the running worker to stop at its next progress step."""
        if self.worker is not None:
            self.cancelled = True
            self.button.setEnabled(False)
            self.button.setText("Cancelling…")
            self.worker.quit()

    def _on_progress(self, item):
        if isinstance(item, Progress):
            value = int(round(1000 * min(1.0, max(0.0, item.fraction))))
            self.progress.setValue(value)
            self.progress.setFormat(f"{item.stage or self._what}: {item.done}/{item.total}  (%p%)")
            bar = getattr(self, "_napari_bar", None)
            if bar is not None and value >= bar.n:
                bar.set_description(f"napari-refocus: {item.stage or self._what}")
                bar.update(value - bar.n)

    def _on_returned(self, value, on_result):
        try:
            on_result(value)
        except Exception as exc:  # noqa: BLE001 - a failed hand-over is shown like a failed job
            self._on_error(exc)
            return
        self.progress.setValue(1000)
        self.progress.setFormat("done")

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        self.last_error = exc
        self.status.setText(f"{type(exc).__name__}: {exc}")
        self.status.setStyleSheet(ERR_STYLE)
        self.progress.setFormat("failed")
        show_error(f"napari-refocus: {self._what} failed: {exc}")

    def _on_aborted(self):
        self.status.setText(f"{self._what} cancelled")
        self.status.setStyleSheet(WARN_STYLE)
        self.progress.setValue(0)
        self.progress.setFormat("cancelled")

    def _on_finished(self):
        bar = getattr(self, "_napari_bar", None)
        if bar is not None:
            bar.close()
            self._napari_bar = None
        self.worker = None
        self.button.setEnabled(True)
        self.button.setText(self.run_text)
        self.button.setToolTip("")
        self.finished.emit()


def wait_for(widget_or_panel, timeout_s: float = 120.0) -> None:
    """Spin the Qt event loop until the panel's worker is done (for scripts and the demo)."""
    import time

    from qtpy.QtWidgets import QApplication

    panel = getattr(widget_or_panel, "panel", widget_or_panel)
    t_end = time.monotonic() + timeout_s
    while panel.running and time.monotonic() < t_end:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    if panel.running:
        raise TimeoutError(f"job still running after {timeout_s} s")


# ------------------------------------------------------------------------------ refocus a layer
def _rescaled(gen, k: int, n: int, prefix: str):
    """Re-yield a job's Progress as part ``k`` of ``n``; returns the job's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(item, Progress):
            stage = f"{prefix}{item.stage}" if prefix else item.stage
            yield Progress(int(round(1000 * (k + item.fraction))), 1000 * n, stage)


def layer_planes(shape, rgb: bool):
    """Index tuples of the 2-D planes (last two spatial axes) of a layer's data.

    For RGB(A) data (..., y, x, c) the colour channels (not alpha) are the innermost loop.
    """
    if rgb:
        lead, nch = shape[:-3], min(shape[-1], 3)
        return [(*idx, slice(None), slice(None), c) for idx in np.ndindex(*lead) for c in range(nch)]
    return [tuple(idx) for idx in np.ndindex(*shape[:-2])]


def iter_refocus_layer(data, *, rgb: bool = False, method: str, device: str = "auto", **params):
    """Refocus every 2-D plane of a layer's data; yields Progress, returns ``(stack, result)``.

    ``data`` is read plane by plane (a dask/zarr array is fine) and never written. ``stack``
    has the data's leading axes and the restored plane shape (float32); for RGB(A) data each
    colour channel is restored on its own and an alpha channel is copied. ``result`` is the
    :class:`RefocusResult` of the first plane (for provenance).
    """
    from ..api import is_lazy, refocus
    from ..methods import iter_refocus

    shape = tuple(data.shape)
    if is_lazy(data) and len(shape) == 2 and not rgb:
        # a dask-backed 2-D layer stays lazy: the result is a dask array computed block by
        # block (with the halo each patch needs) as napari displays it
        res = refocus(data, method=method, device=device, **params)
        yield Progress(1, 1, "lazy")
        return res.image, res
    planes = layer_planes(shape, rgb)
    n = len(planes)
    out = None
    first = None
    for k, idx in enumerate(planes):
        plane = np.asarray(data[idx])
        where = ""
        if n > 1:
            where = f"plane {k + 1}/{n} " + (f"(channel {idx[-1]}) " if rgb else "")
        res = yield from _rescaled(iter_refocus(plane, method=method, device=device, **params), k, n, where)
        img = res.image
        if out is None:
            first = res
            if rgb:
                out = np.zeros((*shape[:-3], *img.shape, shape[-1]), dtype=np.float32)
                if shape[-1] == 4:  # alpha: copy (upscaled by repetition if needed)
                    up = img.shape[0] // shape[-3]
                    alpha = np.asarray(data[..., 3], dtype=np.float32)
                    out[..., 3] = np.repeat(np.repeat(alpha, up, axis=-2), up, axis=-1) if up > 1 else alpha
            else:
                out = np.zeros((*shape[:-2], *img.shape), dtype=np.float32)
        out[idx if not rgb else (*idx[:-3], slice(None), slice(None), idx[-1])] = img
    return out, first


def result_transform(scale, translate, upscale: int = 1):
    """(scale, translate) of a result whose last two axes are ``upscale`` x finer.

    Keeps the pixel areas aligned: input pixel k covers [t + (k-1/2)s, t + (k+1/2)s], and
    its ``upscale`` output pixels tile exactly that interval.
    """
    scale = np.asarray(scale, dtype=float).copy()
    translate = np.asarray(translate, dtype=float).copy()
    if upscale and upscale != 1:
        s = scale[-2:]
        new = s / upscale
        translate[-2:] = translate[-2:] - s / 2 + new / 2
        scale[-2:] = new
    return tuple(scale), tuple(translate)


def source_path(layer) -> str | None:
    src = getattr(layer, "source", None)
    path = getattr(src, "path", None)
    return str(path) if path else None


def add_result_layer(viewer, source, stack, result, extra: dict | None = None):
    """Add ``stack`` as a new image layer over ``source``; returns the new layer.

    Name ``"{source} [{method}]"``, the source's scale and translate (adjusted for an
    upscaling method), its colormap, and the provenance in ``metadata``.
    """
    rgb = bool(getattr(source, "rgb", False)) and stack.ndim == source.data.ndim
    nd = stack.ndim - (1 if rgb else 0)  # a single plane of a stack keeps the last two axes
    scale, translate = result_transform(source.scale[-nd:], source.translate[-nd:],
                                        getattr(result, "upscale", 1))
    meta = dict(result.provenance())
    meta["source_layer"] = source.name
    path = source_path(source)
    if path:
        meta["source_path"] = path
    meta.update(extra or {})
    kwargs = dict(
        name=f"{source.name} [{result.method}]",
        scale=scale,
        translate=translate,
        metadata=meta,
        rgb=rgb,
    )
    from ..api import is_lazy

    if not kwargs["rgb"]:
        kwargs["colormap"] = source.colormap.name
        if is_lazy(stack):  # computing the range would compute the whole lazy result
            kwargs["contrast_limits"] = tuple(float(c) for c in source.contrast_limits)
        else:
            lo, hi = float(np.min(stack)), float(np.max(stack))
            kwargs["contrast_limits"] = (lo, hi if hi > lo else lo + 1)
    else:
        kwargs["contrast_limits"] = tuple(float(c) for c in source.contrast_limits)
    for key in ("axis_labels", "units"):
        value = getattr(source, key, None)
        if value is not None:
            kwargs[key] = tuple(value)[-nd:]
    return viewer.add_image(stack, **kwargs)


def displayed_plane_index(viewer, layer) -> tuple:
    """Index into ``layer.data`` of the 2-D plane shown now (``()`` for a 2-D layer)."""
    lead = layer.data.ndim - (3 if layer.rgb else 2)
    if lead <= 0:
        return ()
    pos = np.asarray(layer.world_to_data(viewer.dims.point))
    idx = []
    for ax in range(lead):
        idx.append(int(np.clip(np.round(pos[ax]), 0, layer.data.shape[ax] - 1)))
    return tuple(idx)


def layer_plane(viewer, layer) -> tuple[np.ndarray, tuple]:
    """The 2-D plane of ``layer`` shown now (RGB: mean of the colour channels), and its index."""
    idx = displayed_plane_index(viewer, layer)
    plane = np.asarray(layer.data[idx]) if idx else np.asarray(layer.data)
    if layer.rgb:
        plane = plane[..., :3].astype(np.float32).mean(axis=-1)
    return plane, idx


# ------------------------------------------------------------------------------ plots
class PlotCanvas(QWidget):
    """A small matplotlib figure in the dock (a note instead if matplotlib is missing)."""

    def __init__(self, height_px: int = 180, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.figure = self.ax = self.canvas = None
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:
            lay.addWidget(QLabel("(install matplotlib to see plots here)"))
            return
        self.figure = Figure(figsize=(3.2, height_px / 100), dpi=100, facecolor="#262930")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height_px)
        self.ax = self.figure.add_subplot(111)
        self.style_axes()
        lay.addWidget(self.canvas)

    def style_axes(self):
        ax = self.ax
        ax.set_facecolor("#262930")
        for sp in ax.spines.values():
            sp.set_color("#aaaaaa")
        ax.tick_params(colors="#dddddd", labelsize=7)
        ax.xaxis.label.set_color("#dddddd")
        ax.yaxis.label.set_color("#dddddd")
        ax.title.set_color("#dddddd")

    def clear(self):
        if self.ax is not None:
            self.ax.clear()
            self.style_axes()

    def draw(self):
        if self.canvas is not None:
            self.figure.tight_layout(pad=0.4)
            self.canvas.draw_idle()
