"""map_pixel_um="auto": each image read at both samplings, the reading DelpNet is surer of kept
(methods.map_choice; measured in BENCHMARKS "Choosing the map pixel")."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.core.optics import Optics, resolve_optics
from napari_refocus.methods.defocus import map_scale
from napari_refocus.methods.map_choice import candidates, is_auto

OIL = dict(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108, psf_model="exact")


def test_auto_is_a_word_of_map_pixel_um_and_nothing_reads_it_unresolved():
    auto = resolve_optics(**OIL, map_pixel_um="auto")
    assert is_auto(auto) and not is_auto(Optics(**OIL))
    with pytest.raises(ValueError, match="auto"):
        map_scale(auto)  # the map's scale exists only once an image chose it
    for bad in ("Auto", "0.65um", ""):
        with pytest.raises(ValueError, match="map_pixel_um"):
            resolve_optics(map_pixel_um=bad)
    # the two readings: lambda/NA first (kept on a tie), then the training images' 0.65 um pixel
    first, second = candidates(auto)
    assert first.map_pixel_um is None and second.map_pixel_um == 0.65
    # the training objective reads alike both ways: one candidate, nothing read twice
    assert [o.map_pixel_um for o in candidates(Optics(map_pixel_um="auto"))] == [None]


def test_auto_on_the_training_objective_is_the_default_run_bit_for_bit():
    from napari_refocus.io.samples import synthetic_pair

    image = synthetic_pair()[0]
    auto = nr.refocus(image, method="lbdvd", optics=Optics(map_pixel_um="auto"), device="cpu")
    plain = nr.refocus(image, method="lbdvd", device="cpu")
    assert np.array_equal(auto.image, plain.image)
    assert not any("chosen automatically" in n for n in auto.notes)


def test_auto_by_flag_and_optics_file(tmp_path, capsys):
    from napari_refocus.cli import main
    from napari_refocus.cli.common import _number_or_auto
    from napari_refocus.io.optics import cli_optics

    assert _number_or_auto(" AUTO ") == "auto" and _number_or_auto("0.65") == 0.65
    values, sources = cli_optics({"map_pixel_um": "auto"})
    assert values["map_pixel_um"] == "auto" and sources["map_pixel_um"] == "flag"
    scope = tmp_path / "scope.json"
    scope.write_text(json.dumps({**OIL, "map_pixel_um": "auto"}))
    values, _ = cli_optics(None, str(scope))
    assert resolve_optics(**values).map_pixel_um == "auto"
    with pytest.raises(SystemExit):
        main(["refocus", str(tmp_path / "none.tif"), "-o", str(tmp_path / "o"), "--map-pixel-um", "bigger"])
    assert "number or auto" in capsys.readouterr().err


@pytest.mark.slow
def test_auto_reads_cells_at_their_physical_size_on_oil_in_memory_and_by_blocks():
    # the shipped in-focus field upscaled 6x: its cells at their physical size on a 60x/1.4 oil camera
    # (0.108 um pixels), blurred 4 um from focus. Matched in lambda/NA the cells look 2.5x larger than
    # DelpNet's training cells: that reading is unsure and mostly wrong; the 0.65 um reading is sure and
    # right, and auto keeps it, in memory and block by block alike
    import dask.array as da
    from physical_support import physical_image, within_one

    base = Optics(**{**OIL, "pixel_um": 0.65 / 6})
    auto, physical = (dataclasses.replace(base, map_pixel_um=v) for v in ("auto", 0.65))
    z = 4.0
    image = physical_image(base, upscale=6, z_um=z, crop=(slice(100, 300), slice(150, 400)))
    within = {name: within_one(image, optics, z)[0] for name, optics in (("lambda/NA", base), ("physical", physical))}
    assert within["physical"] >= 0.9 and within["lambda/NA"] <= within["physical"] - 0.2
    dm = nr.defocus_map(image, optics=auto, beyond_top=False, device="cpu")
    assert dm.optics["map_pixel_um"] == 0.65 and dm.choice.startswith("map pixel chosen automatically: 0.65 um")
    lazy_map = nr.defocus_map(da.from_array(image, chunks=512), optics=auto, beyond_top=False, device="cpu")
    assert np.array_equal(lazy_map.levels, dm.levels) and lazy_map.choice == dm.choice
    got = nr.refocus(image, method="lbdvd", optics=auto, device="cpu")
    want = nr.refocus(image, method="lbdvd", optics=physical, device="cpu")
    assert np.array_equal(got.image, want.image) and any("chosen automatically: 0.65 um" in n for n in got.notes)
    lazy = nr.refocus(da.from_array(image, chunks=512), method="lbdvd", optics=auto, device="cpu")
    assert np.array_equal(np.asarray(lazy.image), got.image)
    assert any("chosen automatically: 0.65 um" in n for n in lazy.notes)


@pytest.mark.slow
def test_auto_reads_lambda_na_alone_when_the_image_is_too_small_for_the_other_reading():
    # 500 columns at 0.108 um are 83 px at 0.65 um: less than one DelpNet patch (84)
    image = np.random.default_rng(1).poisson(300.0, size=(600, 500)).astype(np.uint16)
    auto = nr.refocus(image, method="lbdvd", optics=Optics(**OIL, map_pixel_um="auto"), device="cpu")
    plain = nr.refocus(image, method="lbdvd", optics=Optics(**OIL), device="cpu")
    assert np.array_equal(auto.image, plain.image)
    assert any("lambda/NA" in n and "0.65 um too small to read" in n for n in auto.notes)
