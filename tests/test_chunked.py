"""Block-wise processing equals in-memory processing (no seams), for numpy, dask and zarr input."""

from pathlib import Path

import numpy as np
import pytest
import torch

import napari_refocus as nr
from napari_refocus.methods.lbdvd_blocks import iter_blocks, plan_blocks, read_region
from napari_refocus.bigimage import lazy_method
from napari_refocus.core.tiling import extract_patches


def classify_by_contrast(core):
    """A deterministic stand-in classifier (test only): level from the patch's contrast."""
    m = core.reshape(len(core), -1)
    lv = ((m.std(1) / m.mean(1)) * 20).clamp(0, 10).long().numpy()
    p = np.zeros((len(core), 12))
    p[np.arange(len(core)), lv] = 1
    return p


def classify_blocks(core):
    """The block form's classifier protocol: (probabilities, levels)."""
    p = classify_by_contrast(core)
    return p, p.argmax(1)


@pytest.fixture(scope="module")
def big(infocus):
    gt = np.tile(infocus, (2, 2))[:700, :950]
    return nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=9), seed=0)


def test_submodule_import_does_not_shadow_functions():
    import napari_refocus.core.metrics  # noqa: F401
    import napari_refocus.core.forward  # noqa: F401

    assert callable(nr.simulate) and callable(nr.metrics)


def test_plan_covers_every_pixel_once():
    grid, blocks = plan_blocks((1000, 1300), block=420)
    cover = np.zeros((1000, 1300), int)
    for b in blocks:
        cover[b.y0:b.y1, b.x0:b.x1] += 1
    assert (cover == 1).all()
    with pytest.raises(ValueError, match="multiple"):
        plan_blocks((100, 100), block=100)


def test_read_region_mirrors_like_torch():
    a = np.arange(50 * 60, dtype=np.float32).reshape(50, 60)
    ref = torch.nn.functional.pad(torch.from_numpy(a)[None, None], (5, 7, 3, 9), mode="reflect")[0, 0].numpy()
    np.testing.assert_array_equal(read_region(a, -3, 59, -5, 67), ref)


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_blocks_equal_in_memory(big, kind, tmp_path):
    grid = nr.patch_grid(big.shape)
    core = extract_patches(torch.from_numpy(big.astype(np.float32)), grid, context=0, mode="reflect")
    level_map = classify_by_contrast(core).argmax(1).reshape(grid.shape)
    assert len(np.unique(level_map)) > 3
    ref = nr.deconvolve(big, level_map=level_map)
    source = big
    if kind == "dask":
        da = pytest.importorskip("dask.array")
        source = da.from_array(big, chunks=(256, 256))
    elif kind == "zarr":
        import tifffile
        import zarr

        tifffile.imwrite(tmp_path / "big.tif", big, tile=(128, 128))
        source = zarr.open(tifffile.imread(tmp_path / "big.tif", aszarr=True), mode="r")
    out = np.zeros(big.shape, np.float32)
    levels = np.full(grid.shape, -1)
    for _, blk, restored, (lv, _) in iter_blocks(source, classify=classify_blocks, block=336):
        out[blk.y0:blk.y1, blk.x0:blk.x1] = restored
        levels[blk.rows[0]:blk.rows[1] + 1, blk.cols[0]:blk.cols[1] + 1] = lv
    np.testing.assert_array_equal(levels, level_map)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)


WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "delpnet.safetensors"


@pytest.mark.skipif(not WEIGHTS.exists(), reason="weights/delpnet.safetensors not trained yet")
def test_lazy_lbdvd_on_dask_equals_in_memory(big):
    da = pytest.importorskip("dask.array")
    lazy = nr.refocus(da.from_array(big, chunks=(300, 300)), method="lbdvd", device="cpu")
    assert type(lazy.image).__module__.startswith("dask") and lazy.defocus_map is None
    eager = nr.refocus(big, method="lbdvd", device="cpu")
    np.testing.assert_array_equal(np.asarray(lazy.image), eager.image)  # the same sums in the same order
    # blocks of any size that holds the halo, not only multiples of the patch stride (42)
    np.testing.assert_array_equal(np.asarray(lazy_method(big, "lbdvd", device="cpu", block=250)), eager.image)
    dmap = nr.defocus_map(da.from_array(big, chunks=(300, 300)), device="cpu")
    np.testing.assert_array_equal(dmap.levels, eager.defocus_map.levels)


