"""napari widgets of napari-refocus, in a real (Xvfb) napari viewer.

Run with plain ``pytest tests/test_widgets.py`` (pytest-xvfb starts Xvfb). Images are small
crops of the shipped sample so the whole file stays well under two minutes on 2 CPU cores.

Until ``weights/delpnet.safetensors`` exists, the DelpNet-dependent tests replace
``napari_refocus.methods.defocus.iter_defocus_map`` by ``fake_iter_defocus_map`` (the oracle level
map of the synthetic sample; in this file only), so the widget logic is still tested. When
the weights exist, ``test_defocus_map_real_weights`` also runs the real network once.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_refocus.core.progress import Progress  # noqa: E402
from napari_refocus.methods import get_method  # noqa: E402
from napari_refocus.io.samples import PIXEL_UM, oracle_level_map, synthetic_pair  # noqa: E402
from napari_refocus.core.tiling import patch_grid  # noqa: E402

pytestmark = pytest.mark.gui

H, W = 168, 252
SCALE = (PIXEL_UM, PIXEL_UM)
TRANSLATE = (10.0, 20.0)
TIMEOUT_MS = 60_000
HAVE_DELPNET = get_method("lbdvd").weights_present()


# ------------------------------------------------------------------------------ fixtures
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


def wait_idle(qtbot, widget, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _defocus_map_class():
    try:
        return importlib.import_module("napari_refocus.methods.defocus").DefocusMap
    except (ImportError, AttributeError):
        @dataclass(frozen=True)
        class FakeDefocusMap:  # same fields as the real DefocusMap
            levels: np.ndarray
            probabilities: np.ndarray
            certainty: np.ndarray
            grid: object

        return FakeDefocusMap


def make_fake_iter_defocus_map(level_field, calls):
    """A FAKE ``iter_defocus_map`` (tests only): the oracle level map of ``level_field``."""
    DefocusMap = _defocus_map_class()

    def fake_iter_defocus_map(image2d, *, weights=None, device="auto", stride=42, batch_size=None,
                              progress=None, tta=False):
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
    calls = []
    if HAVE_DELPNET:
        yield None
        return
    fake = make_fake_iter_defocus_map(crops[2], calls)
    try:
        mod = importlib.import_module("napari_refocus.methods.defocus")
        monkeypatch.setattr(mod, "iter_defocus_map", fake)
    except ImportError:
        mod = types.ModuleType("napari_refocus.methods.defocus")
        mod.iter_defocus_map = fake
        monkeypatch.setitem(sys.modules, "napari_refocus.methods.defocus", mod)
    import napari_refocus.methods as methods

    monkeypatch.setattr(methods.Method, "weights_present", lambda self: True)
    monkeypatch.setattr(methods, "_weights_hashes", lambda names: {n: "FAKE" for n in names})
    yield calls


@pytest.fixture
def errors(monkeypatch):
    """Record napari error notifications instead of showing them."""
    import napari.utils.notifications as notes

    got = []
    monkeypatch.setattr(notes, "show_error", lambda msg: got.append(str(msg)))
    return got


def run_rl(viewer, qtbot, iterations: int):
    """Run the Refocus widget's Richardson-Lucy on the selected layer and wait for it."""
    from napari_refocus.ui.refocus import RefocusWidget

    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    w.set_method("rl")
    w.iterations.setValue(iterations)
    w.run()
    wait_idle(qtbot, w)
    return w


def add_source(viewer, data, **kw):
    kw.setdefault("scale", SCALE)
    kw.setdefault("translate", TRANSLATE)
    kw.setdefault("name", "src")
    return viewer.add_image(data, **kw)


