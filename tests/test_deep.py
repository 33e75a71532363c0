"""Defocus beyond DelpNet's top class (methods.deep): the second reading at half the sampling.

The shipped in-focus field blurred past the top class (20 um at the paper's objective) must be
read there as more than 20 um, lbdvd must restore it better than at the top class, nothing
changes where no patch is at the top class, and the block form must equal the image in memory.
"""

from pathlib import Path

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.core.metrics import metrics
from napari_refocus.core.optics import Optics
from napari_refocus.io.samples import infocus_image
from napari_refocus.methods import class_table

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "delpnet.safetensors"
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(), reason="weights/delpnet.safetensors not installed")
#: 2 um per level up to 32 um, a PSF window wide enough for it (the forward model's, not lbdvd's)
DEEP = Optics(n_levels=17, psf_size=81)


def test_coarse_tables_are_what_the_procedure_measures():
    # the shipped constants are a cache of class_table's own measurement at half the sampling
    for optics, (_, table) in class_table.KNOWN_COARSE.items():
        measured = class_table._table.__wrapped__(optics, 2)
        np.testing.assert_allclose(measured, table, atol=1e-6)
        assert class_table.response_table(optics, coarse=2) == table
        assert table[0] == 0.0 and np.all(np.diff(table) > 0)
        # the half-size reading reaches beyond the top class: 32 um lies inside its classes
        assert table[-1] > 34.0 and table[5] < 20.0 < table[7]


@pytest.fixture(scope="module")
def field():
    return infocus_image()


def _gain(out, inp, gt):
    dr = float(np.ptp(gt))
    return (metrics(np.asarray(out, np.float32), gt, data_range=dr)["psnr"]
            - metrics(inp.astype(np.float32), gt, data_range=dr)["psnr"])


@needs_weights
def test_defocus_beyond_the_top_class_is_read_and_deconvolved_there(field):
    gt = field.astype(np.float32)
    inp = nr.simulate(field, level=14, optics=DEEP, seed=3)  # 28 um, the default (exact) PSF
    m = nr.defocus_map(inp, device="cpu")
    fg = m.levels < 11
    assert (m.levels[fg] >= 9).mean() > 0.8, "the map alone saturates at the top class"
    um = m.defocus_map_um()[fg]
    assert m.coarse is not None and m.coarse.deep.mean() > 0.5
    assert 24.0 <= float(np.median(um)) <= 32.7, np.median(um)
    rows = m.to_rows()
    assert max(r["defocus_um"] for r in rows if r["level"] != "bg") > 25.0  # the CSV says so too
    from napari_refocus.ui.overlay import beyond_range_um, legend_html, overlay_features, summary_text

    lo, hi = beyond_range_um(m)
    assert 20.0 < lo <= hi <= 36.0
    assert "read beyond" in legend_html(m.defocus_um, beyond=(lo, hi)) and "beyond it" in summary_text(m)
    assert np.nanmax(overlay_features(m)["defocus_um"]) > 25.0  # the hover text
    deep = nr.refocus(inp, method="lbdvd", device="cpu")
    top = nr.refocus(inp, method="lbdvd", device="cpu", beyond_top=False)
    assert any("beyond the top class" in n for n in deep.notes), deep.notes
    g_deep, g_top = _gain(deep.image, inp, gt), _gain(top.image, inp, gt)
    # measured on this field: +0.98 / +0.18 dB (held-out fields at 28 um: +1.24..+1.50 / +0.39..+0.46,
    # BENCHMARKS.md "Defocus beyond the top class")
    assert g_deep > g_top + 0.5 and g_deep > 0.7, (g_deep, g_top)


@needs_weights
def test_nothing_changes_without_a_patch_at_the_top_class(field):
    inp = nr.simulate(field, level=5, optics=DEEP, seed=4)  # 10 um
    m = nr.defocus_map(inp, device="cpu")
    assert m.coarse is None and not (m.levels == 10).any()
    a = nr.refocus(inp, method="lbdvd", device="cpu").image
    b = nr.refocus(inp, method="lbdvd", device="cpu", beyond_top=False).image
    np.testing.assert_array_equal(a, b)


@needs_weights
def test_blocks_beyond_the_top_class_equal_in_memory(field):
    """A field tilted from 12 to 32 um, 400 x 520 px, in blocks of 126 px (the last row of blocks
    is 22 px thin: its frames are mirrored from the image itself, canonical_blocks.read_region)."""
    da = pytest.importorskip("dask.array")
    from napari_refocus.bigimage import iter_method_blocks

    gt = np.tile(field, (2, 2))[:400, :520]
    img = nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=6, high=16), seed=0, optics=DEEP)
    eager = nr.refocus(img, method="lbdvd", device="cpu")
    reading = eager.defocus_map.coarse
    assert reading is not None and 3 <= reading.deep.sum() < reading.deep.size
    out = np.full(img.shape, np.nan, np.float32)
    for _, (y0, y1, x0, x1), block in iter_method_blocks(img, "lbdvd", device="cpu", block=126):
        out[y0:y1, x0:x1] = block
    np.testing.assert_array_equal(out, eager.image)
    # lazily through dask, each block reading only its halo (core.tiling.Region raises beyond it)
    from napari_refocus.bigimage import lazy_method

    run = lazy_method(da.from_array(img, chunks=(224, 224)), "lbdvd", device="cpu", block=224)
    np.testing.assert_array_equal(np.asarray(run), eager.image)
    # the map of a lazy image, a rectangle at a time, has the same coarse reading as in memory
    lazy = nr.defocus_map(da.from_array(img, chunks=(200, 200)), device="cpu")
    ref = nr.defocus_map(img, device="cpu")
    assert ref.coarse.deep.any()
    np.testing.assert_array_equal(lazy.coarse.levels, ref.coarse.levels)
    np.testing.assert_array_equal(lazy.coarse.deep, ref.coarse.deep)
    np.testing.assert_array_equal(lazy.defocus_map_um(), ref.defocus_map_um())


@needs_weights
def test_defocus_map_command_records_the_second_reading(tmp_path, capsys, field):
    import csv
    import json

    from napari_refocus.cli import main

    path = nr.write_image(tmp_path / "deep.tif", nr.simulate(field, level=14, optics=DEEP, seed=5))
    assert main(["defocus-map", str(path), "-o", str(tmp_path / "maps"), "--device", "cpu", "-q"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    beyond = rec["beyond_top"]
    assert beyond["deep_patches"] > 0 and beyond["deep_defocus_um"][1] > 24.0
    assert nr.read_image(rec["levels"])[1]["metadata"]["beyond_top"] == beyond
    um = [float(r["defocus_um"]) for r in csv.DictReader(open(rec["patches"])) if r["level"] != "bg"]
    assert max(um) == pytest.approx(beyond["deep_defocus_um"][1], abs=1e-3)
