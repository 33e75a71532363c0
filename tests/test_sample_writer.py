"""Sample-data and writer contributions (no viewer needed, except the npe2 round trip)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_refocus.ui.sample_data import sample_pair, sample_real_defocused, sample_real_infocus
from napari_refocus.ui.writer import write_tiff
from napari_refocus.io import read_image
from napari_refocus.io.samples import PIXEL_UM, synthetic_pair


def test_sample_pair_layers():
    layers = sample_pair()
    assert [ly[1]["name"] for ly in layers] == ["defocused (synthetic)", "ground truth"]
    b, g, _ = synthetic_pair()
    for (data, kw, kind), ref in zip(layers, (b, g)):
        assert kind == "image"
        assert kw["scale"] == (PIXEL_UM, PIXEL_UM)
        np.testing.assert_array_equal(data, ref)
        assert data.flags.writeable  # a copy: editing a layer cannot change the cached sample
        assert "BBBC006" in kw["metadata"]["attribution"]
    assert "Poisson" in layers[0][1]["metadata"]["simulation"]


def test_sample_real_defocused():
    [(data, kw, kind)] = sample_real_defocused()
    assert kind == "image" and data.ndim == 2 and data.dtype == np.uint16
    assert kw["scale"] == (0.65, 0.65)
    assert "Ljosa" in kw["metadata"]["attribution"] and "z_00" in kw["metadata"]["kind"]


def test_sample_real_infocus_is_left_alone_by_the_map():
    """The in-focus sample: a real z_16 field; DelpNet puts (nearly) all of it at levels 0..2."""
    import napari_refocus as nr

    [(data, kw, kind)] = sample_real_infocus()
    assert kind == "image" and data.dtype == np.uint16 and "z_16" in kw["metadata"]["kind"]
    levels = nr.defocus_map(data, device="cpu").levels
    fg = levels[levels != 11]
    assert fg.size and (fg <= 2).mean() >= 0.95


def test_write_tiff_pixel_size_and_provenance(tmp_path):
    data = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)

    class NotJson:  # e.g. a DefocusMap object in the metadata: left out of the description
        pass

    meta = {"name": "x [rl]", "scale": [0.65, 0.65],
            "metadata": {"method": "rl", "parameters": {"iterations": 3}, "defocus_map": NotJson(),
                         "source_layer": "x"}}
    [out] = write_tiff(str(tmp_path / "r.tif"), data, meta)
    arr, info = read_image(out)
    np.testing.assert_array_equal(arr, data)
    assert info["pixel_um"] == pytest.approx(0.65, rel=1e-4)
    assert info["metadata"]["method"] == "rl" and info["metadata"]["parameters"] == {"iterations": 3}
    assert "defocus_map" not in info["metadata"]
    with tifffile.TiffFile(out) as tif:
        json.loads(tif.pages[0].tags["ImageDescription"].value)
    # an existing file that is not a source is replaced (napari's dialog asked already)
    write_tiff(str(tmp_path / "r.tif"), data + 1, meta)
    np.testing.assert_array_equal(read_image(out)[0], data + 1)


def test_write_tiff_refuses_source_path(tmp_path):
    src = tmp_path / "input.tif"
    tifffile.imwrite(src, np.ones((8, 8), np.uint16))
    meta = {"name": "input [rl]", "scale": [1.0, 1.0], "metadata": {"source_path": str(src)}}
    with pytest.raises(ValueError, match="input file"):
        write_tiff(str(src), np.zeros((8, 8), np.float32), meta)
    np.testing.assert_array_equal(tifffile.imread(src), 1)


def test_writer_refuses_layer_source_path(make_napari_viewer, tmp_path):
    """A layer opened from a file cannot be saved over that file through this writer."""
    pytest.importorskip("napari")
    src = tmp_path / "opened.tif"
    tifffile.imwrite(src, np.full((8, 8), 5, np.uint16))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(src), plugin="napari")
    data, state, _ = layer.as_layer_data_tuple()
    with pytest.raises(ValueError, match="input file"):
        write_tiff(str(src), data, state)
    np.testing.assert_array_equal(tifffile.imread(src), 5)



def test_writer_saves_a_pyramid_layer_at_full_resolution(make_napari_viewer, tmp_path):
    """napari hands the writer a multiscale layer's list of levels: its full resolution is saved
    with the pixel size its scale gives (np.asarray of the levels failed)."""
    pytest.importorskip("napari")
    full = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    viewer = make_napari_viewer()
    layer = viewer.add_image([full, full[::2, ::2]], multiscale=True, scale=(0.325, 0.325), name="pyr")
    data, state, _ = layer.as_layer_data_tuple()
    [out] = write_tiff(str(tmp_path / "pyr.tif"), data, state)
    arr, info = read_image(out)
    np.testing.assert_array_equal(arr, full)
    assert info["pixel_um"] == pytest.approx(0.325, rel=1e-4)
