"""Block by block at any sampling: the global-grid resampler, and lbdvd's blocks equal to in memory."""

from pathlib import Path

import numpy as np
import pytest

from napari_refocus.core.resample import input_window, resample, resample_window, resized_shape

#: shrinking (DelpNet's sampling from finer pixels: 0.65 x 0.5 / 0.451 over the pixel) and enlarging
FACTORS = (0.5, 0.3009, 0.4517, 0.7213, 2.0, 1.7, 1.0)


def _random_boxes(out_shape, rng, n):
    for _ in range(n):
        oy0 = int(rng.integers(0, out_shape[0]))
        ox0 = int(rng.integers(0, out_shape[1]))
        yield oy0, int(rng.integers(oy0 + 1, out_shape[0] + 1)), ox0, int(rng.integers(ox0 + 1, out_shape[1] + 1))


@pytest.mark.parametrize("factor", FACTORS)
def test_any_window_equals_the_whole_resampled_image_bit_for_bit(factor, infocus_crop):
    img = np.asarray(infocus_crop, np.float32)[:, :247]  # odd sides: boxes do not align with the factor
    out_shape = resized_shape(img.shape, factor)
    whole = resample(img, shape=out_shape)
    assert whole.dtype == np.float32 and whole.shape == out_shape
    rng = np.random.default_rng(int(factor * 1000))
    for box in _random_boxes(out_shape, rng, 25):
        y0, y1, x0, x1 = input_window(full_shape=img.shape, out_shape=out_shape, out_box=box)
        assert 0 <= y0 < y1 <= img.shape[0] and 0 <= x0 < x1 <= img.shape[1]
        # a region larger than the window, as a block plus its halo would be
        ry, rx = max(0, y0 - 3), max(0, x0 - 5)
        win = resample_window(img[ry:y1 + 2, rx:x1 + 1], full_shape=img.shape, out_shape=out_shape, out_box=box,
                              region_origin=(ry, rx))
        assert win.dtype == np.float32
        np.testing.assert_array_equal(win, whole[box[0]:box[1], box[2]:box[3]])


@pytest.mark.parametrize("factor", (0.5, 0.4517, 1.7))
@pytest.mark.parametrize("dtype", (np.uint16, np.float32, np.float64))
def test_resample_band_by_band_is_the_whole_at_once(factor, dtype, monkeypatch, infocus_crop):
    """``resample`` works a band of output rows at a time from the input as it is (no float32 copy
    of the whole): the numbers of one window covering everything, from the float32 image."""
    from napari_refocus.core import resample as rs

    img = np.asarray(infocus_crop)[:, :247].astype(dtype)
    out_shape = resized_shape(img.shape, factor)
    at_once = resample_window(img.astype(np.float32), full_shape=img.shape, out_shape=out_shape,
                              out_box=(0, out_shape[0], 0, out_shape[1]))
    monkeypatch.setattr(rs, "BAND_ROWS", 7)  # many bands, the last one short
    banded = resample(img, shape=out_shape)
    assert banded.dtype == np.float32
    np.testing.assert_array_equal(banded, at_once)


def test_the_window_is_what_a_box_reads():
    img = np.random.default_rng(0).random((300, 280)).astype(np.float32)
    out_shape = resized_shape(img.shape, 0.4517)
    box = (40, 71, 13, 90)
    y0, y1, x0, x1 = input_window(full_shape=img.shape, out_shape=out_shape, out_box=box)
    # shrinking by 1 / 0.4517: the triangle reaches ~2.2 input pixels either side of a centre
    assert y0 == pytest.approx(box[0] / 0.4517 - 2.2, abs=1.5) and y1 == pytest.approx(box[1] / 0.4517 + 2.2, abs=1.5)
    changed = img.copy()
    changed[:y0] = changed[y1:] = changed[:, :x0] = changed[:, x1:] = -1e6  # outside the window
    np.testing.assert_array_equal(resample(changed, shape=out_shape)[40:71, 13:90],
                                  resample(img, shape=out_shape)[40:71, 13:90])
    with pytest.raises(ValueError, match="does not cover"):
        resample_window(img[y0 + 1:y1, x0:x1], full_shape=img.shape, out_shape=out_shape, out_box=box,
                        region_origin=(y0 + 1, x0))


