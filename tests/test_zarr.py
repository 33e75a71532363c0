"""OME-Zarr in and out: NGFF metadata, lazy reading, block-by-block writing, atomic and
resumable stores, the defocus map on its patch grid, and what napari-ome-zarr makes of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.api import is_lazy
from napari_refocus.io import open_ome_zarr, read_ome_zarr_info, write_ome_zarr
from napari_refocus.io.pipeline import defocus_map_file, refocus_file
from napari_refocus.io.zarr import partial_path
from napari_refocus.io.zarr_write import PROGRESS_NAME, refocus_to_ome_zarr
from napari_refocus.methods import register, unregister
from napari_refocus.methods.base import Method
from napari_refocus.methods.params import Params

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
RL = {"level": 3, "iterations": 3}


def _image(shape=(300, 400), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = 800 + 600 * np.sin(x / 17.0) * np.cos(y / 23.0)
    return np.clip(base + rng.normal(0, 30, shape), 0, 65535).astype(np.uint16)


def _attrs(path):
    return json.loads((Path(path) / ".zattrs").read_text())


def _levels(path):
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return [np.asarray(g[d["path"]]) for d in _attrs(path)["multiscales"][0]["datasets"]]


def test_written_store_has_ngff_axes_scales_pyramid_and_provenance(tmp_path):
    stack = np.stack([_image((1100, 1300), seed=k) for k in range(2)])
    out = write_ome_zarr(tmp_path / "s.ome.zarr", stack, axes="ZYX", pixel_um=0.325, metadata={"who": "test"})
    assert not partial_path(out).exists()
    ms = _attrs(out)["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [(a["name"], a["type"], a.get("unit")) for a in ms["axes"]] == [
        ("z", "space", None), ("y", "space", "micrometer"), ("x", "space", "micrometer")]
    levels = _levels(out)
    assert [lv.shape for lv in levels] == [(2, 1100, 1300), (2, 550, 650)]  # until both sides < 1024
    # level 1 = 2x2 means; its pixel centres sit between the level-0 centres they average
    np.testing.assert_array_equal(levels[1][0, :3, :3], np.rint(
        stack[0, :6, :6].reshape(3, 2, 3, 2).astype(float).mean(axis=(1, 3))).astype(np.uint16))
    t1 = ms["datasets"][1]["coordinateTransformations"]
    assert t1[0] == {"type": "scale", "scale": [1.0, 0.65, 0.65]}
    assert t1[1]["translation"] == pytest.approx([0.0, 0.1625, 0.1625])
    data, info = open_ome_zarr(out)
    assert is_lazy(data) and info["axes"] == "ZYX" and info["pixel_um"] == pytest.approx(0.325)
    np.testing.assert_array_equal(np.asarray(data), stack)
    assert info["metadata"] == {"who": "test", "complete": True}


def _foreign_store(path, *, version, unit, scale, zarr_format):
    """A store as another writer makes it (NGFF 0.4 on zarr v2, or 0.5 with the 'ome' key on v3)."""
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    a = g.create_array("0", shape=(1, 64, 80), chunks=(1, 32, 32), dtype="uint16")
    a[...] = _image((64, 80))[None]
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    for ax in axes[1:]:
        if unit:
            ax["unit"] = unit
    ms = {"version": version, "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, scale, scale]}, {"type": "translation", "translation": [0, 10.0, 20.0]}]}]}
    g.attrs.update({"ome": {"version": version, "multiscales": [ms]}} if version == "0.5" else {"multiscales": [ms]})
    return path


@pytest.mark.parametrize("version, unit, scale, zarr_format, want", [
    ("0.4", "nanometer", 325.0, 2, 0.325), ("0.4", "micrometer", 0.5, 2, 0.5), ("0.5", "micrometer", 0.25, 3, 0.25),
    ("0.4", None, 0.5, 2, None)])  # a scale without a unit is no pixel size
def test_reads_stores_of_other_writers(tmp_path, version, unit, scale, zarr_format, want):
    p = _foreign_store(tmp_path / "f.zarr", version=version, unit=unit, scale=scale, zarr_format=zarr_format)
    data, info = open_ome_zarr(p)
    assert info["axes"] == "CYX" and data.shape == (1, 64, 80)
    assert info["pixel_um"] == (pytest.approx(want) if want else None)
    assert info["physical"]["Y"]["translation"] == 10.0 and info["physical"]["X"]["translation"] == 20.0
    np.testing.assert_array_equal(np.asarray(data)[0], _image((64, 80)))


def test_an_unfinished_store_is_refused(tmp_path):
    out = write_ome_zarr(tmp_path / "a.ome.zarr", _image((64, 64)), axes="YX", pixel_um=0.5)
    attrs = _attrs(out)
    attrs["napari_refocus"]["complete"] = False
    (out / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(ValueError, match="unfinished"):
        open_ome_zarr(out)
    with pytest.raises(ValueError, match="not a zarr store|no such file"):
        open_ome_zarr(tmp_path / "missing.ome.zarr")


def test_api_refocus_takes_the_lazy_array(tmp_path):
    image = _image((200, 260))
    p = write_ome_zarr(tmp_path / "in.ome.zarr", image, axes="YX", pixel_um=0.65)
    data, info = open_ome_zarr(p)
    lazy = nr.refocus(data, method="rl", device="cpu", pixel_um=info["pixel_um"], **RL)
    assert is_lazy(lazy.image)
    eager = nr.refocus(image, method="rl", device="cpu", pixel_um=0.65, **RL).image
    # one block (the image is smaller than a block): the same computation as in memory
    np.testing.assert_allclose(np.asarray(lazy.image), eager, rtol=1e-5, atol=1e-3)


# -------------------------------------------------------------- an x2 method, without weights
def _nearest_x2(image, params, *, device, report):
    yield from ()
    return np.repeat(np.repeat(np.asarray(image, np.float32), 2, 0), 2, 1)


@pytest.fixture
def x2():
    class X2Params(Params):
        pass

    from dataclasses import dataclass

    m = Method(name="test-x2", title="x2", description="nearest x2", schema=dataclass(frozen=True)(X2Params),
               run=_nearest_x2, halo=4, upscale=2)
    register(m)
    yield m
    unregister(m.name)


def test_x2_output_pixels_are_halved_and_tile_the_input_pixels(tmp_path, x2):
    image = _image((150, 170))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", image, axes="YX", pixel_um=0.4)
    out = tmp_path / "out.ome.zarr"
    rec = refocus_file(src, out, method="test-x2", device="cpu", block=64)
    assert rec["chunked"] is True
    info = read_ome_zarr_info(out)
    assert info["shape"] == (300, 340) and info["pixel_um"] == pytest.approx(0.2)
    # output pixel (0, 0) covers [-0.2, 0]: the input pixel (0, 0) covers [-0.2, 0.2]
    assert info["physical"]["Y"]["translation"] == pytest.approx(-0.1)
    np.testing.assert_array_equal(np.asarray(open_ome_zarr(out)[0]), np.repeat(np.repeat(image, 2, 0), 2, 1))
    assert _attrs(out)["napari_refocus"]["upscale"] == 2


def test_rgb_tiff_to_ome_zarr_puts_samples_on_the_channel_axis(tmp_path, x2):
    rgb = np.stack([_image((64, 70), seed=k) for k in range(3)], axis=-1)
    out = refocus_to_ome_zarr(rgb, tmp_path / "rgb.ome.zarr", method="test-x2", axes="YXS", pixel_um=0.5,
                              device="cpu", block=32)
    data, info = open_ome_zarr(out)
    assert info["axes"] == "CYX" and data.shape == (3, 128, 140)
    np.testing.assert_array_equal(np.asarray(data)[1], np.repeat(np.repeat(rgb[..., 1], 2, 0), 2, 1))


@pytest.mark.skipif(not (WEIGHTS / "delpnet.safetensors").exists(), reason="weights/delpnet.safetensors missing")
@pytest.mark.parametrize("pixel_um", [0.65, 0.325])  # DelpNet's own sampling, and 2 native px per DelpNet px
def test_lbdvd_blocks_equal_in_memory_and_the_cli_writes_ome_zarr(tmp_path, pixel_um):
    from napari_refocus.cli import main

    image = _image((300, 340))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", image, axes="YX", pixel_um=pixel_um)
    blocks, memory = tmp_path / "blocks.ome.zarr", tmp_path / "memory.ome.zarr"
    refocus_file(src, blocks, method="lbdvd", device="cpu", block=126)
    refocus_file(src, memory, method="lbdvd", device="cpu", chunked=False)
    # lbdvd's block form is the in-memory computation (methods/lbdvd_global.py): equal to the count
    np.testing.assert_array_equal(_levels(blocks)[0], _levels(memory)[0])
    assert main(["refocus", str(src), "-o", str(tmp_path / "cli"), "--format", "ome-zarr", "-q",
                 "--device", "cpu"]) == 0
    np.testing.assert_array_equal(_levels(tmp_path / "cli" / "in_refocused.ome.zarr")[0], _levels(blocks)[0])


@pytest.mark.skipif(not (WEIGHTS / "delpnet.safetensors").exists(), reason="weights/delpnet.safetensors missing")
def test_defocus_map_store_lies_on_its_patch_grid(tmp_path):
    from napari_refocus.io import read_image

    image = _image((300, 340))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", image, axes="YX", pixel_um=0.65)
    rec = defocus_map_file(src, tmp_path / "maps", device="cpu", fmt="ome-zarr")
    assert rec["levels"].endswith("in_levels.ome.zarr")
    tif = defocus_map_file(src, tmp_path / "tif", device="cpu")
    levels_tif = read_image(tif["levels"])[0]
    data, info = open_ome_zarr(rec["levels"])
    np.testing.assert_array_equal(np.asarray(data), levels_tif)
    dm = nr.defocus_map(image, device="cpu", pixel_um=0.65)
    scale, translate = dm.grid.layer_transform((0.65 * dm.scale,) * 2, (0.65 * (dm.scale - 1) / 2,) * 2)
    for k, a in enumerate("YX"):
        assert info["physical"][a]["scale"] == pytest.approx(scale[k])
        assert info["physical"][a]["translation"] == pytest.approx(translate[k])
    label = Path(rec["levels"]) / "labels" / "defocus"
    lab = json.loads((label / ".zattrs").read_text())
    assert _attrs(Path(rec["levels"]) / "labels")["labels"] == ["defocus"]
    assert lab["image-label"]["properties"][3] == {"label-value": 4, "level": 3,
                                                   "defocus_um": pytest.approx(dm.defocus_um[3], abs=1e-4)}
    lv = _levels(label)[0]
    np.testing.assert_array_equal(lv, np.where(levels_tif == 11, 0, levels_tif + 1))


# ----------------------------------------------------------------------- killed and restarted
# a slow, deterministic method (a Gaussian filter that takes 30 ms per block) so that the kill
# lands midway; resuming is the writer's business, the same for every method
_SCRIPT = """
import sys, time
from dataclasses import dataclass
import numpy as np
from scipy.ndimage import gaussian_filter
from napari_refocus.io.pipeline import refocus_file
from napari_refocus.methods import register
from napari_refocus.methods.base import Method
from napari_refocus.methods.params import Params

