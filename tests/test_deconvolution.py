import numpy as np
import pytest
import torch

import napari_refocus as nr
from napari_refocus.core.otf import fft_size, otf_bank
from napari_refocus.core.rl import richardson_lucy_batch
from napari_refocus.core.optics import BACKGROUND, Optics
from napari_refocus.core.tiling import extract_patches, montage, weight_window


def psnr(a, gt):
    return nr.metrics(a, gt)["psnr"]


def test_fft_size():
    assert fft_size(128) == 128 and fft_size(127) == 128 and fft_size(129) == 135
    assert fft_size(555) == 576


@pytest.mark.parametrize("weights", ["triangular", "rectangular"])
@pytest.mark.parametrize("shape", [(520, 696), (100, 130), (84, 84), (85, 200)])
def test_extract_then_montage_is_identity(shape, weights):
    img = torch.rand(shape)
    stride = 42 if weights == "triangular" else 84
    grid = nr.patch_grid(shape, stride=stride)
    patches = extract_patches(img, grid, context=0)
    assert patches.shape == (grid.shape[0] * grid.shape[1], 84, 84)
    out = montage(patches, grid, weights=weights)
    torch.testing.assert_close(out, img, rtol=1e-5, atol=1e-6)


def test_triangular_weights_sum_to_one_inside():
    tent = weight_window(84)[41] / weight_window(84)[41].max()
    w1 = 1 - (torch.arange(84) + 0.5 - 42).abs() / 42
    torch.testing.assert_close(tent, w1 / w1.max())
    # a pixel lies in two neighbouring patches 42 apart: their weights sum to one
    torch.testing.assert_close(w1[:42] + w1[42:], torch.ones(42))


def test_constant_image_stays_constant():
    img = np.full((300, 420), 1234.0, dtype=np.float32)
    grid = nr.patch_grid(img.shape)
    levels = np.random.default_rng(0).integers(0, 12, grid.shape)
    out = nr.deconvolve(img, level_map=levels)
    np.testing.assert_allclose(out, 1234.0, rtol=2e-4)
    out = nr.deconvolve(img, level=7)
    np.testing.assert_allclose(out, 1234.0, rtol=2e-4)


def test_level0_and_background_patches_untouched(infocus_crop):
    blurred = nr.simulate(infocus_crop, level=6, seed=0).astype(np.float32)
    grid = nr.patch_grid(blurred.shape)
    levels = np.full(grid.shape, 6)
    levels[:, :2] = 0
    levels[:2, :] = BACKGROUND
    out = nr.deconvolve(blurred, level_map=levels)
    # pixels covered only by untouched patches (first two columns: x < 42 + 42)
    np.testing.assert_allclose(out[:, :84], blurred[:, :84], rtol=1e-5)
    np.testing.assert_allclose(out[:84, :], blurred[:84, :], rtol=1e-5)
    assert np.abs(out[120:, 120:] - blurred[120:, 120:]).max() > 50


def test_plain_mode_matches_scikit_image():
    """boundary='zero', initial='flat' is exactly scikit-image's algorithm on a patch."""
    from skimage.restoration import richardson_lucy

    rng = np.random.default_rng(0)
    patch = (rng.random((110, 110)) * 1000 + 100).astype(np.float32)
    optics = Optics()
    shape = (fft_size(110 + 18),) * 2
    obs = torch.nn.functional.pad(torch.from_numpy(patch), (0, shape[1] - 110, 0, shape[0] - 110))[None]
    for level in (1, 5, 10):
        otf = otf_bank(optics, shape, "cpu")[level : level + 1]
        ours = richardson_lucy_batch(obs, otf, 15, initial="flat")[0, :110, :110].numpy()
        ref = richardson_lucy(patch, nr.psf_bank()[level], num_iter=15, clip=False)
        np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-2 * patch.mean() * 1e-2)