@pytest.mark.parametrize("factor", (0.5, 0.3009, 0.4517, 2.0, 1.7))
def test_close_to_torch_antialiased_bilinear(factor, infocus_crop):
    torch = pytest.importorskip("torch")
    img = np.asarray(infocus_crop, np.float32)
    out_shape = resized_shape(img.shape, factor)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=out_shape, mode="bilinear",
                                          align_corners=False, antialias=True)[0, 0].numpy()
    # the same triangle filter; torch computes its weights in float32 (measured here: <= 6.1e-6 of the range)
    assert np.abs(resample(img, shape=out_shape) - ref).max() <= 1e-5 * (img.max() - img.min())


def test_identity_and_constant_images():
    img = np.random.default_rng(2).random((50, 61)).astype(np.float32)
    np.testing.assert_array_equal(resample(img, shape=img.shape), img)
    np.testing.assert_array_equal(resample(img, shape=(50, 30))[:, :], resample(img, shape=(50, 30)))
    const = np.full((97, 83), 123.0, np.float32)
    for shape in ((40, 37), (200, 171)):
        np.testing.assert_allclose(resample(const, shape=shape), 123.0, rtol=1e-6)


# --- lbdvd block by block at other samplings: equal to in memory, bit for bit -------------------

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "delpnet.safetensors"
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(), reason="weights/delpnet.safetensors not installed")

OBJECTIVES = {
    "20x-0.5-air-0.325um": {"pixel_um": 0.325},  # NA 0.5 in air, 451 nm: 2 native px per DelpNet px
    "60x-1.4-oil-0.108um": {"pixel_um": 0.108, "na": 1.4, "refractive_index": 1.515, "wavelength_nm": 520.0},
    # the map's pixel given (Optics.map_pixel_um): 2 native px per map px, not 1.33 as lambda/NA says
    "20x-0.75-air-0.325um-map-0.65um": {"pixel_um": 0.325, "na": 0.75, "map_pixel_um": 0.65},
}


@pytest.fixture(scope="module")
def tilted(infocus):
    """A real field blurred from level 0 to 9 across, 336 x 430 px."""
    import napari_refocus as nr

    gt = np.tile(infocus, (2, 2))[:336, :430]
    return nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=9), seed=0)


@pytest.fixture(scope="module", params=sorted(OBJECTIVES))
def in_memory(request, tilted):
    import napari_refocus as nr

    optics = OBJECTIVES[request.param]
    return optics, nr.refocus(tilted, method="lbdvd", device="cpu", **optics)


@needs_weights
def test_lbdvd_blocks_equal_in_memory_at_other_samplings(in_memory, tilted):
    from napari_refocus.bigimage import iter_method_blocks, prepare

    optics, eager = in_memory
    run = prepare(tilted, "lbdvd", optics, device="cpu", block=126)
    assert run.restore.halo > 96  # the native reach of patches 2-2.5x wider than DelpNet's
    assert 0.05 < eager.changed_fraction < 0.99  # the gate both keeps and changes pixels here
    out = np.full(tilted.shape, np.nan, np.float32)
    # 126-px blocks: neither the native (84 or 104 px) nor the map's patch grid lines up with them
    for _, (y0, y1, x0, x1), block in iter_method_blocks(tilted, "lbdvd", device="cpu", block=126, **optics):
        out[y0:y1, x0:x1] = block
    np.testing.assert_array_equal(out, eager.image)