# ------------------------------------------------------------------------------ refocus
def test_refocus_rl_layer_and_event_loop(viewer, qtbot, crops):
    from qtpy.QtCore import QElapsedTimer, QTimer

    from napari_refocus.ui.refocus import RefocusWidget

    src = crops[0]
    before = src.copy()
    layer = add_source(viewer, src)
    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    assert [m.name for m in w.methods][:2] == ["lbdvd", "rl"]
    assert w.device.combo.itemText(0) == "auto" and "cpu" in w.device.devices
    assert "CPU" in w.device.indicator.text() or "GPU" in w.device.indicator.text()
    w.set_method("rl")
    w.iterations.setValue(30)
    assert w.optics.values()["pixel_um"] == pytest.approx(PIXEL_UM)

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
    assert w.panel.button.text() == "Cancel"
    t0 = time.perf_counter()
    wait_idle(qtbot, w)
    timer.stop()
    print(f"\nrl x30 on {src.shape}: {time.perf_counter() - t0:.2f} s, {len(gaps)} ticks, "
          f"longest event-loop gap {max(gaps)} ms")
    assert max(gaps) < 1500
    assert w.panel.button.text() == "Refocus"

    out = viewer.layers["src [rl]"]
    assert out.data.shape == src.shape and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    md = out.metadata
    assert md["method"] == "rl" and md["source_layer"] == "src"
    assert md["parameters"]["iterations"] == 30 and md["parameters"]["pixel_um"] == pytest.approx(PIXEL_UM)
    assert md["device"] == "cpu" and "napari_refocus_version" in md
    np.testing.assert_array_equal(layer.data, before)
    assert w.last_layer is out


def test_lbdvd_greyed_without_weights(viewer, qtbot):
    from napari_refocus.ui.refocus import RefocusWidget

    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    item = w.method_combo.model().item(0)
    assert w.method_combo.itemData(0) == "lbdvd"
    if HAVE_DELPNET:
        assert item.isEnabled()
    else:
        assert not item.isEnabled()
        assert "weights missing" in w.method_combo.itemText(0)
        assert w.method == "rl"  # the first usable method is chosen
        w.set_method("lbdvd")
        assert "delpnet.safetensors" in w.method_info.text()
        assert not w.panel.button.isEnabled()
        w.set_method("rl")
    assert not w.panel.button.isEnabled()  # no image layer yet
    viewer.add_image(np.ones((90, 90), np.float32))
    assert w.panel.button.isEnabled()


def test_cancel_leaves_viewer_consistent(viewer, qtbot, crops):
    from napari_refocus.ui.refocus import RefocusWidget

    stack = np.stack([crops[0][:96, :128]] * 6)
    before = stack.copy()
    layer = add_source(viewer, stack, scale=(1.0, *SCALE), translate=(0.0, *TRANSLATE))
    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    w.set_method("rl")
    w.iterations.setValue(60)
    seen = []
    w.run()
    w.worker.yielded.connect(lambda p: seen.append(p))
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=TIMEOUT_MS)
    w.cancel()
    wait_idle(qtbot, w)
    assert w.panel.cancelled
    assert len(viewer.layers) == 1
    assert w.panel.button.text() == "Refocus" and w.panel.button.isEnabled()
    assert "cancel" in w.panel.progress.format()
    np.testing.assert_array_equal(layer.data, before)


def test_error_notifies_and_widget_recovers(viewer, qtbot, errors, crops):
    from napari_refocus.ui.refocus import RefocusWidget

    bad = crops[0][:64, :64].astype(np.float32)
    bad[3, 4] = np.nan
    bad_layer = add_source(viewer, bad, name="with nan")
    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    w.set_method("rl")
    w.iterations.setValue(3)
    w.run(bad_layer)
    wait_idle(qtbot, w)
    assert errors and "NaN" in errors[0]
    assert isinstance(w.panel.last_error, ValueError)
    assert w.panel.button.text() == "Refocus" and w.panel.button.isEnabled()
    assert [ly.name for ly in viewer.layers] == ["with nan"]
    # works again afterwards
    good = add_source(viewer, crops[0][:64, :64], name="good")
    w.run(good)
    wait_idle(qtbot, w)
    assert "good [rl]" in viewer.layers and len(errors) == 1


