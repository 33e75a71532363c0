"""The Refocus widget in a real (Xvfb) napari viewer: generated form, preferences, runs.

Run with plain ``pytest tests/test_widgets.py`` (pytest-xvfb starts Xvfb). Shared fixtures
and helpers: ``widget_support.py``; the defocus-map and compare widgets:
``test_widgets_map_compare.py``; choosers, closing and worker-side reads:
``test_widget_lifecycle.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_refocus.methods import get_method, list_methods  # noqa: E402
from widget_support import H, PIXEL_UM, SCALE, TIMEOUT_MS, TRANSLATE, W, add_source, dock, run_rl, wait_idle  # noqa: E402
from widget_support import crops, errors, viewer  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.gui


# ------------------------------------------------------------------------------ runs
def test_refocus_rl_layer_and_event_loop(viewer, qtbot, crops):
    from qtpy.QtCore import QElapsedTimer, QTimer

    src = crops[0]
    before = src.copy()
    layer = add_source(viewer, src)
    w = dock(viewer, "refocus")
    assert [m.name for m in w.methods][:2] == ["lbdvd", "rl"]
    assert w.prefs.device.choices[0] == "auto" and "cpu" in w.devices
    assert "CPU" in w.device_note.value or "GPU" in w.device_note.value
    w.set_method("rl")
    w.set_values(iterations=30)
    assert w.optics.pixel_um.value == pytest.approx(PIXEL_UM)  # read from the layer's scale

    clock, gaps = QElapsedTimer(), []
    clock.start()
    last = [clock.elapsed()]

    def tick():
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    worker = w.run()
    assert worker is not None and w.worker is worker
    assert w.panel.button.text == "Cancel"
    t0 = time.perf_counter()
    wait_idle(qtbot, w)
    timer.stop()
    print(f"\nrl x30 on {src.shape}: {time.perf_counter() - t0:.2f} s, {len(gaps)} ticks, "
          f"longest event-loop gap {max(gaps)} ms")
    assert max(gaps) < 1500
    assert w.panel.button.text == "Refocus"

    out = viewer.layers["src [rl]"]
    assert out.data.shape == src.shape and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    md = out.metadata
    assert md["method"] == "rl" and md["source_layer"] == "src"
    assert md["parameters"]["iterations"] == 30
    assert md["parameters"]["optics"]["pixel_um"] == pytest.approx(PIXEL_UM)
    assert md["device"] == "cpu" and "napari_refocus_version" in md
    np.testing.assert_array_equal(layer.data, before)
    assert w.last_layer is out


def test_lbdvd_greyed_without_weights(viewer, qtbot):
    w = dock(viewer, "refocus")
    item = w.method.native.model().item(0)
    assert w.method.choices[0] == "lbdvd"
    if get_method("lbdvd").weights_present():
        assert item.isEnabled()
    else:
        assert not item.isEnabled()
        assert "weights missing" in w.method.native.itemText(0)
        assert w.method.value == "rl"  # the first usable method is chosen
        w.set_method("lbdvd")
        assert "delpnet.safetensors" in w.method_info.value
        assert not w.panel.button.enabled
        w.set_method("rl")
    assert not w.panel.button.enabled  # no image layer yet
    viewer.add_image(np.ones((90, 90), np.float32))
    assert w.image.value is viewer.layers[-1]  # napari refreshed the docked widget's chooser
    assert w.panel.button.enabled


def test_cancel_leaves_viewer_consistent(viewer, qtbot, crops):
    stack = np.stack([crops[0][:96, :128]] * 6)
    before = stack.copy()
    layer = add_source(viewer, stack, scale=(1.0, *SCALE), translate=(0.0, *TRANSLATE))
    w = dock(viewer, "refocus")
    w.set_method("rl")
    w.set_values(iterations=60)
    seen = []
    w.run()
    w.worker.yielded.connect(lambda p: seen.append(p))
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=TIMEOUT_MS)
    w.cancel()
    wait_idle(qtbot, w)
    assert w.panel.cancelled
    assert len(viewer.layers) == 1
    assert w.panel.button.text == "Refocus" and w.panel.button.enabled
    assert "cancel" in w.panel.progress.native.format()
    np.testing.assert_array_equal(layer.data, before)


def test_error_notifies_and_widget_recovers(viewer, qtbot, errors, crops):
    bad = crops[0][:64, :64].astype(np.float32)
    bad[3, 4] = np.nan
    bad_layer = add_source(viewer, bad, name="with nan")
    w = dock(viewer, "refocus")
    w.set_method("rl")
    w.set_values(iterations=3)
    w.run(bad_layer)
    wait_idle(qtbot, w)
    assert errors and "NaN" in errors[0]
    assert isinstance(w.panel.last_error, ValueError)
    assert w.panel.button.text == "Refocus" and w.panel.button.enabled
    assert [ly.name for ly in viewer.layers] == ["with nan"]
    # works again afterwards
    good = add_source(viewer, crops[0][:64, :64], name="good")
    w.run(good)
    wait_idle(qtbot, w)
    assert "good [rl]" in viewer.layers and len(errors) == 1
    # a value the schema refuses is reported before any work starts
    w.set_values(level=50)
    assert w.run(good) is None and w.worker is None
    assert len(errors) == 2 and "level" in errors[1]


def test_nd_stack_plane_by_plane(viewer, qtbot, crops):
    from napari_refocus import refocus

    planes = [crops[0][:84, :100], crops[0][40:124, 50:150]]
    stack = np.stack(planes)[None]  # (T=1, Z=2, y, x)
    before = stack.copy()
    layer = add_source(viewer, stack, scale=(1.0, 2.0, *SCALE), translate=(0.0, 5.0, *TRANSLATE))
    w = dock(viewer, "refocus")
    w.set_method("rl")
    w.set_values(iterations=4, level=3)
    assert "2 planes" in w.layer_info.value
    prog = []
    shown = w.panel._on_progress  # recorded from the worker's first yield (connecting after run() races it)
    w.panel._on_progress = lambda p: (prog.append(p), shown(p))
    w.run()
    wait_idle(qtbot, w)
    out = viewer.layers["src [rl]"]
    assert out.data.shape == stack.shape
    np.testing.assert_allclose(out.scale, (1.0, 2.0, *SCALE))
    np.testing.assert_allclose(out.translate, (0.0, 5.0, *TRANSLATE))
    assert out.metadata["planes"] == 2
    for k in range(2):  # each plane equals the 2-D method on that plane
        ref = refocus(planes[k], method="rl", level=3, iterations=4, pixel_um=PIXEL_UM).image
        np.testing.assert_allclose(out.data[0, k], ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(layer.data, before)
    assert any("plane 2/2" in p.stage for p in prog)


def test_rgb_channel_by_channel(viewer, qtbot, crops):
    rgb = np.stack([crops[0][:64, :80] // 16] * 3, axis=-1).astype(np.uint8)
    layer = viewer.add_image(rgb, rgb=True, name="rgb")
    run_rl(viewer, qtbot, iterations=2)
    out = viewer.layers["rgb [rl]"]
    assert out.rgb and out.data.shape == rgb.shape
    np.testing.assert_allclose(out.data[..., 0], out.data[..., 2], rtol=1e-5)
    assert layer.data.dtype == np.uint8


def test_dask_layer_gives_lazy_result_for_rl(viewer, qtbot, crops):
    """A dask-backed layer stays lazy for any method (here rl), aligned with its input."""
    da = pytest.importorskip("dask.array")
    from napari_refocus import refocus

    src = crops[0]
    add_source(viewer, da.from_array(src, chunks=(84, 126)), name="lazy")
    run_rl(viewer, qtbot, iterations=5)
    out = viewer.layers["lazy [rl]"]
    assert type(out.data).__module__.startswith("dask")
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    params = out.metadata["parameters"]
    eager = refocus(src, method="rl", device="cpu", level=params["level"], iterations=params["iterations"],
                    optics=params["optics"]).image
    np.testing.assert_allclose(np.asarray(out.data), eager, rtol=1e-5, atol=1e-3)


def test_multiscale_layer_is_restored_at_full_resolution(viewer, qtbot, errors, crops):
    """A pyramid (an OME-Zarr or slide opened by a reader plugin) is restored, mapped and
    compared at its full-resolution level, which its scale and translate refer to: each
    widget once failed with "list indices must be integers or slices, not tuple"."""
    from napari_refocus import metrics, refocus

    src, gt = crops[0], crops[1]
    layer = add_source(viewer, [src, src[::2, ::2], src[::4, ::4]], multiscale=True, name="pyramid")
    add_source(viewer, gt, name="ground truth")
    w = dock(viewer, "refocus")
    w.image.value = layer
    assert w.layer_info.value.startswith(f"{src.shape} {src.dtype}, 2-D, the full resolution of 3 levels")
    w.set_method("rl")
    w.set_values(iterations=3)
    w.run(layer)
    wait_idle(qtbot, w)
    out = viewer.layers["pyramid [rl]"]
    params = out.metadata["parameters"]
    eager = refocus(src, method="rl", device="cpu", level=params["level"], iterations=3,
                    optics=params["optics"]).image
    np.testing.assert_allclose(np.asarray(out.data), eager, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    m = dock(viewer, "defocus_map")
    m.run(layer)
    wait_idle(qtbot, m)
    c = dock(viewer, "compare")
    c.choosers["input"].value = layer
    c.run()
    wait_idle(qtbot, c)
    assert not errors and "pyramid defocus map" in viewer.layers
    assert c.report["input"]["psnr"] == pytest.approx(metrics(src, gt)["psnr"])


def test_upscaled_result_transform():
    from napari_refocus.ui.layers import result_transform

    scale, translate = result_transform((1.0, 0.65, 0.65), (3.0, 10.0, 20.0), upscale=2)
    np.testing.assert_allclose(scale, (1.0, 0.325, 0.325))
    # output pixel 0 and 1 straddle input pixel 0's centre (10, 20): centres 10 -+ 0.1625
    np.testing.assert_allclose(translate, (3.0, 10 - 0.1625, 20 - 0.1625))
    assert result_transform((0.65, 0.65), (10, 20), 1) == ((0.65, 0.65), (10.0, 20.0))


@pytest.mark.parametrize("upscale", [1, 2])
def test_result_of_a_rotated_sheared_layer_lies_over_it(viewer, upscale):
    """A source placed with rotate, shear and an affine: its result (same size, or x2) covers the
    same world area pixel edge for pixel edge (the result layer had its scale and translate only)."""
    from types import SimpleNamespace

    from napari_refocus.ui.layers import add_result_layer

    src = viewer.add_image(np.zeros((20, 30), np.float32), scale=(0.5, 0.4), translate=(3.0, -2.0), rotate=25,
                           shear=[0.15], affine=np.array([[1.1, 0.0, 5.0], [0.2, 0.9, 1.0], [0, 0, 1]]),
                           name="placed")
    result = SimpleNamespace(method="x", upscale=upscale, provenance=lambda: {})
    out = add_result_layer(viewer, src, np.zeros((20 * upscale, 30 * upscale), np.float32), result)
    for corner in ((0, 0), (1, 0), (0, 1), (1, 1)):
        edge_in = [c * n - 0.5 for c, n in zip(corner, (20, 30))]
        edge_out = [c * n * upscale - 0.5 for c, n in zip(corner, (20, 30))]
        np.testing.assert_allclose(out.data_to_world(edge_out), src.data_to_world(edge_in), atol=1e-9)


# ------------------------------------------------------------------------------ the form
def test_form_is_generated_from_each_schema(viewer):
    from napari_refocus.core.optics import Optics
    from napari_refocus.ui.forms import OPTICS_HIDDEN, OPTICS_OPTIONAL, PREFERENCES

    w = dock(viewer, "refocus")
    optics_names = [f.name for f in dataclasses.fields(Optics) if f.name not in OPTICS_HIDDEN
                    and (isinstance(f.default, (int, float, str)) or f.name in OPTICS_OPTIONAL)]
    assert [x.name for x in w.optics] == optics_names
    for m in list_methods():
        w.set_method(m.name)
        specs = {s["name"]: s for s in m.describe()}
        shown = [n for n in m.form_fields if n not in PREFERENCES]
        assert [x.name for x in w.form] == shown, m.name
        for field in w.form:  # defaults, limits and help from the schema
            spec = specs[field.name]
            assert field.value == spec["default"] and field.tooltip == spec["help"]
            if spec["min"] is not None:
                assert field.min == spec["min"]
            if spec["max"] is not None:
                assert field.max == spec["max"]
        params = w.params()
        assert set(params) <= set(m.parameter_names), m.name  # only what the schema accepts
        m.parse(**params)
        assert ("iterations" in params) == m.accepts("iterations")
        assert ("pixel_um" in params) == m.accepts("optics")
        assert w.show_optics.native.isHidden() == (not m.accepts("optics"))
        assert w.prefs.iterations.native.isHidden() == (not m.accepts("iterations"))


def test_tta_option_follows_method(viewer):
    w = dock(viewer, "refocus")
    w.set_method("lbdvd")
    assert w.params()["tta"] is False
    w.set_values(tta=True)
    assert w.params()["tta"] is True
    w.set_method("rl")
    assert "tta" not in w.params()
    with pytest.raises(ValueError, match="no field 'tta'"):
        w.set_values(tta=True)
    w.set_method("lbdvd")
    assert w.params()["tta"] is True  # each method's form keeps its values


def test_no_test_saves_into_the_users_own_preferences(saved_preferences):
    """tests/conftest.py's autouse fixture points magicgui's cache (the widgets' persisted
    preferences) at each test's own folder, for every test file (test_cancel.py once left
    iterations=300 in the user's own)."""
    import magicgui._util

    assert magicgui._util.user_cache_dir() == saved_preferences


