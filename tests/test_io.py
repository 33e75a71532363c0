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


def test_reads_real_lzw_bbbc006():
    from napari_refocus.io.samples import real_defocused_image

    img = real_defocused_image()
    assert img.shape == (520, 696) and img.dtype == np.uint16