def test_nd_stack_plane_by_plane(viewer, qtbot, crops):
    from napari_refocus.ui.refocus import RefocusWidget
    from napari_refocus.methods import refocus

    planes = [crops[0][:84, :100], crops[0][40:124, 50:150]]
    stack = np.stack(planes)[None]  # (T=1, Z=2, y, x)
    before = stack.copy()
    layer = add_source(viewer, stack, scale=(1.0, 2.0, *SCALE), translate=(0.0, 5.0, *TRANSLATE))
    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    w.set_method("rl")
    w.iterations.setValue(4)
    w.level.setValue(3)
    assert "2 planes" in w.layer_info.text()
    prog = []
    w.run()
    w.worker.yielded.connect(lambda p: prog.append(p))
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


def test_tta_option_follows_method(viewer, qtbot):
    from napari_refocus.ui.refocus import RefocusWidget

    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    w.set_method("lbdvd")
    assert w.params()["tta"] is False
    w.tta.setChecked(True)
    assert w.params()["tta"] is True
    w.set_method("rl")
    assert "tta" not in w.params()


def test_upscaled_result_transform():
    from napari_refocus.ui._common import result_transform

    scale, translate = result_transform((1.0, 0.65, 0.65), (3.0, 10.0, 20.0), upscale=2)
    np.testing.assert_allclose(scale, (1.0, 0.325, 0.325))
    # output pixel 0 and 1 straddle input pixel 0's centre (10, 20): centres 10 -+ 0.1625
    np.testing.assert_allclose(translate, (3.0, 10 - 0.1625, 20 - 0.1625))
    assert result_transform((0.65, 0.65), (10, 20), 1) == ((0.65, 0.65), (10.0, 20.0))


# ------------------------------------------------------------------------------ defocus map
def _check_map_widget(viewer, qtbot, w, layer, before):
    ly = w.map_layer
    dm = ly.metadata["defocus_map"]
    grid = dm.grid
    exp_scale, exp_translate = grid.layer_transform(SCALE, TRANSLATE)
    np.testing.assert_allclose(ly.scale, (42 * PIXEL_UM, 42 * PIXEL_UM))
    np.testing.assert_allclose(ly.scale, exp_scale)
    np.testing.assert_allclose(ly.translate, exp_translate)
    assert ly.data.shape == grid.shape == np.asarray(dm.levels).shape
    assert ly.metadata["source_layer"] == layer.name
    # hover: level and certainty of the cell under the cursor
    i, j = 1, 2
    world = np.asarray(exp_translate) + np.asarray(exp_scale) * (i, j)
    status = ly.get_status(world, world=True)
    text = str(status)
    assert f"level: {int(dm.levels[i, j])}" in text and "certainty" in text
    # colours: background transparent, others opaque, certainty as opacity
    cmap = ly.colormap
    flat = np.ravel(dm.levels)
    for k, level in enumerate(flat):  # label k+1 is patch k: background transparent, others opaque
        assert (cmap.color_dict[k + 1][3] == 0) == (level == 11)
    w.use_certainty.setChecked(True)
    k = i * grid.shape[1] + j
    assert ly.colormap.color_dict[k + 1][3] == pytest.approx(float(np.ravel(dm.certainty)[k]), abs=1e-6)
    w.use_certainty.setChecked(False)
    counts = w.histogram_counts()
    assert counts.sum() == grid.shape[0] * grid.shape[1]
    np.testing.assert_array_equal(layer.data, before)


def test_defocus_map_overlay_and_refocus_with_map(viewer, qtbot, crops, fake_delpnet):
    from napari_refocus.ui.defocus_map import DefocusMapWidget

    src = crops[0]
    before = src.copy()
    layer = add_source(viewer, src)
    w = DefocusMapWidget(viewer)
    qtbot.addWidget(w)
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    _check_map_widget(viewer, qtbot, w, layer, before)
    n_calls = len(fake_delpnet) if fake_delpnet is not None else None

    w.iterations.setValue(5)
    w.refocus_with_map()
    wait_idle(qtbot, w)
    assert w.refocus_panel.last_error is None, w.refocus_panel.last_error
    out = viewer.layers["src [lbdvd]"]
    if fake_delpnet is not None:
        assert len(fake_delpnet) == n_calls  # the map was reused, not recomputed
    assert out.data.shape == src.shape
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    assert out.metadata["method"] == "lbdvd" and out.metadata["defocus_map_layer"] == w.map_layer.name
    assert "defocus_map" not in out.metadata["parameters"]
    np.testing.assert_array_equal(layer.data, before)


