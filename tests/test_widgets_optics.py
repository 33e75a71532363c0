"""Optics in the widgets: where each value comes from (layer scale and units, layer metadata,
an optics file, the user, the defaults), and a defocus map for another objective drawn in um
and aligned with its image."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from widget_support import HAVE_DELPNET, add_source, dock, wait_idle  # noqa: E402
from widget_support import crops, viewer  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.gui
OIL = {"na": 1.4, "refractive_index": 1.515, "wavelength_nm": 520.0}


def _image(**kw):
    from napari.layers import Image

    return Image(np.zeros((8, 8), np.float32), **kw)


@pytest.mark.parametrize("kw, want", [
    ({}, (None, "")),  # napari's default scale 1 is not a pixel size
    ({"scale": (0.65, 0.65)}, (0.65, "assumed")),
    ({"scale": (108, 108), "units": ("nm", "nm")}, (0.108, "units")),
    ({"scale": (1.0, 1.0), "units": ("um", "um")}, (1.0, "units")),
    ({"scale": (0.5, 0.6)}, (None, "")),
])
def test_layer_pixel_size_from_scale_and_units(kw, want):
    from napari_refocus.ui.layers import layer_pixel_um

    got = layer_pixel_um(_image(**kw))
    assert got[1] == want[1] and got[0] == (pytest.approx(want[0]) if want[0] else None)


def test_layer_optics_sources():
    from napari_refocus.ui.layers import layer_optics

    layer = _image(scale=(0.2, 0.2), units=("µm", "µm"), metadata={
        "optics": {**OIL, "bogus": 1, "pixel_um": "x"}, "pixel_um": 0.65})
    got = dict(layer_optics(layer))
    assert got["layer scale"] == {"pixel_um": pytest.approx(0.2)}
    assert got["layer metadata"] == {**OIL, "pixel_um": 0.65}  # bad entries are not taken
    assert got["layer scale (µm assumed)"] == {}


def test_refocus_widget_shows_optics_and_their_sources(viewer, tmp_path):
    src = add_source(viewer, np.zeros((96, 96), np.float32), name="plain", scale=(0.65, 0.65))
    w = dock(viewer, "refocus")
    w.set_method("rl")
    panel = w.optics_panel
    assert panel.sources()["pixel_um"] == "layer scale (µm assumed)" and panel.sources()["na"] == "default"
    assert "layer scale (µm assumed): pixel 0.65 µm" in panel.summary.value

    viewer.add_image(np.zeros((96, 96), np.float32), name="oil", scale=(108, 108), units=("nm", "nm"),
                     metadata={"optics": OIL})
    w.image.value = viewer.layers["oil"]
    assert panel.values()["pixel_um"] == pytest.approx(0.108) and panel.sources()["pixel_um"] == "layer scale"
    assert {k: panel.sources()[k] for k in OIL} == dict.fromkeys(OIL, "layer metadata")
    assert w.optics.na.value == pytest.approx(1.4) and w.params()["na"] == pytest.approx(1.4)

    w.optics.na.value = 1.3  # the user's value wins over the layer's
    assert panel.sources()["na"] == "you" and w.params()["na"] == pytest.approx(1.3)
    scope = tmp_path / "water.json"
    scope.write_text(json.dumps({"na": 1.2, "refractive_index": 1.333, "psf_model": "exact"}))
    panel.load_file(scope)  # what "Load optics..." does after its file dialog
    assert panel.sources()["na"] == "optics file water.json" and w.optics.na.value == pytest.approx(1.2)
    assert w.optics.psf_model.value == "exact" and panel.sources()["wavelength_nm"] == "layer metadata"
    assert "optics file water.json: NA 1.2, n 1.333, PSF exact" in panel.summary.value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"NA": 1}))
    with pytest.raises(ValueError, match="valid keys"):
        panel.load_file(bad)
    assert panel.sources()["na"] == "optics file water.json"  # a bad file changes nothing

    w.image.value = src  # another layer: the optics file and the defaults stay, the layer's go
    assert panel.sources()["wavelength_nm"] == "default" and panel.sources()["na"] == "optics file water.json"
    w.reset_defaults()
    assert panel.sources()["na"] == "default" and panel.sources()["pixel_um"] == "layer scale (µm assumed)"


def test_map_pixel_is_typed_as_text_empty_for_none(viewer, tmp_path):
    add_source(viewer, np.zeros((96, 96), np.float32), name="plain", scale=(0.65, 0.65))
    w = dock(viewer, "defocus_map")
    panel = w.optics_panel
    field = panel.form.map_pixel_um
    assert field.value == "" and "map_pixel_um" not in panel.values()  # none: matched in lambda/NA
    field.value = "0.65"
    assert panel.values()["map_pixel_um"] == 0.65 and panel.sources()["map_pixel_um"] == "you"
    assert panel.optics().map_pixel_um == 0.65 and "you: map pixel 0.65 µm" in panel.summary.value
    field.value = "0.6x"
    with pytest.raises(ValueError, match="map_pixel_um"):
        panel.optics()
    field.value = " Auto "  # chosen per image (methods.map_choice)
    assert panel.optics().map_pixel_um == "auto"
    field.value = ""
    assert "map_pixel_um" not in panel.values() and panel.optics().map_pixel_um is None
    scope = tmp_path / "cells.json"
    scope.write_text(json.dumps({"map_pixel_um": 0.65}))
    panel.load_file(scope)
    assert field.value == "0.65" and panel.sources()["map_pixel_um"] == "optics file cells.json"


def test_refocus_records_the_optics_and_their_sources(viewer, qtbot, crops, tmp_path):
    add_source(viewer, crops[0])
    w = dock(viewer, "refocus")
    w.set_method("rl")
    w.set_values(iterations=1, level=2)
    scope = tmp_path / "air.json"
    scope.write_text(json.dumps({"na": 0.45, "wavelength_nm": 500}))
    w.optics_panel.load_file(scope)
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    md = w.last_layer.metadata
    assert md["parameters"]["optics"]["na"] == 0.45 and md["parameters"]["optics"]["wavelength_nm"] == 500
    assert md["optics_source"]["na"] == "optics file air.json"
    assert md["optics_source"]["pixel_um"] == "layer scale (µm assumed)"
    # a bad combination is reported before any work, naming where the values came from
    w.optics.na.value = 1.2
    assert w.run() is None and "na 1.2 from you" in str(w.panel.last_error)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DELPNET, reason="needs weights/delpnet.safetensors")
def test_defocus_map_for_another_objective_in_um_and_aligned(viewer, qtbot):
    from napari_refocus.io.samples import synthetic_pair

    img = np.ascontiguousarray(np.asarray(synthetic_pair()[0])[:256, 300:556])
    scale, translate = np.array([0.108, 0.108]), np.array([5.0, 7.0])
    layer = viewer.add_image(img, name="oil", scale=scale, translate=translate, units=("µm", "µm"),
                             metadata={"optics": OIL})
    w = dock(viewer, "defocus_map")
    assert w.optics_panel.sources()["pixel_um"] == "layer scale" and w.optics_panel.sources()["na"] == "layer metadata"
    w.run()
    wait_idle(qtbot, w)
    assert w.panel.last_error is None, w.panel.last_error
    ly = w.map_layer
    dm = ly.metadata["defocus_map"]
    assert dm.scale == pytest.approx(2.48, abs=0.02) and dm.optics["na"] == 1.4
    cell = 42 * dm.scale * scale
    np.testing.assert_allclose(ly.scale, cell)
    # the overlay covers the image within one cell on every side
    img_lo, img_hi = translate - scale / 2, translate + (np.array(img.shape) - 0.5) * scale
    lay_lo = np.asarray(ly.translate) - cell / 2
    lay_hi = np.asarray(ly.translate) + (np.array(ly.data.shape) - 0.5) * cell
    assert np.all(np.abs(lay_lo - img_lo) <= cell) and np.all(np.abs(lay_hi - img_hi) <= cell)
    # cell (i, j) is centred on patch (i, j): native pixels (corner + 42) * scale - 1/2
    corners = dm.grid.corners()
    centre = translate + scale * ((corners[1, 1] + 42.0) * dm.scale - 0.5)
    np.testing.assert_allclose(np.asarray(ly.translate) + cell, centre, atol=1e-6)
    # legend, hover text and histogram in um of this objective, not 2 um per level
    z = dm.defocus_um
    assert f"10: {z[10]:.2g} µm" in w.legend.value and "10: 20 µm" not in w.legend.value
    i, j = 0, 1
    text = str(ly.get_status(np.asarray(ly.translate) + cell * (i, j), world=True))
    lv = int(dm.levels[i, j])
    # (napari shows a float feature to 3 significant digits)
    assert lv == 11 or f"defocus_um: {round(z[lv], 3):.3g}" in text
    if w.hist.ax is not None:
        labels = [t.get_text() for t in w.hist.ax.get_xticklabels()]
        assert labels[-1] == "bg" and labels[10] == f"{z[10]:.2g}"
    # LB-DVD with this map runs with the map's optics
    w.prefs.iterations.value = 2
    w.refocus_with_map()
    wait_idle(qtbot, w)
    assert w.refocus_panel.last_error is None, w.refocus_panel.last_error
    md = viewer.layers["oil [lbdvd]"].metadata
    assert md["parameters"]["optics"]["na"] == 1.4 and md["parameters"]["optics"]["pixel_um"] == pytest.approx(0.108)
    assert md["optics_source"]["na"] == "layer metadata"
    np.testing.assert_array_equal(layer.data, img)