@pytest.mark.parametrize("level", [3, 8])
def test_depth_variant_with_oracle_levels_matches_whole_image_rl(infocus, level):
    gt = infocus[:252, :336]
    blurred = nr.simulate(gt, level=level, seed=1)
    whole = nr.deconvolve(blurred, level=level)
    grid = nr.patch_grid(gt.shape)
    dv = nr.deconvolve(blurred, level_map=np.full(grid.shape, level))
    assert psnr(whole, gt) > psnr(blurred, gt) + 1.0
    assert psnr(dv, gt) > psnr(whole, gt) - 0.5
    # depth-invariant with the in-focus PSF barely changes anything
    di = nr.deconvolve(blurred, level=0)
    assert abs(psnr(di, gt) - psnr(blurred, gt)) < 0.5


def test_depth_variant_beats_depth_invariant_on_a_tilt(infocus):
    from napari_refocus.io.samples import oracle_level_map

    gt = infocus[:252, :420]
    field = nr.tilted_level_field(gt.shape, low=0, high=8)
    blurred = nr.simulate(gt, level_field=field, seed=2)
    grid = nr.patch_grid(gt.shape)
    dv = nr.deconvolve(blurred, level_map=oracle_level_map(field, grid))
    di = nr.deconvolve(blurred, level=0)
    assert psnr(dv, gt) > psnr(di, gt) + 1.0


def test_grouped_patches_deconvolve_as_well_as_one_by_one(infocus):
    """group=4 (lbdvd's form): the patches of a level in each 4x4 group share one frame. Each
    keeps its own level (a patch at level 0 stays the input), and the result is as good as
    deconvolving every patch in its own frame, on a real field with three levels."""
    from napari_refocus.io.samples import oracle_level_map

    gt = infocus[:252, :420]
    field = nr.tilted_level_field(gt.shape, low=0, high=8)
    blurred = nr.simulate(gt, level_field=field, seed=2)
    grid = nr.patch_grid(gt.shape)
    levels = oracle_level_map(field, grid)
    levels[0, 0] = 0  # the corner patch read as in focus
    assert len(np.unique(levels)) > 4
    one = nr.deconvolve(blurred, level_map=levels)
    grouped = nr.deconvolve(blurred, level_map=levels, group=4)
    assert psnr(grouped, gt) >= psnr(one, gt) - 0.05
    assert psnr(grouped, gt) > psnr(blurred, gt) + 1.0
    # pixels only the level-0 corner patch covers come back as they were
    np.testing.assert_allclose(grouped[:42, :42], blurred[:42, :42], rtol=1e-6)
    assert np.abs(grouped - one).max() > 0  # a different computation, not a renamed one
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="group"):
            nr.deconvolve(blurred, level_map=levels, group=bad)


