"""Optics from the file, from an optics file and from flags: reading, precedence, sources, and
each route reaching lbdvd through the command line (provenance and JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import napari_refocus as nr
from napari_refocus.cli import main
from napari_refocus.io.optics import cli_optics, load_optics_file, resolve_optics
from napari_refocus.io.read import ome_optics, read_info

OIL = {"na": 1.4, "refractive_index": 1.515, "wavelength_nm": 520.0, "pixel_um": 0.108}


def ome_xml(*, objectives='<Objective ID="Objective:0" LensNA="1.4" Immersion="Oil"/>', settings="",
            channels='<Channel ID="Channel:0:0" EmissionWavelength="520" SamplesPerPixel="1"/>',
            size="PhysicalSizeX=\"108\" PhysicalSizeXUnit=\"nm\"", shape=(256, 256), dtype="uint16") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        f'<Instrument ID="Instrument:0">{objectives}</Instrument><Image ID="Image:0">'
        f'<InstrumentRef ID="Instrument:0"/>{settings}<Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        f'Type="{dtype}" SizeX="{shape[1]}" SizeY="{shape[0]}" SizeC="1" SizeZ="1" SizeT="1" {size}>'
        f'{channels}<TiffData/></Pixels></Image></OME>'
    )


def write_ome(path, data, **kw):
    tifffile.imwrite(path, data, description=ome_xml(shape=data.shape, dtype=data.dtype.name, **kw), metadata=None)
    return path


@pytest.fixture(scope="module")
def field():
    """A 256x256 uint16 field of the sample (large enough for DelpNet at 0.108 um / NA 1.4)."""
    from napari_refocus.io.samples import synthetic_pair

    blurred = synthetic_pair()[0]
    return np.ascontiguousarray(np.asarray(blurred)[:256, 300:556])


# ------------------------------------------------------------------------------ from the file
def test_ome_optics_objective_immersion_and_emission(tmp_path):
    data = np.zeros((32, 48), np.uint16)
    info = nr.read_image(write_ome(tmp_path / "a.ome.tif", data))[1]
    assert info["optics"] == pytest.approx(OIL)
    assert info["optics_source"] == dict.fromkeys(OIL, "file")
    assert read_info(tmp_path / "a.ome.tif")["optics"] == pytest.approx(OIL)


def test_ome_optics_settings_pick_the_objective_and_set_the_index():
    two = '<Objective ID="Objective:0" LensNA="0.3" Immersion="Air"/><Objective ID="Objective:1" LensNA="1.2" ' \
          'Immersion="Water"/>'
    got = ome_optics(ome_xml(objectives=two, settings='<ObjectiveSettings ID="Objective:1"/>'))
    assert got["na"] == 1.2 and got["refractive_index"] == pytest.approx(1.333)
    got = ome_optics(ome_xml(objectives=two, settings='<ObjectiveSettings ID="Objective:1" RefractiveIndex="1.34"/>'))
    assert got["refractive_index"] == pytest.approx(1.34)
    # two objectives and no settings: the NA is not guessed
    assert "na" not in ome_optics(ome_xml(objectives=two))
    glycerol = ome_optics(ome_xml(objectives='<Objective ID="O" LensNA="1.3" Immersion="Glycerol"/>'))
    assert glycerol["refractive_index"] == pytest.approx(1.47)


def test_ome_emission_units_and_missing_values():
    um = ome_optics(ome_xml(channels='<Channel ID="C" EmissionWavelength="0.61" EmissionWavelengthUnit="µm"/>'))
    assert um["wavelength_nm"] == pytest.approx(610.0)
    two = '<Channel ID="C0" EmissionWavelength="450"/><Channel ID="C1" EmissionWavelength="600"/>'
    assert ome_optics(ome_xml(channels=two))["wavelength_nm"] == 450.0  # the first channel
    assert ome_optics(ome_xml(channels=two), channel=1)["wavelength_nm"] == 600.0
    bare = ome_optics(ome_xml(objectives="", channels='<Channel ID="C"/>', size=""))
    assert bare == {}
    assert ome_optics("<not xml") == {}


def test_plain_tiff_and_png_have_only_what_they_state(tmp_path):
    p = nr.write_image(tmp_path / "a.tif", np.zeros((8, 8), np.uint16), pixel_um=0.2)
    info = nr.read_image(p)[1]
    assert info["optics"] == {"pixel_um": pytest.approx(0.2)} and info["optics_source"] == {"pixel_um": "file"}
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert nr.read_image(tmp_path / "a.png")[1]["optics"] == {}


# ------------------------------------------------------------------------------ optics files
def test_load_optics_file_plain_and_calibration(tmp_path):
    plain = tmp_path / "scope.json"
    plain.write_text(json.dumps({"na": 0.95, "pixel_um": 0.16, "psf_model": "exact"}))
    assert load_optics_file(plain) == {"na": 0.95, "pixel_um": 0.16, "psf_model": "exact"}
    calib = tmp_path / "calibration.json"
    calib.write_text(json.dumps({"optics": {"na": 0.75, "pixel_um": 0.325}, "fitted": {"rms": 0.1}}))
    assert load_optics_file(calib) == {"na": 0.75, "pixel_um": 0.325}


@pytest.mark.parametrize("content, message", [
    ({"NA": 1.4}, "unknown key 'NA'; valid keys: wavelength_nm, na, refractive_index"),
    ({"na": "1.4"}, "na must be a number"),
    ({"psf_model": "vectorial"}, "psf_model must be one of paraxial, exact"),
    ([1, 2], "must hold a JSON object"),
])
def test_bad_optics_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as err:
        load_optics_file(path)
    assert "\n" not in str(err.value)


def test_precedence_flag_over_optics_file_over_file_over_default(tmp_path):
    scope = tmp_path / "scope.json"
    scope.write_text(json.dumps({"na": 1.3, "refractive_index": 1.515, "wavelength_nm": 600}))
    info = {"optics": {"na": 1.4, "wavelength_nm": 520.0, "pixel_um": 0.108}}
    values, sources = cli_optics({"na": 1.2}, scope, info)
    assert values == {"na": 1.2, "refractive_index": 1.515, "wavelength_nm": 600, "pixel_um": 0.108,
                      "level_step_um": 2.0, "psf_model": "exact"}
    assert sources == {"na": "flag", "refractive_index": "optics-file", "wavelength_nm": "optics-file",
                       "pixel_um": "file", "level_step_um": "default", "psf_model": "default"}
    with pytest.raises(ValueError, match=r"na \(1.4\) must be smaller.*na 1.4 from file"):
        resolve_optics(("file", {"na": 1.4}))


def test_batch_worker_takes_the_optics_file_read_once(tmp_path):
    from napari_refocus.io.batch import process_image

    src = nr.write_image(tmp_path / "a.tif", np.full((64, 64), 100, np.uint16), pixel_um=0.3)
    rec = process_image(src, tmp_path / "out", method="rl", params={"level": 1, "iterations": 1},
                        optics={"na": 0.45}, optics_file={"na": 0.4, "wavelength_nm": 500})
    assert rec["optics"]["na"] == 0.45 and rec["optics"]["wavelength_nm"] == 500
    assert {k: rec["optics_source"][k] for k in ("na", "wavelength_nm", "pixel_um")} == {
        "na": "flag", "wavelength_nm": "optics-file", "pixel_um": "file"}


def test_batch_summary_gives_the_optics_when_every_image_used_the_same():
    from napari_refocus.io.batch import common_optics

    a = {"optics": {"na": 0.5}, "optics_source": {"na": "flag"}}
    assert common_optics([a, dict(a), {"status": "failed"}]) == {"optics": {"na": 0.5}, "optics_source": {"na": "flag"}}
    b = {"optics": {"na": 0.5}, "optics_source": {"na": "file"}}
    assert common_optics([a, b]) == {"optics": "per image: see report.json"}
    assert common_optics([{"status": "failed"}]) == {}


# ------------------------------------------------------------------------------ through the CLI
def _run(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_optics_by_flags_optics_file_and_ome_reach_lbdvd(tmp_path, capsys, field):
    plain = nr.write_image(tmp_path / "plain.tif", field)
    ome = write_ome(tmp_path / "ome.tif", field)
    scope = tmp_path / "oil.json"
    scope.write_text(json.dumps(OIL))
    flags = ["--na", "1.4", "--refractive-index", "1.515", "--wavelength-nm", "520", "--pixel-um", "0.108"]
    common = ["--iterations", "2", "--device", "cpu", "-q"]
    runs = {
        "flag": _run(capsys, "refocus", str(plain), "-o", str(tmp_path / "a"), *flags, *common),
        "optics-file": _run(capsys, "refocus", str(plain), "-o", str(tmp_path / "b"), "--optics", str(scope), *common),
        "file": _run(capsys, "refocus", str(ome), "-o", str(tmp_path / "c"), *common),
    }
    for source, rec in runs.items():
        assert rec["optics"] == pytest.approx({**OIL, "level_step_um": 2.0, "psf_model": "exact"}), source
        assert rec["optics_source"] == {**dict.fromkeys(OIL, source), "level_step_um": "default",
                                        "psf_model": "default"}
        arr, info = nr.read_image(rec["output"])
        used = info["metadata"]["parameters"]["optics"]
        assert {k: used[k] for k in OIL} == pytest.approx(OIL), source
        assert info["metadata"]["optics_source"]["na"] == source
        assert info["pixel_um"] == pytest.approx(0.108)
    # the same optics by any route: the same result
    outs = [nr.read_image(rec["output"])[0] for rec in runs.values()]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    # a flag overrides the optics file, which overrides the file's metadata
    rec = _run(capsys, "refocus", str(ome), "-o", str(tmp_path / "d"), "--optics", str(scope), "--psf-model",
               "exact", "--method", "rl", "--level", "1", *common)
    assert rec["optics_source"]["psf_model"] == "flag" and rec["optics_source"]["na"] == "optics-file"
    assert nr.read_image(rec["output"])[1]["metadata"]["parameters"]["optics"]["psf_model"] == "exact"


@pytest.mark.slow
def test_defocus_map_command_reports_um_for_the_optics(tmp_path, capsys, field):
    ome = write_ome(tmp_path / "ome.tif", field)
    rec = _run(capsys, "defocus-map", str(ome), "-o", str(tmp_path / "maps"), "--device", "cpu", "-q")
    assert rec["optics_source"]["na"] == "file" and rec["scale"] == pytest.approx(2.48, abs=0.02)
    assert rec["class_defocus_um"][0] == 0 and rec["class_defocus_um"][-1] < 10  # oil: far less than 20 um
    assert rec["focus_defocus_um"] == pytest.approx(np.interp(rec["focus_level"], range(11), rec["class_defocus_um"]),
                                                    abs=1e-3)
    import csv

    rows = list(csv.DictReader(open(rec["patches"])))
    assert "defocus_um" in rows[0]
    assert sorted({int(r["x0"]) for r in rows}) == [0, round(42 * rec["scale"])]  # native pixels
    meta = nr.read_image(rec["levels"])[1]["metadata"]
    assert meta["scale"] == pytest.approx(rec["scale"]) and meta["optics"]["na"] == 1.4
    # a map on a resampled grid is refused by deconvolve rather than misplaced
    assert main(["deconvolve", str(ome), "-o", str(tmp_path / "d.tif"), "--level-map", rec["levels"]]) == 2
    assert "resampled grid" in capsys.readouterr().err


def test_simulate_and_deconvolve_print_their_optics(tmp_path, capsys):
    img = (np.random.default_rng(0).random((64, 64)) * 1000).astype(np.uint16)
    src = nr.write_image(tmp_path / "a.tif", img, pixel_um=0.65)
    scope = tmp_path / "s.json"
    scope.write_text(json.dumps({"wavelength_nm": 500}))
    rec = _run(capsys, "simulate", str(src), "-o", str(tmp_path / "s.tif"), "--level", "1", "--optics", str(scope),
               "--na", "0.45")
    assert rec["optics"]["wavelength_nm"] == 500 and rec["optics"]["na"] == 0.45
    assert rec["optics_source"] == {"wavelength_nm": "optics-file", "na": "flag", "pixel_um": "file",
                                    "refractive_index": "default", "level_step_um": "default", "psf_model": "default"}
    assert nr.read_image(tmp_path / "s.tif")[1]["metadata"]["optics"]["na"] == 0.45
    rec = _run(capsys, "deconvolve", str(src), "-o", str(tmp_path / "d.tif"), "--level", "1", "--iterations", "1",
               "--device", "cpu", "-q")
    assert rec["optics_source"]["pixel_um"] == "file" and rec["optics_source"]["na"] == "default"


def test_optics_errors_are_one_line(tmp_path, capsys):
    src = nr.write_image(tmp_path / "a.tif", np.zeros((96, 96), np.uint16))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Na": 1.0}))
    for extra in (["--optics", str(bad)], ["--na", "1.4"], ["--optics", str(tmp_path / "missing.json")]):
        assert main(["refocus", str(src), "-o", str(tmp_path / "o"), "--method", "rl", "--level", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
