"""Fixtures and helpers shared by the widget tests (a real napari viewer under Xvfb).

Images are small crops of the shipped sample so every widget test file stays well under a
minute on 2 CPU cores. Widgets are docked in the viewer the way napari docks a plugin's
widget, so napari itself calls their ``reset_choices`` when the layer list changes.

Until ``weights/delpnet.safetensors`` exists, ``fake_delpnet`` replaces
``napari_refocus.methods.defocus.iter_defocus_map`` by the oracle level map of the synthetic
sample (tests only), so the widget logic is still tested.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_refocus.core.progress import Progress
from napari_refocus.core.tiling import patch_grid
from napari_refocus.io.samples import PIXEL_UM, oracle_level_map, synthetic_pair
from napari_refocus.methods import get_method

H, W = 168, 252
SCALE = (PIXEL_UM, PIXEL_UM)
TRANSLATE = (10.0, 20.0)
TIMEOUT_MS = 60_000
HAVE_DELPNET = get_method("lbdvd").weights_present()


@pytest.fixture(scope="module")
def crops():
    """(defocused, ground truth, level field) crops of the synthetic pair, 168x252."""
    b, g, f = synthetic_pair()
    # columns 300..552: levels ~3.5..6.5, clearly out of focus
    sl = (slice(100, 100 + H), slice(300, 300 + W))
    return np.array(b[sl]), np.array(g[sl]), np.array(f[sl])


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def errors(monkeypatch):
    """Record napari error notifications instead of showing them."""
    import napari.utils.notifications as notes

    got = []
    monkeypatch.setattr(notes, "show_error", lambda msg: got.append(str(msg)))
    return got


def widget_class(kind: str):
    """``"refocus"``, ``"defocus_map"`` or ``"compare"`` -> the dock widget's class."""
    from napari_refocus.ui import CompareWidget, DefocusMapWidget, RefocusWidget

    return {"refocus": RefocusWidget, "defocus_map": DefocusMapWidget, "compare": CompareWidget}[kind]


def dock(viewer, kind: str):
    """Make a widget of ``kind`` for ``viewer`` and dock it as napari docks a plugin's widget."""
    widget = widget_class(kind)(viewer)
    viewer.window.add_dock_widget(widget, name=kind)
    return widget


def wait_idle(qtbot, widget, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def add_source(viewer, data, **kw):
    kw.setdefault("scale", SCALE)
    kw.setdefault("translate", TRANSLATE)
    kw.setdefault("name", "src")
    return viewer.add_image(data, **kw)


def run_rl(viewer, qtbot, iterations: int):
    """Run the Refocus widget's Richardson-Lucy on the chosen layer and wait for it."""
    w = dock(viewer, "refocus")
    w.set_method("rl")
    w.set_values(iterations=iterations)
    w.run()
    wait_idle(qtbot, w)
    return w


def references(emitter, widget) -> list:
    """The callbacks of a napari event emitter that point at ``widget`` (bound or weak)."""
    out = []
    for cb in emitter.callbacks:
        owner = cb[0]() if isinstance(cb, tuple) else getattr(cb, "__self__", None)
        if owner is widget:
            out.append(cb)
    return out


class SpyArray(np.ndarray):
    """An ndarray that records which thread indexes it while ``armed``."""

    def __array_finalize__(self, obj):
        self.reads = getattr(obj, "reads", None)

    def __getitem__(self, idx):
        if self.reads is not None and self.reads.get("armed"):
            self.reads.setdefault("threads", []).append(threading.current_thread() is threading.main_thread())
        return super().__getitem__(idx)


def spy(data: np.ndarray) -> SpyArray:
    arr = np.asarray(data).view(SpyArray)
    arr.reads = {}
    return arr


def make_fake_iter_defocus_map(level_field, calls):
    """A FAKE ``iter_defocus_map`` (tests only): the oracle level map of ``level_field``."""
    from napari_refocus.methods.defocus import DefocusMap

    def fake_iter_defocus_map(image2d, *, weights=None, device="auto", stride=42, batch_size=None, tta=False,
                              **_optics):
        calls.append(np.shape(image2d))
        grid = patch_grid(np.shape(image2d), stride=stride)
        levels = oracle_level_map(level_field[: image2d.shape[0], : image2d.shape[1]], grid)
        levels[0, 0] = 11  # one background patch, to check it is drawn transparent
        rows = grid.shape[0]
        for i in range(rows):
            time.sleep(0.01)
            yield Progress(i + 1, rows, "defocus map (FAKE)")
        probs = np.zeros((*grid.shape, 12), np.float32)
        np.put_along_axis(probs, levels[..., None], 1.0, axis=-1)
        certainty = np.linspace(0.3, 1.0, levels.size).reshape(levels.shape)
        return DefocusMap(levels=levels, probabilities=probs, certainty=certainty, grid=grid)

    return fake_iter_defocus_map


@pytest.fixture
def fake_delpnet(monkeypatch, crops):
    """Replace DelpNet (map + weights check) by the oracle map when the weights are missing."""
    if HAVE_DELPNET:
        yield None
        return
    import napari_refocus.methods as methods
    from napari_refocus.methods import defocus

    calls = []
    monkeypatch.setattr(defocus, "iter_defocus_map", make_fake_iter_defocus_map(crops[2], calls))
    monkeypatch.setattr(methods.Method, "weights_present", lambda self: True)
    yield calls
