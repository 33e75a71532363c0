"""OME-Zarr stores written by napari-refocus open in napari exactly over their input.

Through napari-refocus's own reader (``io.napari_reader``, the npe2 ``readers`` contribution):
an x2 result (a quarter-input-pixel shift) and a defocus map (cells centred on their patches)
must cover the same world area as the input, pixel edge for pixel edge. napari-ome-zarr (0.10)
drops the translation; the test records that too, so that the README's advice stays true.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from napari_refocus.io import write_ome_zarr
from napari_refocus.io.napari_reader import get_reader, read_store
from napari_refocus.io.pipeline import defocus_map_file, refocus_file
from napari_refocus.methods import register, unregister
from napari_refocus.methods.base import Method
from napari_refocus.methods.params import Params

PIXEL = 0.4
ORIGIN = (3.0, -5.0)  # the input's own NGFF translation (um)


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    return np.clip(800 + 600 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 30, shape), 0, None).astype(
        np.uint16)


def _nearest_x2(image, params, *, device, report):
    yield from ()
    return np.repeat(np.repeat(np.asarray(image, np.float32), 2, 0), 2, 1)


@pytest.fixture
def x2():
    @dataclass(frozen=True)
    class X2Params(Params):
        pass

    m = Method(name="test-napari-x2", title="x2", description="nearest x2", schema=X2Params, run=_nearest_x2,
               halo=4, upscale=2)
    register(m)
    yield m
    unregister(m.name)


@pytest.fixture
def stores(tmp_path, x2):
    physical = {a: {"scale": PIXEL, "translation": t, "unit": "micrometer"} for a, t in zip("YX", ORIGIN)}
    src = write_ome_zarr(tmp_path / "in.ome.zarr", _image((150, 170)), axes="YX", physical=physical)
    out = tmp_path / "out.ome.zarr"
    refocus_file(src, out, method="test-napari-x2", device="cpu", block=64)
    return src, out


def edges(layer, shape) -> np.ndarray:
    """World coordinates of the outer corners of the first and last pixel (pixel edges)."""
    return np.array([layer.data_to_world([-0.5, -0.5]), layer.data_to_world([shape[0] - 0.5, shape[1] - 0.5])])


def test_x2_result_opens_exactly_over_its_input(make_napari_viewer, stores):
    src, out = stores
    viewer = make_napari_viewer()
    assert get_reader(str(out)) is read_store
    [inp] = viewer.open(str(src), plugin="napari-refocus")
    [res] = viewer.open(str(out), plugin="napari-refocus")
    assert res.data.shape == (300, 340) and inp.data.shape == (150, 170)
    np.testing.assert_allclose(inp.scale, (PIXEL, PIXEL))
    np.testing.assert_allclose(inp.translate, ORIGIN)
    np.testing.assert_allclose(res.scale, (PIXEL / 2, PIXEL / 2))
    np.testing.assert_allclose(edges(res, res.data.shape), edges(inp, inp.data.shape), atol=1e-9)
    # output pixels (2i, 2j) .. (2i+1, 2j+1) tile input pixel (i, j): their centres sit a quarter pixel in
    for i, j in [(0, 0), (7, 11), (149, 169)]:
        centre = np.asarray(inp.data_to_world([i, j]))
        quads = [np.asarray(res.data_to_world([2 * i + a, 2 * j + b])) for a in (0, 1) for b in (0, 1)]
        np.testing.assert_allclose(np.mean(quads, axis=0), centre, atol=1e-9)
        np.testing.assert_allclose(np.abs(quads[0] - centre), PIXEL / 4, atol=1e-9)
    assert str(res.units[0]) == "micrometer" and res.metadata["napari_refocus"]["upscale"] == 2


def test_napari_ome_zarr_alone_drops_the_translation(make_napari_viewer, stores):
    """Why the plugin has its own reader: napari-ome-zarr keeps the scale, not the shift."""
    pytest.importorskip("napari_ome_zarr")
    src, out = stores
    viewer = make_napari_viewer()
    [res] = viewer.open(str(out), plugin="napari-ome-zarr")
    [inp] = viewer.open(str(src), plugin="napari-refocus")
    np.testing.assert_allclose(res.scale[-2:], (PIXEL / 2, PIXEL / 2))
    assert not np.allclose(edges(res, res.data.shape), edges(inp, inp.data.shape))


def test_defocus_map_store_opens_on_its_patches(make_napari_viewer, tmp_path):
    from napari_refocus.methods import get_method
    from napari_refocus.ui.overlay import map_transform

    if not get_method("lbdvd").weights_present():
        pytest.skip("needs weights/delpnet.safetensors")
    src = write_ome_zarr(tmp_path / "in.ome.zarr", _image((300, 340)), axes="YX", pixel_um=0.65)
    rec = defocus_map_file(src, tmp_path / "maps", device="cpu", fmt="ome-zarr")
    viewer = make_napari_viewer()
    [inp] = viewer.open(str(src), plugin="napari-refocus")
    [lab] = viewer.open(rec["levels"], plugin="napari-refocus")
    assert lab._type_string == "labels" and lab.data.shape == (300 // 42, 340 // 42)
    # where the Defocus map widget puts its overlay over the same image
    import napari_refocus as nr

    dm = nr.defocus_map(np.asarray(inp.data), device="cpu", pixel_um=0.65)
    scale, translate = map_transform(dm, inp.scale, inp.translate)
    np.testing.assert_allclose(lab.scale, scale)
    np.testing.assert_allclose(lab.translate, translate)
    # cell (r, c) is centred on its 84-pixel patch, which starts r, c strides (42 px x map scale) in
    for r, c in [(0, 0), (3, 5)]:
        centre_px = tuple(k * 42 * dm.scale + (84 * dm.scale - 1) / 2 for k in (r, c))
        np.testing.assert_allclose(lab.data_to_world([r, c]), inp.data_to_world(centre_px), atol=1e-9)


def test_other_stores_and_files_are_left_to_other_readers(tmp_path):
    import zarr

    plain = tmp_path / "theirs.ome.zarr"
    g = zarr.open_group(str(plain), mode="w", zarr_format=2)
    g.create_array("0", shape=(8, 8), dtype="uint16")
    g.attrs.update({"multiscales": [{"version": "0.4", "axes": [{"name": "y", "type": "space"},
                                                                 {"name": "x", "type": "space"}],
                                     "datasets": [{"path": "0"}]}]})
    assert get_reader(str(plain)) is None
    assert get_reader(str(tmp_path / "missing.ome.zarr")) is None
    assert get_reader(str(tmp_path / "x.tif")) is None
    unfinished = write_ome_zarr(tmp_path / "u.ome.zarr", _image((20, 20)), axes="YX", pixel_um=0.5)
    (unfinished / ".zattrs").write_text((unfinished / ".zattrs").read_text().replace('"complete": true',
                                                                                      '"complete": false'))
    assert get_reader(str(unfinished)) is None


def test_a_pyramid_opens_as_one_multiscale_layer_placed_by_level_0(make_napari_viewer, tmp_path):
    stack = np.stack([_image((1100, 1030), seed=k) for k in range(2)])
    physical = {"Z": {"scale": 2.0, "translation": 1.0, "unit": "micrometer"},
                **{a: {"scale": 0.325, "translation": t, "unit": "micrometer"} for a, t in zip("YX", (0.5, -0.25))}}
    store = write_ome_zarr(tmp_path / "big.ome.zarr", stack, axes="ZYX", physical=physical)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(store), plugin="napari-refocus")
    assert layer.multiscale and [tuple(d.shape) for d in layer.data] == [(2, 1100, 1030), (2, 550, 515)]
    np.testing.assert_allclose(layer.scale, (2.0, 0.325, 0.325))
    np.testing.assert_allclose(layer.translate, (1.0, 0.5, -0.25))
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    np.testing.assert_array_equal(np.asarray(layer.data[0][1, :5, :5]), stack[1, :5, :5])


def test_a_pyramid_opened_by_this_reader_is_refocused_plane_by_plane(make_napari_viewer, qtbot, tmp_path):
    """What the reader opens, the Refocus widget restores: the store's full-resolution level,
    plane by plane, aligned with it (the widgets once failed on any multiscale layer)."""
    from napari_refocus import refocus
    from napari_refocus.ui import RefocusWidget

    stack = np.stack([_image((1100, 1030), seed=k) for k in range(2)])
    store = write_ome_zarr(tmp_path / "big.ome.zarr", stack, axes="ZYX")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(store), plugin="napari-refocus")
    assert layer.multiscale
    w = RefocusWidget(viewer)
    viewer.window.add_dock_widget(w, name="refocus")
    w.image.value = layer
    w.set_method("rl")
    w.set_values(iterations=2)
    w.run(layer)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    out = viewer.layers[f"{layer.name} [rl]"]
    assert tuple(out.data.shape) == stack.shape
    np.testing.assert_allclose(out.scale, layer.scale)
    plane = np.asarray(out.data[1, :300, :300])
    eager = refocus(stack[1], method="rl", device="cpu", iterations=2, level=out.metadata["parameters"]["level"],
                    optics=out.metadata["parameters"]["optics"]).image
    np.testing.assert_allclose(plane, eager[:300, :300], rtol=1e-4, atol=0.5)
