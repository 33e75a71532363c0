"""The Defocus map and Compare widgets in a real (Xvfb) napari viewer."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from widget_support import HAVE_DELPNET, PIXEL_UM, SCALE, TRANSLATE, add_source, dock, wait_idle  # noqa: E402
from widget_support import crops, errors, fake_delpnet, viewer  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.gui


# ------------------------------------------------------------------------------ defocus map
def _check_map_widget(viewer, w, layer, before):
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
    text = str(ly.get_status(world, world=True))
    assert f"level: {int(dm.levels[i, j])}" in text and "certainty" in text
    # colours: label k+1 is patch k; background transparent, others opaque; certainty as opacity
    cmap = ly.colormap
    for k, level in enumerate(np.ravel(dm.levels)):
        assert (cmap.color_dict[k + 1][3] == 0) == (level == 11)
    w.use_certainty.value = True
    k = i * grid.shape[1] + j
    assert ly.colormap.color_dict[k + 1][3] == pytest.approx(float(np.ravel(dm.certainty)[k]), abs=1e-6)
    w.use_certainty.value = False
    assert w.histogram_counts().sum() == grid.shape[0] * grid.shape[1]
    np.testing.assert_array_equal(layer.data, before)


def test_defocus_map_overlay_and_refocus_with_map(viewer, qtbot, crops, fake_delpnet):
    src = crops[0]
    before = src.copy()
    layer = add_source(viewer, src)
    w = dock(viewer, "defocus_map")
    assert [f.name for f in w.map_form] == ["stride", "tta"]  # generated from the lbdvd schema
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    _check_map_widget(viewer, w, layer, before)
    n_calls = len(fake_delpnet) if fake_delpnet is not None else None

    w.prefs.iterations.value = 5
    w.refocus_with_map()
    wait_idle(qtbot, w)
    assert w.refocus_panel.last_error is None, w.refocus_panel.last_error
    out = viewer.layers["src [lbdvd]"]
    if fake_delpnet is not None:
        assert len(fake_delpnet) == n_calls  # the map was reused, not recomputed
    assert out.data.shape == src.shape
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    md = out.metadata
    assert md["method"] == "lbdvd" and md["defocus_map_layer"] == w.map_layer.name
    assert "defocus_map" not in md["parameters"]
    assert md["parameters"]["iterations"] == 5 and md["parameters"]["stride"] == 42
    assert md["parameters"]["optics"]["pixel_um"] == pytest.approx(PIXEL_UM)
    np.testing.assert_array_equal(layer.data, before)


def test_defocus_map_of_a_stack_plane(viewer, qtbot, crops, fake_delpnet):
    """The map is of the plane the sliders show; LB-DVD with it restores that plane only."""
    stack = np.stack([crops[0], crops[0][::-1]])
    layer = add_source(viewer, stack, scale=(1.0, *SCALE), translate=(0.0, *TRANSLATE))
    viewer.dims.set_current_step(0, 1)
    w = dock(viewer, "defocus_map")
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    assert w.map_layer.metadata["source_plane"] == [1]
    w.prefs.iterations.value = 2
    w.refocus_with_map()
    wait_idle(qtbot, w)
    assert w.refocus_panel.last_error is None, w.refocus_panel.last_error
    out = viewer.layers["src [lbdvd]"]
    assert out.data.shape == crops[0].shape and out.metadata["source_plane"] == [1]
    np.testing.assert_array_equal(layer.data, stack)


@pytest.mark.skipif(not HAVE_DELPNET, reason="weights/delpnet.safetensors not installed")
def test_defocus_map_real_weights(viewer, qtbot, crops):
    layer = add_source(viewer, crops[0])
    w = dock(viewer, "defocus_map")
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
    add_source(viewer, crops[0][:90, :90])
    w = dock(viewer, "defocus_map")
    assert "delpnet.safetensors" in w.weights_note.value
    w.run()
    wait_idle(qtbot, w)
    assert errors and w.panel.button.text == "Compute defocus map"
    assert w.map_layer is None and len(viewer.layers) == 1


# ------------------------------------------------------------------------------ compare
def test_compare_table_profile_side_by_side_csv(viewer, qtbot, crops, tmp_path):
    from napari_refocus import refocus
    from napari_refocus.core.metrics import compare

    blurred, gt, _ = crops
    restored = refocus(blurred, method="rl", level=5, iterations=5).image
    inp = add_source(viewer, blurred, name="defocused")
    res = add_source(viewer, restored, name="defocused [rl]", metadata={"method": "rl", "source_layer": "defocused"})
    gtl = add_source(viewer, gt, name="ground truth")
    other = viewer.add_image(np.zeros((10, 10)), name="other")
    w = dock(viewer, "compare")
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
    assert f"{ref['data_range']:g}" in w.note.value

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
    # editing the line redraws the profiles
    line = viewer.layers["profile line"]
    line.data = [np.array([[80.0, 10.0], [80.0, 110.0]])]
    assert len(w.profiles["ground truth"][0]) == int(np.ceil(100 / PIXEL_UM)) + 1


def test_compare_upscaled_restored_is_block_averaged(viewer, qtbot, crops):
    from napari_refocus.core.metrics import compare
    from napari_refocus.ui.compare import block_mean
    from napari_refocus.ui.layers import result_transform

    blurred, gt, _ = crops
    up = np.repeat(np.repeat(gt.astype(np.float32), 2, axis=0), 2, axis=1)
    up[::2, ::2] += 7  # so the block mean is not just the original
    s, t = result_transform(SCALE, TRANSLATE, 2)
    add_source(viewer, blurred, name="defocused")
    viewer.add_image(up, name="sr", scale=s, translate=t, metadata={"method": "x2", "source_layer": "defocused"})
    add_source(viewer, gt, name="ground truth")
    w = dock(viewer, "compare")
    w.run()
    wait_idle(qtbot, w)
    assert w.downsampled == 2 and "block mean" in w.note.value
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


def test_compare_registers_a_real_pair_when_asked(viewer, qtbot, crops, tmp_path):
    """The ground truth shot separately (shifted, brighter): with the box ticked the table holds
    the registered, intensity-matched metrics, the note says how each image was moved, and the
    CSV records it."""
    from scipy.ndimage import shift as nd_shift

    from napari_refocus.core.metrics import compare

    blurred, gt, _ = crops
    shot = 1.7 * nd_shift(gt.astype(np.float64), (1.6, -2.3), order=3, mode="nearest") + 25.0
    add_source(viewer, blurred, name="defocused")
    add_source(viewer, blurred.astype(np.float32), name="defocused [rl]",
               metadata={"method": "rl", "source_layer": "defocused"})
    add_source(viewer, shot, name="ground truth")
    w = dock(viewer, "compare")
    w.register.value = True
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    ref = compare(shot, blurred.astype(np.float32), blurred, register=True)
    assert w.report["pred"] == pytest.approx(ref["pred"])
    # a blurred 168x252 crop against the sharp shot: within 0.3 px (0.2 measured)
    assert w.report["registration"]["shift_px"]["input"] == pytest.approx([1.6, -2.3], abs=0.3)
    assert re.match(r"registered \(shift onto the ground truth: pred \+1\.\d\d, -2\.\d\d px, input", w.note.value)
    text = open(w.export_csv(tmp_path / "m.csv")).read()
    assert "registered_and_intensity_matched,True" in text and "region_y0_y1_x0_x1" in text


def test_defocus_map_of_a_rotated_layer_lies_over_it(viewer, qtbot, crops, fake_delpnet):
    """The map of a layer placed with rotate and shear is rotated and sheared with it: each
    cell's centre lands on the world point of the same source pixel as for an unrotated layer
    (the overlay had the source's scale and translate only)."""
    plain = add_source(viewer, crops[0], name="plain")
    turned = add_source(viewer, crops[0], name="turned", rotate=30, shear=[0.1])
    w = dock(viewer, "defocus_map")
    maps = {}
    for layer in (plain, turned):
        w.run(layer)
        wait_idle(qtbot, w)
        assert w.panel.last_error is None, w.panel.last_error
        maps[layer.name] = viewer.layers[f"{layer.name} defocus map"]
    m_plain, m_turned = maps["plain"], maps["turned"]
    np.testing.assert_allclose(m_turned.rotate, turned.rotate)
    for cell in ((0.0, 0.0), (2.0, 3.0)):
        # the source pixel under this cell, read off the unrotated pair
        pixel = plain.world_to_data(m_plain.data_to_world(cell))
        np.testing.assert_allclose(m_turned.data_to_world(cell), turned.data_to_world(pixel), atol=1e-9)