def test_group_jobs_do_not_depend_on_the_part_asked_for():
    """A block of the grid gets the same frames, in the same order, as the whole grid has for
    its patches (what makes lbdvd's block form equal to the image in memory)."""
    from napari_refocus.core.rl_groups import group_jobs

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 12, size=(9, 11))
    whole = group_jobs(levels, levels.shape, 4, group_cols=3)
    rows, cols = (3, 7), (2, 9)
    part = group_jobs(levels[3:8, 2:10], levels.shape, 4, rows=rows, cols=cols, group_cols=3)
    ncols = cols[1] - cols[0] + 1
    as_global = [(g, lv, [(n // ncols + rows[0]) * 11 + n % ncols + cols[0] for n in p]) for g, lv, p in part]
    inside = [(g, lv, [n for n in p if rows[0] <= n // 11 <= rows[1] and cols[0] <= n % 11 <= cols[1]])
              for g, lv, p in whole]
    assert as_global == [(g, lv, p) for g, lv, p in inside if p]
    assert all(1 <= lv <= 10 for _, lv, _ in whole)  # level 0 and background are not deconvolved


def test_frame_boxes_cover_each_levels_patches_and_a_part_reads_the_whole_groups():
    """Each (group, level) frame covers the box of that level's patches in its group, no more (a
    lone patch: a one-patch frame); a part of the grid that cuts groups, given the classes of the
    whole groups around it, gets the whole grid's boxes (so its frames, and sums, are memory's)."""
    from napari_refocus.core.rl_groups import job_boxes
    from napari_refocus.methods.lbdvd_global import whole_groups

    levels = np.zeros((9, 11), np.int64)
    levels[1, 2] = 3  # alone in group 0
    levels[4:6, 5:8] = 7  # a 2x3 block in group 4
    levels[7, 4] = 2  # another level in group 4
    levels[8, 10] = 7  # and one more patch of level 7, in group 8
    levels[0:4, 8:11] = 11  # background: not deconvolved
    whole = job_boxes(levels, levels.shape, 4, group_cols=3)
    assert whole == {(0, 3): (1, 1, 2, 2), (4, 7): (0, 1, 1, 3), (4, 2): (3, 3, 0, 0), (8, 7): (0, 0, 2, 2)}
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 12, size=(9, 11))
    whole = job_boxes(levels, levels.shape, 4, group_cols=3)
    for rows, cols in (((3, 7), (2, 9)), ((5, 5), (0, 10)), ((8, 8), (9, 10))):
        wr, wc = whole_groups(rows, 4, 9), whole_groups(cols, 4, 11)
        assert wr[0] % 4 == 0 and wc[0] % 4 == 0 and wr[0] <= rows[0] and wr[1] >= rows[1]
        got = job_boxes(levels[wr[0]:wr[1] + 1, wc[0]:wc[1] + 1], levels.shape, 4, wr, wc, group_cols=3)
        assert got == {k: v for k, v in whole.items() if k in got} and got
        # without the whole groups, a part that cuts a group would read smaller boxes
        cut = job_boxes(levels[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1], levels.shape, 4, rows, cols, group_cols=3)
        assert all(whole[k][0] <= v[0] and v[1] <= whole[k][1] for k, v in cut.items())


def test_rectangular_montage_option(infocus_crop):
    blurred = nr.simulate(infocus_crop, level=5, seed=0)
    grid = nr.patch_grid(blurred.shape, stride=84)
    out = nr.deconvolve(blurred, level_map=np.full(grid.shape, 5), montage_weights="rectangular")
    assert out.shape == blurred.shape
    with pytest.raises(ValueError, match="patch grid"):
        nr.deconvolve(blurred, level_map=np.full(nr.patch_grid(blurred.shape).shape, 5),
                      montage_weights="rectangular")


def test_padding_zeros_option(infocus_crop):
    blurred = nr.simulate(infocus_crop, level=5, seed=0)
    grid = nr.patch_grid(blurred.shape)
    out = nr.deconvolve(blurred, level_map=np.full(grid.shape, 5), padding="zeros")
    assert psnr(out, infocus_crop) > psnr(blurred, infocus_crop)


def test_progress_and_generator(infocus_crop):
    seen = []
    grid = nr.patch_grid(infocus_crop.shape)
    nr.deconvolve(infocus_crop, level_map=np.full(grid.shape, 4), progress=seen.append, batch_size=5)
    assert seen[-1].done == seen[-1].total == grid.shape[0] * grid.shape[1]
    assert len(seen) > 3


def test_input_not_modified(infocus_crop):
    img = np.array(infocus_crop)
    lm = np.full(nr.patch_grid(img.shape).shape, 4)
    before, lm_before = img.copy(), lm.copy()
    nr.deconvolve(img, level_map=lm)
    nr.deconvolve(img, level=4)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(lm, lm_before)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 5)), np.full((90, 90), np.inf), -np.ones((90, 90)), np.zeros((2, 90, 90)),
     np.array([["x"] * 3]), np.zeros((90, 90), dtype=complex)],
)
def test_bad_images(bad):
    with pytest.raises(ValueError):
        nr.deconvolve(bad, level=2)


def test_bad_levels(infocus_crop):
    grid = nr.patch_grid(infocus_crop.shape)
    for lv in (-1, 11, 1.5, None):
        with pytest.raises(ValueError):
            nr.deconvolve(infocus_crop, level=lv)
    with pytest.raises(ValueError, match="patch grid"):
        nr.deconvolve(infocus_crop, level_map=np.zeros((grid.shape[0] + 1, grid.shape[1])))
    with pytest.raises(ValueError, match="found"):
        nr.deconvolve(infocus_crop, level_map=np.full(grid.shape, 12))
    with pytest.raises(ValueError, match="exactly one"):
        nr.deconvolve(infocus_crop, level=2, level_map=np.full(grid.shape, 2))
    with pytest.raises(ValueError):
        nr.deconvolve(infocus_crop, level=2, iterations=0)
    with pytest.raises(ValueError, match="cuda"):
        if not torch.cuda.is_available():
            nr.deconvolve(infocus_crop, level=2, device="cuda")
        else:
            raise ValueError("cuda present: nothing to check")


@pytest.mark.parametrize("before", [False, True])
def test_deconvolve_restores_the_callers_flush_denormal_mode(before):
    from napari_refocus.core.torchstate import denormals_flushed

    if not torch.set_flush_denormal(before):
        pytest.skip("this CPU cannot flush subnormal floats")
    try:
        assert denormals_flushed() is before
        nr.deconvolve(np.full((90, 90), 100.0, dtype=np.float32), level=3, iterations=2)
        assert denormals_flushed() is before
    finally:
        torch.set_flush_denormal(False)


def test_flush_denormal_is_on_inside_and_restored_after_an_error():
    from napari_refocus.core.torchstate import denormals_flushed, flush_denormal

    torch.set_flush_denormal(False)
    with pytest.raises(RuntimeError, match="inside"):
        with flush_denormal() as on:
            assert denormals_flushed() is on
            raise RuntimeError("inside")
    assert not denormals_flushed()
    with flush_denormal(False) as on:
        assert not on and not denormals_flushed()


def test_torch_threads_restores_the_thread_count():
    from napari_refocus.core.torchstate import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(-2):
            pass


def test_otf_bank_levels_are_rows_of_the_full_bank():
    optics, shape = Optics(), (135, 128)
    full = otf_bank(optics, shape, "cpu")
    assert full.shape == (optics.n_levels, 135, 65)
    assert torch.equal(otf_bank(optics, shape, "cpu", [7, 2, 7]), full[[7, 2, 7]])
    with pytest.raises(ValueError, match="outside"):
        otf_bank(optics, shape, "cpu", [optics.n_levels])


def test_otf_cache_keeps_only_the_levels_used_within_its_byte_budget(monkeypatch):
    from napari_refocus.core import otf
    from napari_refocus.core.lru import LRU

    n = fft_size(200 + Optics().psf_size // 2)  # the FFT frame of a 200x200 image
    cache = LRU(max_bytes=3 * n * (n // 2 + 1) * 8)  # room for three of its spectra
    monkeypatch.setattr(otf, "_CACHE", cache)
    img = np.full((200, 200), 50.0, dtype=np.float32)
    nr.deconvolve(img, level=4, iterations=1)
    assert [key[-1] for key in cache.keys()] == [4]  # one level, not the whole bank
    grid = nr.patch_grid(img.shape)
    nr.deconvolve(img, level_map=np.full(grid.shape, 2), iterations=1)
    assert sorted(key[-1] for key in cache.keys()) == [2, 4]
    for lv in (5, 6, 7):
        nr.deconvolve(img, level=lv, iterations=1)
    assert cache.nbytes <= cache.max_bytes and len(cache) == 3
    assert [key[-1] for key in cache.keys()] == [5, 6, 7]  # least recently used left first
    big = LRU(max_bytes=cache.max_bytes // 4)  # smaller than one spectrum: nothing is kept
    monkeypatch.setattr(otf, "_CACHE", big)
    out = nr.deconvolve(img, level=4, iterations=1)
    assert big.nbytes == 0 and np.isfinite(out).all()


@pytest.mark.parametrize("boundary, initial", [("normalized", "observed"), ("normalized", "flat"),
                                               ("zero", "observed"), ("zero", "flat")])
def test_tiled_whole_image_rl_equals_the_whole_frame(infocus, boundary, initial):
    """Depth-invariant RL a tile at a time (bounded memory) gives the whole FFT frame's values
    up to float32 rounding, with tiles that wrap around the frame's edges."""
    from napari_refocus.core.progress import drain
    from napari_refocus.core.rl import _whole_image
    from napari_refocus.core.rl_image import iter_richardson_lucy_image

    img = np.clip(nr.simulate(infocus, level=6, seed=0), 0, 65535).astype(np.uint16)[:300, :410]
    optics = Optics()
    cpu = torch.device("cpu")
    whole = drain(_whole_image(img, boundary, optics, 6, cpu, 8, initial)).numpy()  # a 320x432 frame: whole
    steps = []
    tiled = drain(iter_richardson_lucy_image(img, optics=optics, level=6, iterations=8, device=cpu,
                                             boundary=boundary, initial=initial, tile=100), steps.append).numpy()
    assert [p.done for p in steps] == list(range(1, 9))
    assert tiled.dtype == np.float32 and tiled.shape == img.shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=2e-5 * float(whole.max()))
    assert float(np.abs(tiled - img).max()) > 100, "it deconvolved"


@pytest.mark.parametrize("shape", [(20, 500), (36, 600), (37, 38)])
def test_tiled_rl_of_images_with_no_interior_equals_the_whole_frame(shape):
    """Images at most two PSF radii thin (no pixel whose PSF lies wholly on data): the tiled
    form keeps the whole normalisation frame (core.rl_image._Bands) and agrees as well."""
    from napari_refocus.core.progress import drain
    from napari_refocus.core.rl import _whole_image
    from napari_refocus.core.rl_image import iter_richardson_lucy_image

    img = np.random.default_rng(0).poisson(1000, size=shape).astype(np.uint16)
    cpu = torch.device("cpu")
    whole = drain(_whole_image(img, "normalized", Optics(), 6, cpu, 8, "observed")).numpy()
    tiled = drain(iter_richardson_lucy_image(img, optics=Optics(), level=6, iterations=8, device=cpu,
                                             tile=64)).numpy()
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=2e-5 * float(whole.max()))


def test_big_images_take_the_tiled_path_and_agree(monkeypatch, infocus):
    from napari_refocus.core import rl

    img = np.clip(nr.simulate(infocus, level=4, seed=0), 0, 65535).astype(np.uint16)[:260, :300]
    ref = nr.deconvolve(img, level=4, iterations=5)
    calls = []
    real = rl.iter_richardson_lucy_image

    def spy(*args, **kw):
        calls.append(kw.get("tile"))
        return (yield from real(*args, **kw, tile=128))

    monkeypatch.setattr(rl, "WHOLE_FRAME_MAX", 1000)
    monkeypatch.setattr(rl, "iter_richardson_lucy_image", spy)
    out = nr.deconvolve(img, level=4, iterations=5)
    assert calls == [None]
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * float(ref.max()))


def test_cpu_batch_size_does_not_change_depth_variant_results(infocus_crop):
    """Patches are deconvolved independently: a batch of 8 (the CPU default) and of 32 agree
    bit for bit, so lbdvd's block form (other batches) equals its in-memory form."""
    img = nr.simulate(infocus_crop, level=5, seed=0).astype(np.float32)
    grid = nr.patch_grid(img.shape)
    levels = np.random.default_rng(0).integers(0, 11, grid.shape)
    a = nr.deconvolve(img, level_map=levels, iterations=4, batch_size=8)
    b = nr.deconvolve(img, level_map=levels, iterations=4, batch_size=32)
    np.testing.assert_array_equal(a, b)


def test_a_patch_alone_in_its_chunk_gives_the_same_bits(infocus_crop):
    """A chunk of one patch is deconvolved with a copy of it (rl.MIN_BATCH): the CPU's FFT of a
    batch of one rounds differently, so without it a patch's result depended on its chunk."""
    from napari_refocus.core.progress import drain
    from napari_refocus.core.rl import deconvolve_patches

    img = torch.from_numpy(nr.simulate(infocus_crop, level=5, seed=0).astype(np.float32))
    patches = extract_patches(img, nr.patch_grid(img.shape), context=13)[:5]
    levels = np.array([3, 5, 7, 9, 10])
    together = drain(deconvolve_patches(patches, levels, iterations=3, device="cpu", batch_size=5))
    alone = drain(deconvolve_patches(patches, levels, iterations=3, device="cpu", batch_size=1))
    assert torch.equal(alone, together)


@pytest.mark.parametrize("shape", [(10, 10), (1, 500), (500, 3), (1, 1)])
def test_images_narrower_than_the_psf_are_blurred_and_deconvolved(shape):
    """A crop narrower than the level-10 PSF (37 px here) once failed inside the OTF (the PSF did
    not fit its FFT frame); now its frame holds the PSF, the simulator mirrors the strip as often
    as it takes (it kept 4 % of a 1x500 line's light before), and RL returns a finite image."""
    flat = np.full(shape, 300.0, dtype=np.float32)
    blurred = nr.simulate(flat, level=10, noise=None)
    np.testing.assert_allclose(blurred, 300.0, rtol=1e-4)
    out = nr.refocus(flat, method="rl", level=10, iterations=5).image
    assert out.shape == shape and np.isfinite(out).all()
    # a flat field is a fixed point of normalised RL: nothing to sharpen
    np.testing.assert_allclose(out, 300.0, rtol=1e-3)


def test_magnitude_scale_leaves_counts_alone_and_scales_extremes_by_powers_of_two():
    from napari_refocus.core.rl_batch import SAFE_PEAK, magnitude_scale

    for peak in (SAFE_PEAK[0], 1.0, 4095.0, 65535.0, 2.0**31, SAFE_PEAK[1], 0.0, float("nan")):
        assert magnitude_scale(peak) == 1.0
    for peak in (1e-30, 3e-4, 5e9, 1e30, 3e38):
        s = magnitude_scale(peak)
        assert s == 2.0 ** round(np.log2(s)) and 2.0**11 <= peak / s < 2.0**12


@pytest.mark.parametrize("method", ["lbdvd", "rl", "comi-cyclegan"])
def test_a_float_images_units_do_not_change_the_result(infocus_crop, method):
    """The same field in units 2^-100 / 2^100 of counts gives the same numbers, scaled
    (powers of two are exact); in units of 1e-30 and 1e30 the same up to float32 rounding. Before
    the scaling, RL returned zeros at 1e-30 and NaN at 1e30."""
    img = np.clip(nr.simulate(infocus_crop, level=5, seed=0), 0, None).astype(np.float32)
    params = {"level": 4} if method == "rl" else {}
    ref = nr.refocus(img, method=method, device="cpu", **params).image
    for units in (2.0**-100, 2.0**100):
        got = nr.refocus(img * np.float32(units), method=method, device="cpu", **params).image
        np.testing.assert_array_equal(got / np.float32(units), ref)
    for units in (1e-30, 1e30):
        got = nr.refocus(img * np.float32(units), method=method, device="cpu", **params).image / np.float32(units)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(ref.max()))


def test_tiled_whole_image_rl_in_extreme_units(infocus):
    """The tile-by-tile whole-image RL (big frames) scales its data the same way."""
    from napari_refocus.core.progress import drain
    from napari_refocus.core.rl_image import iter_richardson_lucy_image

    img = np.clip(nr.simulate(infocus, level=6, seed=0), 0, None).astype(np.float32)[:200, :260]

    def run(x):
        return drain(iter_richardson_lucy_image(x, optics=Optics(), level=6, iterations=5, device=torch.device("cpu"),
                                                tile=100)).numpy()

    ref = run(img)
    for units in (2.0**-100, 2.0**100):
        np.testing.assert_array_equal(run(img * np.float32(units)) / np.float32(units), ref)
