"""io.pipeline: read -> every plane through a method -> cast -> write, in memory and block by block."""

from dataclasses import dataclass

import numpy as np
import pytest
import tifffile

import napari_refocus as nr
from napari_refocus.core.forward import cast_like
from napari_refocus.core.progress import Progress
from napari_refocus.io.pipeline import method_params, refocus_file, restore_image
from napari_refocus.methods.base import Method
from napari_refocus.methods.params import Params, option
from napari_refocus.methods.registry import register, unregister

RL = {"level": 3, "iterations": 4}


@dataclass(frozen=True)
class _X2Params(Params):
    gain: float = option(1.0, help="multiply by this")


def _x2_run(image, params, *, device, report):
    yield Progress(1, 1, "x2")
    return np.repeat(np.repeat(np.asarray(image, np.float32) * params.gain, 2, 0), 2, 1)


X2 = Method(name="test-x2", title="x2 nearest", description="pixel repetition (a test method)",
            schema=_X2Params, run=_x2_run, upscale=2, halo=0)


@pytest.fixture
def x2():
    register(X2)
    yield X2
    unregister(X2.name)


@pytest.fixture(scope="module")
def planes(infocus):
    """Three 128x128 uint16 planes of the real image, blurred to level 3."""
    crops = [np.ascontiguousarray(infocus[y:y + 128, 100:228]) for y in (0, 150, 300)]
    return np.stack([nr.simulate(c, level=3, seed=k) for k, c in enumerate(crops)])


def _rl_plane(plane, pixel_um=0.65):
    return cast_like(nr.refocus(plane, method="rl", device="cpu", pixel_um=pixel_um, **RL).image, plane.dtype)


def test_method_params_pass_pixel_size_only_to_methods_with_optics(x2):
    assert method_params("rl", RL, pixel_um=0.3)["pixel_um"] == 0.3
    assert method_params("rl", {**RL, "pixel_um": 0.5}, pixel_um=0.3)["pixel_um"] == 0.5
    assert "pixel_um" not in method_params("test-x2", {}, pixel_um=0.3)
    with pytest.raises(ValueError, match="valid: gain"):
        method_params("test-x2", {"iterations": 3})


def test_zstack_every_plane_as_its_2d_run(tmp_path, planes):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, planes, imagej=True, metadata={"axes": "ZYX", "unit": "um"},
                     resolution=(1 / 0.65, 1 / 0.65))
    rec = refocus_file(src, tmp_path / "out.tif", method="rl", device="cpu", params=RL)
    out, info = nr.read_image(tmp_path / "out.tif")
    assert rec["axes"] == info["axes"] == "ZYX" and rec["shape"] == [3, 128, 128]
    assert out.shape == planes.shape and out.dtype == np.uint16
    assert info["pixel_um"] == pytest.approx(0.65)
    assert info["metadata"]["method"] == "rl" and info["metadata"]["source"] == str(src)
    for z in range(3):
        np.testing.assert_array_equal(out[z], _rl_plane(planes[z]))