def test_preferences_persist_and_reset(viewer, saved_preferences):
    w = dock(viewer, "refocus")
    w.prefs.device.value = "cpu"
    w.set_method("rl")
    w.set_values(iterations=7, level=2)
    w.optics.na.value = 0.4
    saved = list(saved_preferences.rglob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == {"device": "cpu", "iterations": 7}

    again = dock(viewer, "refocus")  # preferences come back; per-run values do not
    again.set_method("rl")
    assert again.prefs.device.value == "cpu" and again.values()["iterations"] == 7
    assert again.values()["level"] == get_method("rl").defaults["level"]
    again.set_values(level=2)
    again.optics.na.value = 0.4
    again.reset_defaults()
    assert again.prefs.device.value == "auto" and again.values()["iterations"] == 15
    assert again.values()["level"] == get_method("rl").defaults["level"]
    assert again.optics.na.value == pytest.approx(0.5)
    assert json.loads(saved[0].read_text()) == {"device": "auto", "iterations": 15}
    # a device this machine does not have, or a damaged file: the defaults, no error
    saved[0].write_text(json.dumps({"device": "cuda:7", "iterations": 9}))
    other = dock(viewer, "refocus")
    assert other.prefs.device.value == "auto" and other.prefs.iterations.value == 9
    saved[0].write_text("{not json")
    assert dock(viewer, "refocus").prefs.iterations.value == 15


# ------------------------------------------------------------------------------ learned methods
LEARNED = ["comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet"]


@pytest.mark.parametrize("name", LEARNED)
def test_refocus_widget_runs_learned_method(viewer, qtbot, crops, name):
    from napari_refocus.core.metrics import compare

    m = get_method(name)
    if not m.weights_present():
        pytest.skip(f"weights/{name}.safetensors not shipped")
    src, gt, _ = crops
    before = src.copy()
    layer = add_source(viewer, src)
    w = dock(viewer, "refocus")
    assert name in [x.name for x in w.methods]
    w.set_method(name)
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    out = viewer.layers[f"src [{name}]"]
    r = m.upscale
    assert out.data.shape == (H * r, W * r)
    # the result lies exactly over its input: r x r output pixels per input pixel
    np.testing.assert_allclose(np.asarray(out.scale) * r, SCALE)
    np.testing.assert_allclose(np.asarray(out.translate) + np.asarray(out.scale) * (r - 1) / 2, TRANSLATE)
    md = out.metadata
    assert md["method"] == name and md["source_layer"] == "src"
    # provenance holds the method's own parameters only: no RL iterations; optics if its schema has them
    assert set(md["parameters"]) == {f.name for f in dataclasses.fields(m.schema)}
    assert "iterations" not in md["parameters"] and ("optics" in md["parameters"]) == m.accepts("optics")
    restored = np.asarray(out.data, np.float32)
    if r > 1:
        restored = restored.reshape(H, r, W, r).mean(axis=(1, 3))
    assert compare(gt, restored, src)["gain"]["psnr"] > 0
    np.testing.assert_array_equal(layer.data, before)
