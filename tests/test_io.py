import numpy as np
import pytest
import tifffile

import napari_refocus as nr


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32])
def test_roundtrip_dtype_and_pixel_size(tmp_path, dtype):
    data = (np.random.default_rng(0).random((30, 40)) * 200).astype(dtype)
    path = nr.write_image(tmp_path / "a.tif", data, pixel_um=0.325, metadata={"method": "x"})
    back, info = nr.read_image(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, data)
    assert info["pixel_um"] == pytest.approx(0.325)
    assert info["metadata"]["method"] == "x"


def test_imagej_pixel_size_is_read(tmp_path):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint16), imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "um"})
    assert nr.read_image(p)[1]["pixel_um"] == pytest.approx(0.5)


def test_pixel_sizes_read_from_resolutions_carry_no_binary_noise(tmp_path):
    """1 / (1 / 0.325) is 0.32499999999999996 in floating point: the size read back is 0.325, as
    the CLI's JSON, the widgets and the provenance print it."""
    ij, cm = tmp_path / "ij.tif", tmp_path / "cm.tif"
    tifffile.imwrite(ij, np.zeros((8, 8), np.uint16), imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"unit": "micron"})
    tifffile.imwrite(cm, np.zeros((8, 8), np.uint16), resolution=(1e4 / 0.325, 1e4 / 0.325), resolutionunit="CENTIMETER")
    written = nr.write_image(tmp_path / "w.tif", np.zeros((8, 8), np.uint16), pixel_um=0.1083)
    assert [nr.read_image(p)[1]["pixel_um"] for p in (ij, cm, written)] == [0.325, 0.325, 0.1083]


def test_no_pixel_size(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint16))
    assert nr.read_image(p)[1]["pixel_um"] is None


def test_never_overwrites(tmp_path):
    p = nr.write_image(tmp_path / "a.tif", np.ones((4, 4), np.uint16))
    with pytest.raises(ValueError, match="exists"):
        nr.write_image(p, np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="input"):
        nr.write_image(p, np.zeros((4, 4), np.uint16), overwrite=True, protect=[p])
    assert nr.read_image(p)[0].max() == 1
    assert [f.name for f in tmp_path.iterdir()] == ["a.tif"]  # no temporary files left


def test_missing_file():
    with pytest.raises(ValueError, match="no such file"):
        nr.read_image("/nonexistent/x.tif")


def test_a_file_that_is_no_image_says_so(tmp_path):
    """A text file handed over by mistake: the error says what the file is not, not only the
    words of whichever imageio plugin tried last."""
    from napari_refocus.io.read import read_image

    path = tmp_path / "notes.txt"
    path.write_text("hi")
    with pytest.raises(ValueError, match=r"cannot read .*notes.txt: not an image file that TIFF, OME-Zarr or"):
        read_image(path)


def test_reads_real_lzw_bbbc006():
    from napari_refocus.io.samples import real_defocused_image

    img = real_defocused_image()
    assert img.shape == (520, 696) and img.dtype == np.uint16


@pytest.mark.parametrize("size, unit, want", [(325.0, "nm", 0.325), (0.5, None, 0.5), (0.5, "µm", 0.5),
                                              (0.001, "mm", 1.0), (2.0, "parsec", None)])
def test_ome_pixel_size_with_its_unit(tmp_path, size, unit, want):
    p = tmp_path / "a.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": size}
    if unit:
        meta["PhysicalSizeXUnit"] = unit
    tifffile.imwrite(p, np.zeros((2, 8, 8), np.uint16), ome=True, metadata=meta)
    arr, info = nr.read_image(p)
    assert arr.shape == (2, 8, 8) and info["axes"] == "ZYX"
    assert info["pixel_um"] == (pytest.approx(want) if want else None)


@pytest.mark.parametrize("unit, want", [("micron", 0.5), ("\\u00B5m", 0.5), ("nm", 0.0005), ("inch", None)])
def test_imagej_units(tmp_path, unit, want):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.zeros((3, 2, 8, 8), np.uint16), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": unit, "axes": "ZCYX"})
    arr, info = nr.read_image(p)
    assert info["axes"] == "ZCYX" and arr.shape == (3, 2, 8, 8)
    assert info["pixel_um"] == (pytest.approx(want) if want else None)


def test_tiff_resolution_in_inches_is_not_a_pixel_size(tmp_path):
    p = tmp_path / "dpi.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8), resolution=(300, 300), resolutionunit="INCH")
    assert nr.read_image(p)[1]["pixel_um"] is None


def test_axes_of_plain_files(tmp_path):
    import imageio.v3 as iio

    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((4, 8, 9), np.uint16), photometric="minisblack")
    iio.imwrite(tmp_path / "rgba.png", np.zeros((8, 9, 4), np.uint8))
    iio.imwrite(tmp_path / "grey.png", np.zeros((8, 9), np.uint8))
    assert nr.read_image(tmp_path / "rgb.tif")[1]["axes"] == "YXS"
    assert nr.read_image(tmp_path / "pages.tif")[1]["axes"] == "ZYX"  # tifffile's Q/I: one unnamed axis is Z
    assert nr.read_image(tmp_path / "rgba.png")[1]["axes"] == "YXS"
    assert nr.read_image(tmp_path / "grey.png")[1]["axes"] == "YX"
    assert nr.read_image(tmp_path / "pages.tif", axes="tyx")[1]["axes"] == "TYX"
    with pytest.raises(ValueError, match="Y exactly once"):
        nr.read_image(tmp_path / "pages.tif", axes="ZXX")


@pytest.mark.parametrize("shape, axes, photometric", [((3, 8, 9), "ZYX", "MINISBLACK"), ((8, 9, 3), None, "RGB"),
                                                      ((2, 8, 9, 4), "ZYXS", "RGB"), ((2, 3, 8, 9), "TCYX", "MINISBLACK")])
def test_write_keeps_axes(tmp_path, shape, axes, photometric):
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    p = nr.write_image(tmp_path / "a.tif", data, axes=axes, pixel_um=0.2, metadata={"method": "x"})
    back, info = nr.read_image(p)
    np.testing.assert_array_equal(back, data)
    assert info["axes"] == (axes or "YXS") and info["pixel_um"] == pytest.approx(0.2)
    assert info["metadata"]["method"] == "x"
    with tifffile.TiffFile(p) as tif:
        assert tif.pages[0].photometric.name == photometric