@pytest.mark.skipif(not HAVE_DELPNET, reason="weights/delpnet.safetensors not installed")
def test_defocus_map_real_weights(viewer, qtbot, crops):
    from napari_refocus.ui.defocus_map import DefocusMapWidget

    layer = add_source(viewer, crops[0])
    w = DefocusMapWidget(viewer)
    qtbot.addWidget(w)
    w.run()
    wait_idle(qtbot, w, timeout=120_000)
    assert w.panel.last_error is None, w.panel.last_error
    dm = w.map_layer.metadata["defocus_map"]
    np.testing.assert_allclose(w.map_layer.scale, (42 * PIXEL_UM,) * 2)
    assert np.asarray(dm.certainty).min() >= 0 and np.asarray(dm.certainty).max() <= 1
    np.testing.assert_array_equal(layer.data, crops[0])


def test_defocus_map_without_weights_shows_error(viewer, qtbot, errors, crops):
    if HAVE_DELPNET:
        pytest.skip("weights are installed")
    from napari_refocus.ui.defocus_map import DefocusMapWidget

    add_source(viewer, crops[0][:90, :90])
    w = DefocusMapWidget(viewer)
    qtbot.addWidget(w)
    assert "delpnet.safetensors" in w.weights_note.text()
    w.run()
    wait_idle(qtbot, w)
    assert errors and w.panel.button.text() == "Compute defocus map"
    assert w.map_layer is None and len(viewer.layers) == 1


# ------------------------------------------------------------------------------ compare
def test_compare_table_profile_side_by_side_csv(viewer, qtbot, crops, tmp_path):
    from napari_refocus.ui.compare import CompareWidget
    from napari_refocus.methods import refocus
    from napari_refocus.core.metrics import compare

    blurred, gt, _ = crops
    restored = refocus(blurred, method="rl", level=5, iterations=5).image
    inp = add_source(viewer, blurred, name="defocused")
    res = add_source(viewer, restored, name="defocused [rl]",
                     metadata={"method": "rl", "source_layer": "defocused"})
    gtl = add_source(viewer, gt, name="ground truth")
    other = viewer.add_image(np.zeros((10, 10)), name="other")
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    assert w.layers() == (inp, res, gtl)
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    ref = compare(gt, restored, blurred)
    assert w.report["pred"] == pytest.approx(ref["pred"])
    assert w.report["gain"] == pytest.approx(ref["gain"])
    shown = w.table_values()
    for col in ("input", "pred", "gain"):
        for key in ("psnr", "ssim", "pcc"):
            assert shown[col][key] == pytest.approx(ref[col][key], abs=0.006)
    assert f"{ref['data_range']:g}" in w.note.text()

    path = w.export_csv(tmp_path / "m.csv")
    text = open(path).read()
    assert text.splitlines()[0] == "metric,input_vs_gt,restored_vs_gt,gain"
    assert f"{ref['pred']['psnr']}" in text and "data_range" in text

    w.set_side_by_side(True)
    assert viewer.grid.enabled and not other.visible and inp.visible and res.visible and gtl.visible
    w.set_side_by_side(False)
    assert not viewer.grid.enabled and other.visible

    # profile along a horizontal line (world um) through the middle
    y = TRANSLATE[0] + 80 * PIXEL_UM
    prof = w.set_profile_line((y, TRANSLATE[1] + 10 * PIXEL_UM), (y, TRANSLATE[1] + 200 * PIXEL_UM))
    assert set(prof) == {"input", "restored", "ground truth"}
    x, vals = prof["ground truth"]
    assert len(x) == 191
    np.testing.assert_allclose(vals, gt[80, 10:201], rtol=1e-6)
    np.testing.assert_allclose(prof["input"][1], blurred[80, 10:201], rtol=1e-6)
    np.testing.assert_array_equal(inp.data, blurred)