def run(image, params, *, device, report):
    yield from ()
    time.sleep(0.03)
    return gaussian_filter(np.asarray(image, np.float32), 2.0, mode="reflect")

register(Method(name="slow-blur", title="slow blur", description="test", schema=dataclass(frozen=True)(
    type("P", (Params,), {})), run=run, halo=16))
refocus_file(sys.argv[1], sys.argv[2], method="slow-blur", device="cpu", block=64, overwrite=True)
"""


def _kill_after(cmd, out, blocks: int) -> int:
    """Start ``cmd`` (writing the store ``out``), SIGKILL it once ``blocks`` blocks are written;
    returns how many were written when it died."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, deadline, done = partial_path(out) / PROGRESS_NAME, time.time() + 300, 0
    while time.time() < deadline and done < blocks:
        try:
            done = json.loads(state.read_text())["done"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return json.loads(state.read_text())["done"]


def test_kill_and_restart_gives_a_complete_identical_store(tmp_path):
    src = write_ome_zarr(tmp_path / "in.ome.zarr", _image((512, 640)), axes="YX", pixel_um=0.65)
    ref = tmp_path / "ref.ome.zarr"
    subprocess.run([sys.executable, "-c", _SCRIPT, str(src), str(ref)], check=True, timeout=600)
    out = tmp_path / "out.ome.zarr"
    cmd = [sys.executable, "-c", _SCRIPT, str(src), str(out)]
    killed_at = _kill_after(cmd, out, 5)
    assert 5 <= killed_at < 80, killed_at  # 8 x 10 blocks
    assert not out.exists()  # the unfinished store is never under the output's name
    with pytest.raises(ValueError, match="unfinished"):
        open_ome_zarr(partial_path(out))
    subprocess.run(cmd, check=True, timeout=600)
    assert out.exists() and not partial_path(out).exists()
    for got, want in zip(_levels(out), _levels(ref), strict=True):
        np.testing.assert_array_equal(got, want)
    assert _attrs(out) == {**_attrs(ref), "multiscales": [{**_attrs(ref)["multiscales"][0], "name": out.name}]}


_LBDVD_SCRIPT = """
import sys
from napari_refocus.io.pipeline import refocus_file
refocus_file(sys.argv[1], sys.argv[2], method="lbdvd", device="cpu", block=42, overwrite=True)
"""


@pytest.mark.skipif(not (WEIGHTS / "delpnet.safetensors").exists(), reason="weights/delpnet.safetensors missing")
def test_lbdvd_at_another_sampling_killed_and_restarted_equals_in_memory(tmp_path):
    src = write_ome_zarr(tmp_path / "in.ome.zarr", _image((210, 252)), axes="YX", pixel_um=0.325)
    memory = refocus_file(src, tmp_path / "memory.ome.zarr", method="lbdvd", device="cpu", chunked=False)["output"]
    out = tmp_path / "out.ome.zarr"
    cmd = [sys.executable, "-c", _LBDVD_SCRIPT, str(src), str(out)]
    killed_at = _kill_after(cmd, out, 3)
    assert 3 <= killed_at < 30, killed_at  # 5 x 6 blocks of 42 px
    assert not out.exists()
    subprocess.run(cmd, check=True, timeout=600)
    assert out.exists() and not partial_path(out).exists()
    for got, want in zip(_levels(out), _levels(memory), strict=True):
        np.testing.assert_array_equal(got, want)


def test_another_job_rewrites_a_partial_store(tmp_path):
    src = write_ome_zarr(tmp_path / "in.ome.zarr", _image((200, 200)), axes="YX", pixel_um=0.65)
    out = tmp_path / "out.ome.zarr"
    stale = partial_path(out)
    stale.mkdir()
    (stale / PROGRESS_NAME).write_text(json.dumps({"key": "another job", "done": 3}))
    refocus_file(src, out, method="rl", device="cpu", params=RL, block=64)
    want = refocus_file(src, tmp_path / "want.ome.zarr", method="rl", device="cpu", params=RL, block=64)
    np.testing.assert_array_equal(_levels(out)[0], _levels(want["output"])[0])


# ------------------------------------------------------------------------------ napari-ome-zarr
def test_napari_ome_zarr_opens_the_result_on_the_input(tmp_path, x2):
    reader = pytest.importorskip("napari_ome_zarr._reader")
    image = _image((120, 140))
    src = write_ome_zarr(tmp_path / "in.ome.zarr", image, axes="YX", pixel_um=0.4)
    same = refocus_file(src, tmp_path / "rl.ome.zarr", method="rl", device="cpu", params=RL)["output"]
    double = refocus_file(src, tmp_path / "x2.ome.zarr", method="test-x2", device="cpu")["output"]
    (layer_in,) = reader.napari_get_reader(str(src))()
    (layer_rl,) = reader.napari_get_reader(str(same))()
    (layer_x2,) = reader.napari_get_reader(str(double))()
    assert layer_in[1]["scale"] == layer_rl[1]["scale"] == pytest.approx([0.4, 0.4])
    assert layer_x2[1]["scale"] == pytest.approx([0.2, 0.2])
    assert layer_in[1]["units"] == layer_x2[1]["units"] == ("micrometer", "micrometer")
    assert layer_rl[0][0].shape == image.shape and layer_x2[0][0].shape == (240, 280)
    # the x2 result's half-pixel shift (-0.1 um) is in its NGFF metadata (datasets[0]: scale, then
    # translation); napari-ome-zarr 0.10 applies only the first transformation of datasets[0]
    t = _attrs(double)["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert t[1] == {"type": "translation", "translation": [pytest.approx(-0.1), pytest.approx(-0.1)]}


def test_a_refused_job_leaves_no_partial_store(tmp_path):
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(ValueError, match="block must be >= 1"):
        refocus_to_ome_zarr(_image((100, 120)), out, method="lbdvd", axes="YX", device="cpu", block=-1)
    assert not out.exists() and not partial_path(out).exists()


def test_batch_reads_ome_zarr_stores_and_writes_ome_zarr(tmp_path):
    from napari_refocus.io.batch import run_batch

    folder = tmp_path / "in"
    for k in range(2):
        write_ome_zarr(folder / f"f{k}.ome.zarr", _image((90, 110), seed=k), axes="YX", pixel_um=0.65)
    report = run_batch([folder], tmp_path / "out", method="rl", params=RL, workers=1, progress=False, fmt="ome-zarr")
    assert report["done"] == 2, report["records"]
    for k in range(2):
        got = tmp_path / "out" / f"f{k}_refocused.ome.zarr"
        want = refocus_file(folder / f"f{k}.ome.zarr", tmp_path / f"want{k}.ome.zarr", method="rl", device="cpu",
                            params=RL)["output"]
        np.testing.assert_array_equal(_levels(got)[0], _levels(want)[0])
        assert read_ome_zarr_info(got)["pixel_um"] == pytest.approx(0.65)


def test_default_blocks_leave_no_thin_last_block():
    from napari_refocus.bigimage import DEFAULT_BLOCK, balanced_block, block_bounds

    for shape, multiple in [((4096, 4096), 42), ((4096, 4096), 1), ((1000, 5000), 1), ((16384, 300), 42)]:
        b = balanced_block(shape, multiple)
        assert b % multiple == 0 and DEFAULT_BLOCK // 2 <= b <= DEFAULT_BLOCK
        widths = [x1 - x0 for *_, x0, x1 in block_bounds(shape, b)] + [y1 - y0 for y0, y1, *_ in block_bounds(shape, b)]
        assert min(widths) >= min(min(shape), DEFAULT_BLOCK // 2), (shape, b, min(widths))
    assert balanced_block((4096, 4096), 42) == 1386  # 1386 + 1386 + 1324 instead of 2016 + 2016 + 64
