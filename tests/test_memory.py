"""The memory estimate and the in-memory / block-by-block decision (core.memory)."""

import numpy as np
import pytest

from napari_refocus.core import memory
from napari_refocus.methods import get_method


def test_cgroup_v2_limit_minus_usage(tmp_path):
    (tmp_path / "memory.max").write_text("4294967296\n")
    (tmp_path / "memory.current").write_text("1073741824\n")
    assert memory.cgroup_free_bytes(tmp_path) == 3 * 2**30


def test_cgroup_v2_without_limit_and_v1(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_free_bytes(tmp_path) is None
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(str(2 * 2**30))
    (v1 / "memory.usage_in_bytes").write_text(str(2**30 + 5))
    assert memory.cgroup_free_bytes(tmp_path) == 2**30 - 5
    # v1's "no limit" is a page-rounded 2^63
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert memory.cgroup_free_bytes(tmp_path) is None


def test_available_is_capped_by_the_cgroup(monkeypatch):
    monkeypatch.setattr(memory, "system_available_bytes", lambda: 16 * 2**30)
    monkeypatch.setattr(memory, "cgroup_free_bytes", lambda: 2 * 2**30)
    assert memory.available_bytes() == 2 * 2**30
    monkeypatch.setattr(memory, "cgroup_free_bytes", lambda: None)
    assert memory.available_bytes() == 16 * 2**30


def test_available_bytes_is_a_real_positive_number():
    assert 0 < memory.available_bytes() < 2**50


def test_estimate_grows_with_pixels_and_counts_input_and_stack():
    fp = memory.footprint("lbdvd")
    one = memory.estimate_bytes((1000, 1000), np.uint16, "lbdvd", input_in_memory=True)
    assert one == pytest.approx(fp.per_pixel * 1e6 + fp.fixed, abs=1)
    # a file about to be read adds its own bytes (uint16: 2 per pixel)
    assert memory.estimate_bytes((1000, 1000), np.uint16, "lbdvd") - one == 2_000_000
    # a stack of 5 planes runs one plane at a time; the 4 extra float32 output planes add up
    stack = memory.estimate_bytes((5, 1000, 1000), np.uint16, "lbdvd", input_in_memory=True)
    assert stack - one == 4 * 4_000_000
    # axes name where Y and X are (channels last)
    rgb = memory.estimate_bytes((1000, 1000, 3), np.uint8, "lbdvd", axes="YXS", input_in_memory=True)
    assert rgb - one == 2 * 4_000_000


def test_upscaling_method_output_stack_is_four_times_larger():
    m = get_method("m-deblurgan")
    single = memory.estimate_bytes((100, 100), np.uint16, m, input_in_memory=True)
    stack = memory.estimate_bytes((3, 100, 100), np.uint16, m, input_in_memory=True)
    assert stack - single == 2 * 4 * 4 * 10_000
    assert memory.footprint(m) == memory.footprint("m-deblurgan")


def test_unknown_method_gets_the_most_demanding_figure():
    worst = max(f.per_pixel for f in memory.FOOTPRINTS.values())
    assert memory.footprint("someones-plugin").per_pixel == worst


def test_needs_blocks_decides_from_memory_not_pixels():
    shape = (8192, 8192)  # 64 Mi px: the old pixel-count threshold said "in memory" here
    need = memory.estimate_bytes(shape, np.uint16, "lbdvd")
    assert memory.needs_blocks(shape, np.uint16, "lbdvd", available=int(need / memory.USABLE_SHARE) - 1)
    assert not memory.needs_blocks(shape, np.uint16, "lbdvd", available=int(need / memory.USABLE_SHARE) + 1)
    # a small image runs in memory on a small machine, a huge one goes block by block on a big one
    assert not memory.needs_blocks((520, 696), np.uint16, "lbdvd", available=2 * 2**30)
    assert memory.needs_blocks((100_000, 100_000), np.uint16, "lbdvd", available=64 * 2**30)


def test_bad_shapes_and_axes_are_errors():
    with pytest.raises(ValueError, match="2 axes"):
        memory.estimate_bytes((10,), np.uint16, "lbdvd")
    with pytest.raises(ValueError, match="Y and X"):
        memory.estimate_bytes((10, 10, 3), np.uint16, "lbdvd", axes="YX")


def _set_available(monkeypatch, nbytes):
    monkeypatch.setattr(memory, "available_bytes", lambda: nbytes)


def test_pipeline_switches_to_blocks_when_memory_is_short(monkeypatch, tmp_path):
    import tifffile

    from napari_refocus.io.pipeline import use_blocks
    from napari_refocus.io.read import read_info

    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.zeros((256, 300), np.uint16))
    info = read_info(path)
    _set_available(monkeypatch, 2**40)
    assert not use_blocks(path, info, None, get_method("lbdvd"))
    _set_available(monkeypatch, 100_000)  # less than the run needs: block by block
    assert use_blocks(path, info, None, get_method("lbdvd"))
    assert not use_blocks(path, info, False, get_method("lbdvd"))  # asked: in memory anyway