def test_compare_upscaled_restored_is_block_averaged(viewer, qtbot, crops):
    from napari_refocus.ui._common import result_transform
    from napari_refocus.ui.compare import CompareWidget, block_mean
    from napari_refocus.core.metrics import compare

    blurred, gt, _ = crops
    up = np.repeat(np.repeat(gt.astype(np.float32), 2, axis=0), 2, axis=1)
    up[::2, ::2] += 7  # so the block mean is not just the original
    s, t = result_transform(SCALE, TRANSLATE, 2)
    add_source(viewer, blurred, name="defocused")
    viewer.add_image(up, name="sr", scale=s, translate=t, metadata={"method": "x2", "source_layer": "defocused"})
    add_source(viewer, gt, name="ground truth")
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    w.run()
    wait_idle(qtbot, w)
    assert w.downsampled == 2 and "block mean" in w.note.text()
    ref = compare(gt, block_mean(up.astype(np.float64), 2), blurred)
    assert w.report["pred"] == pytest.approx(ref["pred"])
    # the profile samples the finer layer at the right places
    y = TRANSLATE[0] + 50 * PIXEL_UM
    prof = w.set_profile_line((y, TRANSLATE[1]), (y, TRANSLATE[1] + 100 * PIXEL_UM))
    x, vals = prof["restored"]
    # ground-truth pixel centre k lies between the two fine pixels 2k and 2k+1 (mean of them)
    k = 40
    idx = int(np.argmin(np.abs(x - k * PIXEL_UM)))
    assert vals[idx] == pytest.approx(up[100:102, 2 * k : 2 * k + 2].mean(), rel=1e-5)


# ------------------------------------------------------------------------------ learned methods
LEARNED = ["comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet"]


@pytest.mark.parametrize("name", LEARNED)
def test_refocus_widget_runs_learned_method(viewer, qtbot, crops, name):
    import napari_refocus.methods.learned  # noqa: F401  (registers the learned methods)
    from napari_refocus.ui.refocus import RefocusWidget
    from napari_refocus.core.metrics import compare

    if not get_method(name).weights_present():
        pytest.skip(f"weights/{name}.safetensors not shipped")
    src, gt, _ = crops
    before = src.copy()
    layer = add_source(viewer, src)
    w = RefocusWidget(viewer)
    qtbot.addWidget(w)
    assert name in [m.name for m in w.methods]
    w.set_method(name)
    w.run()
    wait_idle(qtbot, w)
    out = viewer.layers[f"src [{name}]"]
    r = get_method(name).upscale
    assert out.data.shape == (H * r, W * r)
    # the result lies exactly over its input: r x r output pixels per input pixel
    np.testing.assert_allclose(np.asarray(out.scale) * r, SCALE)
    np.testing.assert_allclose(np.asarray(out.translate) + np.asarray(out.scale) * (r - 1) / 2, TRANSLATE)
    assert out.metadata["method"] == name and out.metadata["source_layer"] == "src"
    restored = np.asarray(out.data, np.float32)
    if r > 1:
        restored = restored.reshape(H, r, W, r).mean(axis=(1, 3))
    assert compare(gt, restored, src)["gain"]["psnr"] > 0
    np.testing.assert_array_equal(layer.data, before)


def test_dask_layer_gives_lazy_result_for_rl(viewer, qtbot, crops):
    """A dask-backed layer stays lazy for any method (here rl), aligned with its input."""
    da = pytest.importorskip("dask.array")
    from napari_refocus.methods import refocus

    src = crops[0]
    add_source(viewer, da.from_array(src, chunks=(84, 126)), name="lazy")
    run_rl(viewer, qtbot, iterations=5)
    out = viewer.layers["lazy [rl]"]
    assert type(out.data).__module__.startswith("dask")
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    params = {k: v for k, v in out.metadata["parameters"].items() if k in ("level", "iterations", "pixel_um")}
    eager = refocus(src, method="rl", device="cpu", **params).image
    np.testing.assert_allclose(np.asarray(out.data), eager, rtol=1e-5, atol=1e-3)
