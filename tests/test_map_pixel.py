"""The defocus map's own pixel size (Optics.map_pixel_um): cells kept at the physical size of
DelpNet's training images instead of matched in lambda/NA (benchmarks/object_scale.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.core.optics import Optics, resolve_optics
from napari_refocus.methods.defocus import CANONICAL, map_frame, map_scale
from napari_refocus.methods.frames import rl_frame

UP = 3
#: 40x/0.95 air with pixels 3x finer than the training images' 0.65 um
AIR = dict(na=0.95, refractive_index=1.0, wavelength_nm=451.0, pixel_um=0.65 / UP)


def test_map_pixel_sets_the_maps_scale_and_rl_grid():
    default, physical = Optics(**AIR), Optics(**AIR, map_pixel_um=0.65)
    assert map_scale(default) == pytest.approx(Optics().sampling / default.sampling)  # lambda/NA, unchanged
    assert map_scale(physical) == pytest.approx(UP)
    frame = rl_frame(physical)
    assert frame.scale == pytest.approx(UP) and frame.patch == 84 * UP and frame.context == 13 * UP
    # the classes are measured at that sampling: the same blur reads as more defocus for cells 3x larger
    assert map_frame(physical)[1][-1] > 1.5 * map_frame(default)[1][-1]
    # the training objective at its own pixel size is never resampled and keeps its exact classes
    assert map_scale(Optics(map_pixel_um=0.65)) == 1.0
    assert map_frame(Optics(map_pixel_um=0.65))[1] == map_frame(Optics())[1]
    assert map_frame(dataclasses.replace(CANONICAL, map_pixel_um=0.65))[1] == tuple(2.0 * L for L in range(11))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_bad_map_pixel_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="map_pixel_um"):
        resolve_optics(map_pixel_um=bad)


@pytest.mark.slow
def test_cells_at_their_physical_size_are_read_right_at_the_training_pixel():
    # the shipped in-focus field upscaled 3x: its cells at their physical size on a 40x/0.95 camera
    # (0.217 um pixels), blurred at the defocus the physical map reads as class 4 (3.9 um). Matched in
    # lambda/NA the cells look 1.9x larger than DelpNet's training cells and the map reads too high
    # (measured: 62 % within one class); at 0.65 um map pixels, 100 %
    from physical_support import physical_image, within_one

    physical, default = Optics(**AIR, map_pixel_um=0.65), Optics(**AIR)
    z = map_frame(physical)[1][4]
    image = physical_image(physical, upscale=UP, z_um=z)
    within = {}
    for name, optics in (("physical", physical), ("default", default)):
        within[name], dm = within_one(image, optics, z)
        assert dm.scale == pytest.approx(map_scale(optics), rel=0.01)
    assert within["physical"] >= 0.9
    assert within["default"] <= within["physical"] - 0.2


def test_map_pixel_by_flag_and_optics_file_reaches_the_record(tmp_path, capsys):
    from napari_refocus.cli import main
    from napari_refocus.io.optics import cli_optics

    values, sources = cli_optics({"map_pixel_um": 0.65})
    assert values["map_pixel_um"] == 0.65 and sources["map_pixel_um"] == "flag"
    scope = tmp_path / "scope.json"
    scope.write_text(json.dumps({**AIR, "map_pixel_um": 0.65}))
    values, sources = cli_optics(None, str(scope))
    assert values["map_pixel_um"] == 0.65 and sources["map_pixel_um"] == "optics-file"
    assert main(["refocus", str(tmp_path / "none.tif"), "-o", str(tmp_path / "o"), "--map-pixel-um", "0"]) == 2
    assert "map_pixel_um" in capsys.readouterr().err


def test_a_map_read_at_a_coarse_pixel_is_reused_by_lbdvd():
    # 60x/1.4 oil at 0.108 um read at 0.65 um map pixels: 520 rows become 86 map rows, which are
    # 517.6 native rows; a map handed back to lbdvd was refused as made for another image
    oil = Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108, map_pixel_um=0.65)
    image = np.random.default_rng(0).poisson(200.0, size=(520, 696)).astype(np.uint16)
    dm = nr.defocus_map(image, optics=oil, device="cpu")
    assert dm.grid.image_shape == (86, 116)
    again = nr.refocus(image, method="lbdvd", optics=oil, defocus_map=dm, device="cpu")
    assert again.image.shape == image.shape
    with pytest.raises(ValueError, match="made for an image"):
        nr.refocus(image[:500], method="lbdvd", optics=oil, defocus_map=dm, device="cpu")
