"""Microscope formats on the command line: OME-TIFF and ImageJ hyperstacks keep their axes and
pixel sizes through to an OME-Zarr output, and CZI/ND2/LIF without bioio are a one-line error
that names the extra to install. (No CZI, ND2 or LIF example file is reachable here, so a real
bioio read is not tested; the bioio adapter is tested with a stand-in bioio module.)"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pytest
import tifffile

from napari_refocus.cli import main
from napari_refocus.io import open_ome_zarr
from napari_refocus.io.formats import info_any, output_name, read_any
from napari_refocus.methods import register, unregister
from napari_refocus.methods.base import Method
from napari_refocus.methods.params import Params


def _plus_one(image, params, *, device, report):
    yield from ()
    return np.asarray(image, np.float32) + 1


@pytest.fixture
def plus_one():
    m = Method(name="test-plus-one", title="+1", description="adds one",
               schema=dataclass(frozen=True)(type("P", (Params,), {})), run=_plus_one, halo=0)
    register(m)
    yield m
    unregister(m.name)


def _stack(shape, seed=0):
    return np.random.default_rng(seed).integers(100, 4000, shape).astype(np.uint16)


def test_imagej_hyperstack_to_ome_zarr_keeps_axes_and_pixel_size(tmp_path, plus_one):
    data = _stack((3, 2, 40, 50))  # ImageJ order Z, C, Y, X
    src = tmp_path / "hyper.tif"
    tifffile.imwrite(src, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "um", "axes": "ZCYX"})
    assert info_any(src)["axes"] == "ZCYX" and info_any(src)["pixel_um"] == pytest.approx(0.2)
    assert main(["refocus", str(src), "-o", str(tmp_path / "out"), "--method", "test-plus-one",
                 "--format", "ome-zarr", "-q"]) == 0
    got, info = open_ome_zarr(tmp_path / "out" / "hyper_refocused.ome.zarr")
    assert info["axes"] == "CZYX"  # NGFF order: channel before space
    assert info["pixel_um"] == pytest.approx(0.2) and info["physical"]["Y"]["scale"] == pytest.approx(0.2)
    np.testing.assert_array_equal(np.asarray(got), np.transpose(data, (1, 0, 2, 3)) + 1)


def test_ome_tiff_pixel_size_in_nm_reaches_the_ome_zarr_in_um(tmp_path, plus_one):
    data = _stack((2, 48, 56))
    src = tmp_path / "t.ome.tif"
    tifffile.imwrite(src, data, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 108.0, "PhysicalSizeXUnit": "nm",
                                                    "PhysicalSizeY": 108.0, "PhysicalSizeYUnit": "nm"})
    image, info = read_any(src)
    assert info["axes"] == "TYX" and info["pixel_um"] == pytest.approx(0.108)
    out = tmp_path / "t.ome.zarr"
    assert main(["refocus", str(src), "-o", str(out), "--method", "test-plus-one", "-q"]) == 0
    got, zinfo = open_ome_zarr(out)
    assert zinfo["axes"] == "TYX" and zinfo["pixel_um"] == pytest.approx(0.108)
    assert zinfo["physical"]["X"]["unit"] == "micrometer"
    np.testing.assert_array_equal(np.asarray(got), image + 1)
    assert output_name(src, "_refocused", "ome-zarr") == "t.ome_refocused.ome.zarr"
    assert output_name(out, "_refocused", "tiff") == "t_refocused.tif"


@pytest.mark.parametrize("suffix", [".czi", ".nd2", ".lif"])
def test_bioio_formats_without_bioio_name_the_extra(tmp_path, monkeypatch, capsys, suffix):
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if not installed
    src = tmp_path / f"scan{suffix}"
    src.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r'pip install "napari-refocus\[formats\]"'):
        read_any(src)
    assert main(["refocus", str(src), "-o", str(tmp_path / "out"), "--method", "rl", "--level", "2", "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "napari-refocus[formats]" in err and suffix in err


def test_bioio_path_keeps_axes_and_pixel_size_through_to_the_output(tmp_path, monkeypatch, plus_one):
    """The bioio adapter (io/bioio_reader.py) with a stand-in ``bioio`` module that answers as
    bioio 3 does (``dims.order``, ``physical_pixel_sizes`` in um, ``dask_data`` in TCZYX): the
    axes, the pixel size and the pixels reach the command's OME-Zarr output. This checks our
    adapter only; no real CZI/ND2/LIF file is read here."""
    import types

    import dask.array as da

    data = _stack((1, 2, 3, 40, 50))  # T, C, Z, Y, X

    class _Sizes:
        Z, Y, X = 0.5, 0.325, 0.325

    class _BioImage:
        def __init__(self, path):
            self.path = path
            self.dims = types.SimpleNamespace(order="TCZYX")
            self.physical_pixel_sizes = _Sizes()
            self.dask_data = da.from_array(data, chunks=(1, 1, 1, 40, 50))

    monkeypatch.setitem(sys.modules, "bioio", types.SimpleNamespace(BioImage=_BioImage))
    src = tmp_path / "scan.czi"
    src.write_bytes(b"read by the stand-in")
    image, info = read_any(src)
    assert info["axes"] == "TCZYX" and info["pixel_um"] == pytest.approx(0.325)
    np.testing.assert_array_equal(image, data)
    out = tmp_path / "scan.ome.zarr"
    assert main(["refocus", str(src), "-o", str(out), "--method", "test-plus-one", "-q"]) == 0
    got, zinfo = open_ome_zarr(out)
    assert zinfo["pixel_um"] == pytest.approx(0.325)
    assert zinfo["physical"]["Z"]["scale"] == pytest.approx(0.5)
    assert zinfo["axes"] == "TCZYX", zinfo["axes"]
    np.testing.assert_array_equal(np.asarray(got), data + 1)