def _max_rel_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.ptp(b) + 1e-9))


def test_rl_block_by_block_matches_in_memory(big):
    """Depth-invariant RL on dask input: blocks read with their halo give the in-memory result."""
    da = pytest.importorskip("dask.array")
    eager = nr.refocus(big, method="rl", level=4, device="cpu").image
    lazy = nr.refocus(da.from_array(big, chunks=(256, 256)), method="rl", level=4, device="cpu")
    assert type(lazy.image).__module__.startswith("dask")  # one 2016-px block here
    np.testing.assert_allclose(np.asarray(lazy.image), eager, rtol=1e-5, atol=1e-2)
    from napari_refocus.bigimage import lazy_method

    # Richardson-Lucy alone (never_worse=False): 9 blocks of 256 px, 96 px of halo each, against the image
    plain = nr.refocus(big, method="rl", level=4, device="cpu", never_worse=False).image
    small = np.asarray(lazy_method(da.from_array(big), "rl", block=256, level=4, device="cpu", never_worse=False))
    assert small.shape == big.shape
    assert _max_rel_diff(small, plain) < 0.02
    assert np.abs(small - plain).mean() / np.ptp(plain) < 1e-4
    # gated (the default): the blocks' weights are the image's (the gate reads the whole image's patch
    # grid), so the gated blocks differ from the image only where Richardson-Lucy's blocks do, and no more
    gated = np.asarray(lazy_method(da.from_array(big), "rl", block=256, level=4, device="cpu"))
    w = np.asarray(nr.refocus(big, method="rl", level=4, device="cpu").gate_weights)
    assert 0.05 < (w > 0.01).mean() < 0.95  # the tilt: in focus at the top, defocused further down
    np.testing.assert_allclose(gated, big + w * (small - big), rtol=0, atol=0.05)
    np.testing.assert_allclose(gated, eager, rtol=0, atol=np.abs(small - plain).max() + 0.05)


def test_method_blocks_to_tiff_and_errors(big, tmp_path, monkeypatch):
    import tifffile

    from napari_refocus.bigimage import lazy_method
    from napari_refocus.io import refocus_to_tiff
    from napari_refocus.methods import get_method

    out = refocus_to_tiff(big, tmp_path / "rl.tif", method="rl", block=256, level=4, device="cpu",
                          pixel_um=0.65)
    eager = nr.refocus(big, method="rl", level=4, device="cpu").image
    got = tifffile.imread(out)
    assert got.shape == big.shape and got.dtype == big.dtype
    # as far as Richardson-Lucy's blocks differ from the image (test_rl_block_by_block_matches_in_memory:
    # 2 % of the ungated result's range)
    plain = nr.refocus(big, method="rl", level=4, device="cpu", never_worse=False).image
    assert np.abs(got.astype(np.float32) - eager).max() < 0.02 * np.ptp(plain)
    lbdvd = get_method("lbdvd")
    import napari_refocus.methods.lbdvd_global as lg

    seen = {}
    real_deconvolve, real_map = lg.deconvolve_block, lg.map_patches
    monkeypatch.setattr(lg, "deconvolve_block", lambda *a, **kw: seen.update(kw) or real_deconvolve(*a, **kw))
    monkeypatch.setattr(lg, "map_patches", lambda *a, **kw: seen.update(map=kw) or real_map(*a, **kw))
    restore = lbdvd.block_runner(lbdvd.parse(iterations=5, pixel_um=0.65, na=0.5, stride=42, tta=True), device="cpu")
    restore(big, (0, 84, 0, 84))
    # the values reach the block form, none silently dropped
    assert seen["iterations"] == 5 and seen["optics"].pixel_um == 0.65 and seen["map"]["tta"] is True
    # at DelpNet's own sampling a block reads one patch + context around it, and 3 strides more:
    # the patches of a level in each 4x4 group are deconvolved in one frame (core.rl_groups.group_jobs)
    assert restore.halo == 96 + 3 * 42
    assert lbdvd.block_runner(lbdvd.parse(pixel_um=0.3), device="cpu").halo > 96  # any sampling runs
    for bad in ({"stride": 21}, {"padding": "zeros"}, {"montage_weights": "rectangular"}):
        with pytest.raises(ValueError, match=next(iter(bad))):  # not silently ignored
            lbdvd.block_runner(lbdvd.parse(**bad), device="cpu")
    with pytest.raises(ValueError, match="halo"):  # any size that holds the halo (no multiple of 42)
        lazy_method(big, "lbdvd", block=64)
    with pytest.raises(ValueError, match="halo"):
        lazy_method(big, "rl", block=64)


