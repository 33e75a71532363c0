"""``napari-refocus demo``: napari with the synthetic sample pair and the three widgets.

With ``screenshot=PATH`` it also runs the defocus map (when the DelpNet weights exist) and a
refocus on the sample, waits for them with a Qt event loop, renders the whole window to
``PATH`` and closes (works headless under ``xvfb-run``).
"""

from __future__ import annotations

from pathlib import Path

WINDOW_SIZE = (2200, 1150)
PLUGIN = "napari-refocus"


def _dock(viewer, name: str, widget_cls):
    """Dock a widget through npe2 (as a user would), or directly if the plugin is not registered."""
    try:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return widget
    except Exception:  # noqa: BLE001 - e.g. running from a checkout without the entry point
        widget = widget_cls(viewer)
        viewer.window.add_dock_widget(widget, name=name, area="right")
        return widget


def run_demo(screenshot: str | None = None, *, device: str = "auto", timeout_s: float = 600.0):
    """Open napari with the sample pair and the widgets; see the module docstring."""
    import napari

    from ..methods import get_method
    from . import CompareWidget, DefocusMapWidget, RefocusWidget
    from .jobs import wait_for
    from .sample_data import sample_pair

    viewer = napari.Viewer(title="napari-refocus demo", show=True)
    for data, kwargs, _kind in sample_pair():
        viewer.add_image(data, **kwargs)
    source = viewer.layers["defocused (synthetic)"]

    refocus_w = _dock(viewer, "Refocus", RefocusWidget)
    map_w = _dock(viewer, "Defocus map", DefocusMapWidget)
    compare_w = _dock(viewer, "Compare", CompareWidget)
    # three columns on the right-hand side, so every widget is visible at once
    try:
        from qtpy.QtCore import Qt

        win = viewer.window._qt_window
        docks = [w.native.parent() for w in (refocus_w, map_w, compare_w)]
        win.splitDockWidget(docks[0], docks[1], Qt.Orientation.Horizontal)
        win.splitDockWidget(docks[1], docks[2], Qt.Orientation.Horizontal)
        win.resizeDocks(docks, [360, 360, 380], Qt.Orientation.Horizontal)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass

    if screenshot is None:
        napari.run()
        return viewer

    viewer.window._qt_window.resize(*WINDOW_SIZE)
    refocus_w.image.value = source
    map_w.image.value = source
    for w in (refocus_w, map_w):  # the same picture every time; the user's saved preferences untouched
        w.prefs.persist = False
        w.prefs.reset()
        if device in w.prefs.device.choices:
            w.prefs.device.value = device
    if get_method("lbdvd").weights_present():
        map_w.run(source)
        wait_for(map_w.panel, timeout_s)
        if map_w.map_layer is not None:
            map_w.refocus_with_map()
            wait_for(map_w.refocus_panel, timeout_s)
    else:
        refocus_w.set_method("rl")
        refocus_w.set_values(level=4, never_worse=False)  # the gate needs DelpNet too
        refocus_w.run(source)
        wait_for(refocus_w.panel, timeout_s)
    results = [ly for ly in viewer.layers if "method" in ly.metadata]
    if results:
        compare_w.choosers.input.value = source
        compare_w.choosers.restored.value = results[-1]
        compare_w.choosers.gt.value = viewer.layers["ground truth"]
        compare_w.run()
        wait_for(compare_w.panel, timeout_s)
        h, w = source.data.shape
        y = float(source.translate[0] + source.scale[0] * h * 0.45)
        compare_w.set_profile_line((y, source.translate[1] + source.scale[1] * w * 0.05),
                                   (y, source.translate[1] + source.scale[1] * w * 0.95))
        _arrange_grid(viewer, source, map_w.map_layer, results[-1])
    _screenshot(viewer, screenshot)
    viewer.close()
    return None


def _arrange_grid(viewer, source, overlay, restored):
    """Side by side: input (+ defocus map) | restored (+ profile line) | ground truth."""
    gt = viewer.layers["ground truth"]
    line = viewer.layers["profile line"] if "profile line" in viewer.layers else None
    if overlay is not None and overlay in viewer.layers:
        order = [source, overlay, restored, line, gt]
        stride = 2
    else:
        order = [source, restored, gt]
        stride = 1
        if line is not None:
            line.visible = False
    order = [ly for ly in order if ly is not None]
    for ly in order:
        ly.visible = True
    for k, ly in enumerate(order):
        viewer.layers.move(viewer.layers.index(ly), k)
    viewer.grid.stride = stride
    viewer.grid.shape = (2, 2)
    viewer.grid.spacing = 8
    viewer.grid.enabled = True
    viewer.layers.selection.active = restored


def _screenshot(viewer, path):
    from qtpy.QtWidgets import QApplication

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    print(f"screenshot written to {path}")