def test_widget_runs_a_layer_too_big_for_memory_block_by_block(monkeypatch):
    from napari_refocus.core.progress import drain
    from napari_refocus.ui.refocus import refocus_planes

    img = (np.random.default_rng(0).random((256, 300)) * 1000 + 200).astype(np.uint16)
    params = {"level": 3, "iterations": 2}
    _set_available(monkeypatch, 2**40)
    eager, _ = drain(refocus_planes(img, axes="YX", method="rl", device="cpu", params=params))
    assert isinstance(eager, np.ndarray)
    _set_available(monkeypatch, 100_000)
    lazy, _ = drain(refocus_planes(img, axes="YX", method="rl", device="cpu", params=params))
    assert type(lazy).__module__.startswith("dask")
    # one block covers this image, so the block form's result is the in-memory one
    np.testing.assert_allclose(np.asarray(lazy), eager, rtol=1e-5, atol=1e-3)


def test_banded_noise_and_in_place_canonical_scale_are_the_same_numbers():
    """The low-memory forms of noise_sigma (band by band) and of the map's canonical scale."""
    from napari_refocus.core.intensity import noise_sigma, to_canonical
    from napari_refocus.io.samples import real_defocused_image
    from napari_refocus.methods.defocus import canonical_image

    def whole_image_sigma(image):  # the formula on the whole image at once
        a = np.asarray(image, dtype=np.float32)
        d = (4 * a[1:-1, 1:-1] - 2 * (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:])
             + a[:-2, :-2] + a[:-2, 2:] + a[2:, :-2] + a[2:, 2:])
        return float(1.4826 * np.median(np.abs(d)) / 6.0)

    real = real_defocused_image()
    tall = np.tile(real, (3, 1))[:1300]  # more rows than one band
    for image in (real, tall, tall.astype(np.float32)):
        assert noise_sigma(image) == whole_image_sigma(image)
        before = image.copy()
        canon, stats = canonical_image(image, 1.0)
        np.testing.assert_array_equal(canon, to_canonical(image, span=1000.0, offset=150.0, stats=stats[:2]))
        np.testing.assert_array_equal(image, before)  # the caller's array is not written to


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(520, 696), (84, 84), (100, 91), (300, 160)])
def test_canonical_padded_is_the_canonical_image_padded(dtype, shape):
    """The map's padded canonical image, written straight into its buffer (one float32 image
    instead of two), has the numbers of the canonical image padded by ``pad_image``."""
    import torch

    from napari_refocus.core.tiling import pad_image, patch_grid
    from napari_refocus.methods.canonical import canonical_image, canonical_padded

    rng = np.random.default_rng(sum(shape))
    top = 250 if dtype == np.uint8 else 4000
    image = (rng.random(shape) * top).astype(dtype)
    before = image.copy()
    for stats in (None, (10.0, 3000.0, 2.0)):
        padded, grid, got = canonical_padded(image, 1.0, stride=42, stats=stats)
        canon, want = canonical_image(image, 1.0, stats=stats)
        assert got == want and grid == patch_grid(canon.shape, stride=42)
        ref = pad_image(torch.from_numpy(canon), grid, 0, "reflect")
        assert padded.shape == ref.shape and torch.equal(padded, ref)
    np.testing.assert_array_equal(image, before)  # the caller's array is not written to
    assert canonical_padded(image[:80], 1.0, stride=42)[:2] == (None, None)  # smaller than a patch
    from napari_refocus.core.tiling import reflect_fill

    with pytest.raises(ValueError, match="reflect padding"):  # pad_image replicates there instead
        reflect_fill(np.zeros((10, 30), np.float32), 4, 30)