GEN_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "m-deblurgan.safetensors"


@pytest.mark.skipif(not GEN_WEIGHTS.exists(), reason="weights/m-deblurgan.safetensors not shipped")
def test_upscaling_generator_on_dask_blocks(big, tmp_path):
    """A x2 generator block by block: lazy output and tiled TIFF twice the size (half the pixel
    size), close to the in-memory run."""
    da = pytest.importorskip("dask.array")
    from napari_refocus.bigimage import lazy_method
    from napari_refocus.io import refocus_to_tiff

    img = big[:300, :400]
    # a block reads the tiles that touch it (128 px) and the gate's map patches and their neighbours (171 px)
    tiling = {"tile": 128, "overlap": 32}
    eager = nr.refocus(img, method="m-deblurgan", device="cpu", **tiling).image
    lazy = lazy_method(da.from_array(img), "m-deblurgan", block=192, device="cpu", **tiling)
    assert lazy.shape == eager.shape == (600, 800)
    got = np.asarray(lazy)
    np.testing.assert_array_equal(got, eager)  # the same tiles of the whole image's grid
    out = refocus_to_tiff(img, tmp_path / "x2.tif", method="m-deblurgan", block=192, device="cpu", pixel_um=0.65,
                          **tiling)
    tif, info = nr.read_image(out)
    assert tif.shape == (600, 800) and info["pixel_um"] == pytest.approx(0.325)
    assert np.abs(tif.astype(np.float32) - got).max() <= 1.0  # the same blocks, cast to uint16


# ------------------------------------------------- the generic executor, on a toy method
def _toy_method(upscale=1, counter=None):
    """A method that needs 1 px of context and a whole-image statistic (its mean)."""
    from dataclasses import dataclass

    from napari_refocus.core.progress import Progress
    from napari_refocus.methods.base import Method
    from napari_refocus.methods.params import Params

    @dataclass(frozen=True)
    class NoParams(Params):
        pass

    def mean(image, *, params=None, sample_stride=1):  # the image_stats hook's contract
        if counter is not None:
            counter.append(1)
        return {"stats": float(np.asarray(image, np.float64).mean())}

    def run(image, params, *, device, report, stats=None):
        lo = mean(image)["stats"] if stats is None else stats
        p = np.pad(np.asarray(image, np.float32), 1, mode="edge")
        out = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] + p[1:-1, 1:-1]) / 5 - np.float32(lo)
        yield Progress(1, 1, "toy")
        return np.kron(out, np.ones((upscale, upscale), np.float32))

    return Method(name="toy", title="toy", description="", schema=NoParams, run=run, upscale=upscale, halo=16,
                  inputs=("stats",), image_stats=mean)