@needs_weights
def test_lbdvd_lazy_dask_blocks_read_only_their_halo(in_memory, tilted):
    da = pytest.importorskip("dask.array")
    from napari_refocus.bigimage import lazy_method

    optics, eager = in_memory
    # the dask overlap is restore.halo; a block reading beyond it raises IndexError (core.tiling.Region)
    # beyond_top=False: this field has no patch read beyond the top class, and that pass's wider
    # halo (434-538 px here) would not fit these blocks (tests/test_deep.py runs it lazily)
    lazy = lazy_method(da.from_array(tilted, chunks=(294, 294)), "lbdvd", device="cpu", block=294,
                       never_worse=False, beyond_top=False, **optics)
    assert lazy.chunks == ((294, 42), (294, 136))
    import napari_refocus as nr

    plain = nr.refocus(tilted, method="lbdvd", device="cpu", never_worse=False, beyond_top=False, **optics).image
    np.testing.assert_array_equal(np.asarray(lazy), plain)
    assert not np.array_equal(plain, eager.image)  # the gate did change something


@needs_weights
def test_defocus_map_block_by_block_equals_in_memory(in_memory, tilted):
    da = pytest.importorskip("dask.array")
    import napari_refocus as nr
    from napari_refocus.core.optics import Optics
    from napari_refocus.methods.lbdvd import METHOD
    from napari_refocus.methods.lbdvd_blocks import chunked_defocus_map

    optics, eager = in_memory
    ref = eager.defocus_map
    assert ref.scale > 1.9 and len(np.unique(ref.levels)) > 2
    stats = METHOD.image_stats(tilted.astype(np.float32), params=METHOD.parse(**optics))["stats"]
    # rectangles of one map patch each: every patch classified in a batch of its own
    small = chunked_defocus_map(tilted, block=60, device="cpu", stats=stats, optics=Optics(**optics))
    lazy = nr.defocus_map(da.from_array(tilted, chunks=(200, 200)), device="cpu", **optics)
    for got in (small, lazy):
        assert got.grid == ref.grid and got.scale == ref.scale and got.defocus_um == ref.defocus_um
        np.testing.assert_array_equal(got.levels, ref.levels)
        np.testing.assert_array_equal(got.probabilities, ref.probabilities)


def test_canonical_statistics_from_the_sample_are_those_of_the_resampled_image(infocus_crop):
    from napari_refocus.methods.canonical_blocks import sample_stats
    from napari_refocus.methods.defocus import canonical_image

    img = np.asarray(infocus_crop, np.float32)
    for scale in (1.0, 2.0, 2.4777):
        assert sample_stats(img, scale=scale) == canonical_image(img, scale)[1]
    # a strided sample (big images): resampled by the remaining factor, close to the whole image's
    lo, hi, sigma = canonical_image(img, 2.0)[1]
    lo2, hi2, _ = sample_stats(img[::2, ::2], scale=2.0, sample_stride=2)
    assert abs(lo2 - lo) < 0.05 * (hi - lo) and abs(hi2 - hi) < 0.05 * (hi - lo)


def test_read_region_mirrors_a_thin_last_block_like_the_whole_image():
    # a region that reaches farther past the bottom edge than it has rows inside the image
    # (a thin last block's frame): mirrored from the image itself, as np.pad of the whole image
    from napari_refocus.methods.canonical_blocks import read_region

    img = np.arange(40 * 30, dtype=np.float32).reshape(40, 30)
    whole = np.pad(img, ((12, 25), (12, 25)), mode="reflect")
    np.testing.assert_array_equal(read_region(img, 33, 65, 20, 55), whole[33 + 12:65 + 12, 20 + 12:55 + 12])
    np.testing.assert_array_equal(read_region(img, -12, 10, -5, 8), whole[0:22, 7:20])
    inside = read_region(img, 3, 9, 4, 7)
    np.testing.assert_array_equal(inside, img[3:9, 4:7])
    # farther than the image can mirror once: the edge pixels (pad_image's "replicate" fallback)
    np.testing.assert_array_equal(read_region(img, 0, 90, 0, 2)[-1], img[-1, 0:2])
