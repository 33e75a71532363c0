"""Widgets and the viewer over time: layer choosers follow the layer list, a closed widget
leaves nothing connected, and layer data is read in the worker, not on the GUI thread."""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from widget_support import HAVE_DELPNET, add_source, dock, references, spy, wait_idle, widget_class  # noqa: E402
from widget_support import crops, fake_delpnet, viewer  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.gui


def _emitters(viewer, layer):
    ev = viewer.layers.events
    return {"layers.inserted": ev.inserted, "layers.removed": ev.removed, "layers.reordered": ev.reordered,
            "layers.renamed": ev.renamed, "dims.current_step": viewer.dims.events.current_step,
            "layer.data": layer.events.data, "layer.name": layer.events.name}


def test_choosers_follow_the_layer_list(viewer):
    w = dock(viewer, "compare")
    r = dock(viewer, "refocus")
    assert w.layers() == (None, None, None) and r.image.value is None
    inp = viewer.add_image(np.zeros((90, 90)), name="defocused")
    gt = viewer.add_image(np.zeros((90, 90)), name="ground truth")
    assert w.choosers.gt.value is gt and w.choosers.input.value is inp
    assert r.image.value is inp  # a chosen layer stays chosen when others come
    inp.name = "defocused input"  # a renamed layer stays chosen
    assert r.image.value is inp and r.image.current_choice == "defocused input"
    res = viewer.add_image(np.zeros((90, 90)), name="defocused [rl]",
                           metadata={"method": "rl", "source_layer": "defocused input"})
    assert w.choosers.restored.value is res  # a fresh result is what to compare
    assert r.image.value is inp  # ... but not what to refocus next
    viewer.layers.remove(inp)
    assert inp not in r.image.choices and r.image.value is gt  # the best one left
    assert w.choosers.input.value is not inp
    viewer.layers.clear()
    assert r.image.value is None and not r.panel.button.enabled


@pytest.mark.parametrize("kind", ["refocus", "defocus_map", "compare"])
def test_closed_widget_leaves_nothing_connected(viewer, qtbot, crops, kind):
    layer = add_source(viewer, crops[0][:96, :96])
    emitters = _emitters(viewer, layer)
    before = {k: len(e.callbacks) for k, e in emitters.items()}
    w = dock(viewer, kind)
    if kind == "compare":  # the profile line connects to a layer's events
        w.set_profile_line((12.0, 22.0), (40.0, 60.0))
        emitters["line.data"] = viewer.layers["profile line"].events.data
        before["line.data"] = 0
    assert references(emitters["layers.inserted"], w)  # napari connected reset_choices
    viewer.window.remove_dock_widget(w.native)  # what the dock's close button does
    qtbot.wait(10)
    assert w.closed
    for k, e in emitters.items():
        assert not references(e, w), k
        if k != "line.data":
            assert len(e.callbacks) == before[k], k
    # the viewer goes on without errors
    extra = viewer.add_image(np.ones((40, 40)), name="after")
    extra.name = "renamed after"
    viewer.layers.move(0, 1)
    viewer.dims.ndisplay = 3
    viewer.dims.ndisplay = 2
    viewer.layers.remove(extra)
    layer.data = layer.data + 1


def test_close_without_dock_and_no_leak(viewer, qtbot):
    import weakref

    w = widget_class("refocus")(viewer)
    viewer.window.add_dock_widget(w, name="Refocus")
    ref = weakref.ref(w)
    w.close()
    assert w.closed and not references(viewer.layers.events.inserted, w)
    viewer.window.remove_dock_widget(w.native)
    del w
    gc.collect()
    qtbot.wait(10)
    viewer.add_image(np.zeros((20, 20)))
    assert ref() is None or ref().closed


def test_layer_data_read_in_the_worker(viewer, qtbot, crops, fake_delpnet):
    """Starting a job reads no pixels on the GUI thread; the worker reads them."""
    stack = spy(np.stack([crops[0][:90, :96]] * 2))
    layer = add_source(viewer, stack, scale=(1.0, 0.65, 0.65), translate=(0.0, 10.0, 20.0))
    gt = add_source(viewer, spy(crops[1][:90, :96]), name="ground truth")
    res = add_source(viewer, spy(crops[1][:90, :96]), name="src [rl]",
                     metadata={"method": "rl", "source_layer": "src"})
    w_refocus = dock(viewer, "refocus")
    w_refocus.set_method("rl")
    w_refocus.set_values(iterations=2)
    w_map = dock(viewer, "defocus_map")
    w_compare = dock(viewer, "compare")
    jobs = [(w_refocus, lambda: w_refocus.run(layer), [stack]), (w_map, lambda: w_map.run(layer), [stack])]
    if not HAVE_DELPNET and fake_delpnet is None:
        jobs.pop()
    jobs.append((w_compare, w_compare.run, [stack, gt.data, res.data]))
    for widget, start, arrays in jobs:
        for a in arrays:
            a.reads.clear()
            a.reads["armed"] = True
        assert start() is not None
        on_gui = [main for a in arrays for main in a.reads.get("threads", []) if main]
        wait_idle(qtbot, widget)
        assert widget.panel.last_error is None, widget.panel.last_error
        in_worker = [main for a in arrays for main in a.reads.get("threads", []) if not main]
        for a in arrays:
            a.reads["armed"] = False
        name = type(widget).__name__
        assert on_gui == [], name  # nothing read on the GUI thread while the job was started
        assert len(in_worker) >= len(arrays), name  # every source read by the worker