@pytest.mark.parametrize("upscale", [1, 2])
def test_any_method_on_dask_blocks_equals_in_memory(big, upscale):
    """map_overlap with the halo (short last blocks included) and whole-image statistics give
    the in-memory result exactly; statistics per block would not."""
    import dataclasses

    from napari_refocus.bigimage import iter_method_blocks, lazy_method
    from napari_refocus.core.progress import drain

    da = pytest.importorskip("dask.array")
    img = big[:200, :135]  # 64-px blocks: last row and column of blocks 8 and 7 px < the 16-px halo
    calls = []
    toy = _toy_method(upscale, calls)
    eager = drain(toy.run(img, toy.parse(), device="cpu", report=None))
    calls.clear()
    lazy = lazy_method(da.from_array(img, chunks=(50, 50)), toy, block=64, device="cpu")
    assert lazy.shape == eager.shape == (200 * upscale, 135 * upscale)
    assert lazy.chunks[0] == tuple(n * upscale for n in (64, 64, 64, 8))
    np.testing.assert_array_equal(np.asarray(lazy), eager)
    assert len(calls) == 1  # once for the whole image, not per block
    written = np.zeros_like(eager)
    for _, (y0, y1, x0, x1), out in iter_method_blocks(img, toy, block=64, device="cpu"):
        written[y0 * upscale:y1 * upscale, x0 * upscale:x1 * upscale] = out
    np.testing.assert_array_equal(written, eager)
    per_block = dataclasses.replace(toy, image_stats=None)
    assert not np.allclose(np.asarray(lazy_method(img, per_block, block=64, device="cpu")), eager)


def test_whole_image_statistics_from_a_strided_subsample(big, tmp_path):
    """Above the pixel limit the statistics come from image[::s, ::s], read block by block."""
    import tifffile
    import zarr

    from napari_refocus.bigimage import whole_image_sample

    sample, s = whole_image_sample(big, block=100, max_pixels=10_000)
    assert s == 9 and sample.size <= 10_000
    np.testing.assert_array_equal(sample, big[::9, ::9].astype(np.float32))
    tifffile.imwrite(tmp_path / "big.tif", big, tile=(64, 64))
    store = zarr.open(tifffile.imread(tmp_path / "big.tif", aszarr=True), mode="r")
    np.testing.assert_array_equal(whole_image_sample(store, block=100, max_pixels=10_000)[0], sample)
    whole, s = whole_image_sample(store)
    assert s == 1
    np.testing.assert_array_equal(whole, big.astype(np.float32))


COMI = Path(__file__).resolve().parents[1] / "weights" / "comi-cyclegan.safetensors"


@pytest.mark.skipif(not COMI.exists(), reason="weights/comi-cyclegan.safetensors not shipped")
def test_learned_method_blocks_share_one_normalisation(big, monkeypatch):
    """A generator on dask blocks normalises once for the whole image: every block uses the
    in-memory run's (lo, scale), and the result equals the in-memory one (per-block statistics
    would not)."""
    import dataclasses

    import napari_refocus.models.predict as predict
    from napari_refocus.bigimage import lazy_method
    from napari_refocus.methods import get_method

    da = pytest.importorskip("dask.array")
    img = big[:300, :400]
    tiling = {"tile": 128, "overlap": 32}  # halo 171 px (the gate's map patches and their neighbours)
    eager = nr.refocus(img, method="comi-cyclegan", device="cpu", **tiling)
    calls = []
    real = predict.intensity_stats
    monkeypatch.setattr(predict, "intensity_stats", lambda x, *a, **k: calls.append(x.shape) or real(x, *a, **k))
    lazy = lazy_method(da.from_array(img), "comi-cyclegan", block=192, device="cpu", **tiling)
    got = np.asarray(lazy)
    assert calls == [img.shape]  # the whole image, once; 6 blocks
    monkeypatch.setattr(predict, "intensity_stats", real)
    np.testing.assert_array_equal(got, eager.image)
    per_block = np.asarray(lazy_method(img, dataclasses.replace(get_method("comi-cyclegan"), image_stats=None),
                                       block=192, device="cpu", **tiling))
    assert np.abs(per_block - eager.image).max() > 1e-3 * np.ptp(eager.image)