@pytest.mark.parametrize("shape", [(300, 410), (90, 130), (40, 300)])
def test_mirrored_image_reads_what_the_padded_copy_holds(shape):
    """Depth-variant RL reads its frames from the image through a MirroredImage instead of a
    padded float32 copy: every window equals that of pad_image's tensor ("reflect"; "replicate"
    for an image too small to mirror, the (40, 300) case), whatever the input's dtype."""
    import torch

    from napari_refocus.core.tiling import MirroredImage, pad_image, patch_grid

    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 65535, shape).astype(np.uint16), rng.random(shape) * 1e3):
        grid = patch_grid(shape, patch=84, stride=42)
        padded = pad_image(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), grid, 13, "reflect")
        lazy = MirroredImage(image, grid, 13)
        assert lazy.shape == tuple(padded.shape)
        for y0, y1, x0, x1 in ((0, padded.shape[0], 0, padded.shape[1]), (0, 20, 5, 60), (7, 9, 0, 3),
                               (padded.shape[0] - 30, padded.shape[0], padded.shape[1] - 41, padded.shape[1])):
            assert torch.equal(lazy[y0:y1, x0:x1], padded[y0:y1, x0:x1])


def test_batch_worker_switches_to_blocks_when_memory_is_short(monkeypatch, tmp_path):
    # batch's per-image work takes the CLI's decision (it ran every TIFF in memory before)
    import tifffile

    from napari_refocus.io.batch import process_image

    path = tmp_path / "in" / "x.tif"
    path.parent.mkdir()
    img = (np.random.default_rng(0).random((256, 300)) * 1000 + 200).astype(np.uint16)
    tifffile.imwrite(path, img)
    _set_available(monkeypatch, 2**40)
    rec = process_image(path, tmp_path / "big", method="rl", params={"level": 3, "iterations": 2})
    assert rec["chunked"] is False
    _set_available(monkeypatch, 100_000)
    rec = process_image(path, tmp_path / "short", method="rl", params={"level": 3, "iterations": 2})
    assert rec["chunked"] is True
    small, blocks = (tifffile.imread(tmp_path / d / "x_refocused.tif") for d in ("big", "short"))
    assert np.abs(small.astype(int) - blocks.astype(int)).max() <= 1


def test_release_free_memory_is_safe_to_call():
    from napari_refocus.core.memory import release_free_memory

    a = [np.ones(200_000) for _ in range(20)]
    del a
    assert release_free_memory() in (True, False)  # False only without glibc
    assert release_free_memory() == release_free_memory()
    # a small image's stages skip the trim (its page faults cost more than the few MB it returns)
    assert release_free_memory(pixels=696 * 520) is False
    assert release_free_memory(pixels=1024 * 1024) == release_free_memory()


def test_lbdvd_in_place_banded_blend_is_the_gates_blend():
    """lbdvd blends band by band in place; the values are gate.blend's, bit for bit."""
    from napari_refocus.core.tiling import patch_grid
    from napari_refocus.methods import gate
    from napari_refocus.methods.lbdvd import BAND, blend_in_place

    rng = np.random.default_rng(0)
    shape = (BAND + 77, 300)  # two bands, the second partial
    image = rng.integers(0, 4000, shape).astype(np.uint16)
    restored = rng.random(shape, dtype=np.float32) * 4000
    grid = patch_grid(shape)
    g = gate.Gate(v=rng.random(grid.shape, dtype=np.float32), confidence=np.ones(grid.shape, np.float32),
                  grid_shape=grid.shape, patch=grid.patch, stride=grid.stride, scale=1.0, threshold_um=4.0)
    w_ref = g.weights(shape)
    expected = gate.blend(image, restored, w_ref)
    out = restored.copy()
    w = blend_in_place(image, out, g)
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(out, expected)