def test_rgba_channels_restored_alpha_copied_upscaled(tmp_path, planes, x2):
    rgba = np.stack([*(p // 256 for p in planes), np.full((128, 128), 200)], axis=-1).astype(np.uint8)
    src = nr.write_image(tmp_path / "rgba.tif", rgba, pixel_um=0.5)
    rec = refocus_file(src, tmp_path / "out.tif", method="test-x2", params={"gain": 0.5})
    out, info = nr.read_image(tmp_path / "out.tif")
    assert rec["axes"] == "YXS" and out.shape == (256, 256, 4) and out.dtype == np.uint8
    assert info["pixel_um"] == pytest.approx(0.25)  # the file's pixel size, halved; not given to the method
    for c in range(3):
        want = cast_like(np.repeat(np.repeat(rgba[..., c] * np.float32(0.5), 2, 0), 2, 1), np.uint8)
        np.testing.assert_array_equal(out[..., c], want)
    assert (out[..., 3] == 200).all()
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB


def test_block_by_block_stack_equals_in_memory(tmp_path, planes, x2):
    src = nr.write_image(tmp_path / "s.tif", planes, axes="ZYX", pixel_um=0.65)
    mem = refocus_file(src, tmp_path / "mem.tif", method="rl", params=RL, chunked=False)
    blk = refocus_file(src, tmp_path / "blk.tif", method="rl", params=RL, chunked=True, device="cpu")
    assert blk["chunked"] and not mem["chunked"]
    a, b = nr.read_image(tmp_path / "mem.tif"), nr.read_image(tmp_path / "blk.tif")
    assert b[1]["axes"] == "ZYX" and b[1]["pixel_um"] == pytest.approx(0.65)
    np.testing.assert_array_equal(a[0], b[0])  # one block per plane: the same computation
    meta = b[1]["metadata"]
    assert meta["chunked"] and meta["parameters"]["level"] == 3 and meta["parameters"]["optics"]["pixel_um"] == 0.65
    assert meta["device"] == "cpu" and "napari_refocus_version" in meta
    # many tiles per plane, RGB, an upscaling method: every tile where it belongs
    from napari_refocus.io import refocus_to_tiff

    rgb = np.moveaxis(planes, 0, -1)
    refocus_to_tiff(rgb, tmp_path / "x2.tif", method="test-x2", axes="YXS", block=48)
    out, info = nr.read_image(tmp_path / "x2.tif")
    assert info["axes"] == "YXS" and out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.repeat(np.repeat(rgb, 2, 0), 2, 1))


def test_float32_and_axes_override(tmp_path, planes):
    src = tmp_path / "pages.tif"
    tifffile.imwrite(src, planes[:2])  # no axes in the file: an RGB-like guess would be wrong
    rec = refocus_file(src, tmp_path / "o.tif", method="rl", params=RL, axes="ZYX", float32=True)
    out, info = nr.read_image(tmp_path / "o.tif")
    assert rec["axes"] == "ZYX" and out.dtype == np.float32 and out.shape == (2, 128, 128)
    assert info["pixel_um"] is None
    np.testing.assert_allclose(out[1], nr.refocus(planes[1], method="rl", **RL).image, rtol=1e-6)
    with pytest.raises(ValueError, match="name 2 dimensions"):
        refocus_file(src, tmp_path / "p.tif", method="rl", params=RL, axes="YX")
    with pytest.raises(ValueError, match="exists"):
        refocus_file(src, tmp_path / "o.tif", method="rl", params=RL, axes="ZYX")
    with pytest.raises(ValueError, match="input"):
        refocus_file(src, src, method="rl", params=RL, axes="ZYX", overwrite=True)


def test_restore_image_progress_over_planes(planes):
    events = []
    res = restore_image(planes, axes="ZYX", method="rl", params=RL, progress=events.append)
    assert res.data.dtype == np.uint16 and res.result.method == "rl"
    assert events[-1].done == events[-1].total and events[0].stage.startswith("plane 1/3 (z 0)")
    assert res.record["action"] == "restored" and res.metadata["parameters"]["level"] == 3


@pytest.mark.skipif(not nr.get_method("lbdvd").weights_present(), reason="DelpNet weights missing")
def test_triage_per_plane_copies_in_focus_planes(infocus):
    crop = np.ascontiguousarray(infocus[:168, :252])
    stack = np.stack([crop, nr.simulate(crop, level=8, seed=0)])
    res = restore_image(stack, axes="ZYX", method="lbdvd", device="cpu", min_level=4)
    assert res.record["focus_levels"][0] < 4 <= res.record["focus_levels"][1]
    assert res.record["action"] == "restored 1 planes, copied 1"
    np.testing.assert_array_equal(res.data[0], crop)
    assert not np.array_equal(res.data[1], stack[1])
    sharp = restore_image(crop, axes="YX", method="lbdvd", device="cpu", min_level=4)
    assert sharp.record["action"].startswith("copied") and sharp.data is not None
    np.testing.assert_array_equal(sharp.data, crop)


def test_batch_worker_restores_the_thread_count(tmp_path, planes):
    torch = pytest.importorskip("torch")
    from napari_refocus.io.batch import process_image, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    src = nr.write_image(tmp_path / "p.tif", planes[0])
    rec = process_image(src, tmp_path / "out", method="rl", device="cpu", threads=1, params=RL)
    assert rec["status"] == "done" and torch.get_num_threads() == before
