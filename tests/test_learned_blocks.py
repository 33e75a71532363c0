"""The learned generators block by block equal to in memory (issue 15), and their lean tiling (16).

* :mod:`napari_refocus.models.stitch`: the tile grid of the whole image, mirrored reads by index;
* :func:`napari_refocus.models.predict.iter_predict_window`: any window equals the same pixels
  of the whole image's tiled result, bit for bit; the tiling equals the previous whole-image
  form (mirrored copy, 2-D accumulators) up to float32 rounding;
* every generator through ``lazy_method`` (dask blocks that align with nothing) equals the
  in-memory run bit for bit, without optics, at the training sampling (resampled coarser and
  finer) and with the never-worse gate on and off.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import napari_refocus as nr
from napari_refocus.core.progress import drain
from napari_refocus.models.predict import iter_predict_window, predict_tiled
from napari_refocus.models.stitch import TileGrid, mirror_index, tent, tile_layout

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_mirror_index_is_numpy_pad(n):
    a = np.arange(n) * 10
    for before, after in ((0, 3), (4, 0), (3 * n + 1, 2), (1, 5 * n + 3)):
        idx = np.arange(-before, n + after)
        for mode in ("reflect", "edge"):
            if mode == "reflect" and n == 1:
                continue
            np.testing.assert_array_equal(a[mirror_index(idx, n, mode)], np.pad(a, (before, after), mode=mode))


def test_tile_grid_covers_the_image_from_the_layout():
    grid = TileGrid.plan((700, 950), tile=256, overlap=48, multiple=16, upscale=2)
    (ty, tx), margin, corners = tile_layout((700, 950), 256, 48, 16)
    assert grid.tile == (ty, tx) and ty % 16 == 0 and tx % 16 == 0
    assert [(y - margin, x - margin) for y, x in corners] == [(y, x) for y in grid.starts_y for x in grid.starts_x]
    assert grid.starts_y[0] == -margin and grid.starts_y[-1] + ty >= 700 + margin
    # the normaliser is the sum of the tiles' tents: positive everywhere on the output
    den = grid.normaliser(0, 0, 1400)
    assert den.min() > 0 and den.shape == (1400,)
    # a window's tiles are those whose output touches it, row by row
    box = (300, 301, 0, 1900)
    assert all(grid.starts_y[i] * 2 < 301 and (grid.starts_y[i] + ty) * 2 > 300 for i, _ in grid.tiles(box))
    assert grid.tiles((0, 1400, 0, 1900)) == [(i, j) for i in range(len(grid.starts_y))
                                               for j in range(len(grid.starts_x))]


class _Toy(torch.nn.Module):
    """A small network with a 5x5 reach (and x2 output), a multiple of 8."""

    def __init__(self, upscale=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4 * upscale ** 2, 5, padding=2, padding_mode="zeros")
        self.out = torch.nn.Conv2d(4 * upscale ** 2, upscale ** 2, 1)
        self.multiple, self.upscale = 8, upscale

    def forward(self, x):
        y = self.out(torch.tanh(self.conv(x)))
        return torch.nn.functional.pixel_shuffle(y, self.upscale) if self.upscale > 1 else y


def _previous_tiling(net, image, *, tile, overlap):
    """The tiling before the global grid's windows (a mirrored copy, 2-D num and den)."""
    from napari_refocus.models.predict import intensity_stats

    lo, scale = intensity_stats(image)
    x = (image.astype(np.float32) - np.float32(lo)) / np.float32(scale)
    h, w = x.shape
    r = net.upscale
    (ty, tx), margin, corners = tile_layout((h, w), tile, overlap, net.multiple)
    ys, xs = max(c[0] for c in corners) + ty, max(c[1] for c in corners) + tx
    padded = np.pad(x, ((margin, ys - h - margin), (margin, xs - w - margin)), mode="reflect")
    weight = np.outer(tent(ty * r), tent(tx * r))
    num = np.zeros((ys * r, xs * r), np.float32)
    den = np.zeros_like(num)
    with torch.inference_mode():
        for y, x0 in corners:
            p = net(torch.from_numpy(np.ascontiguousarray(padded[y:y + ty, x0:x0 + tx]))[None, None])[0, 0].numpy()
            num[y * r:(y + ty) * r, x0 * r:(x0 + tx) * r] += p * weight
            den[y * r:(y + ty) * r, x0 * r:(x0 + tx) * r] += weight
    out = (num / den)[margin * r:(margin + h) * r, margin * r:(margin + w) * r]
    return out * np.float32(scale) + np.float32(lo)


@pytest.mark.parametrize("upscale", [1, 2])
def test_any_window_equals_the_whole_and_the_previous_tiling(upscale):
    rng = np.random.default_rng(upscale)
    image = rng.integers(100, 4000, size=(150, 230)).astype(np.uint16)
    net = _Toy(upscale).eval()
    kw = {"tile": 64, "overlap": 16, "device": "cpu"}
    whole = predict_tiled(net, image, **kw)
    assert whole.shape == (150 * upscale, 230 * upscale) and whole.dtype == np.float32
    previous = _previous_tiling(net, image, tile=64, overlap=16)
    np.testing.assert_allclose(whole, previous, rtol=0, atol=2e-6 * float(np.ptp(previous)))
    from napari_refocus.models.predict import intensity_stats

    stats = intensity_stats(image)
    for _ in range(6):
        y0, x0 = (int(rng.integers(0, n * upscale - 1)) for n in image.shape)
        box = (y0, int(rng.integers(y0 + 1, 150 * upscale + 1)), x0, int(rng.integers(x0 + 1, 230 * upscale + 1)))
        part = drain(iter_predict_window(net, image, stats=stats, out_box=box, **kw))
        np.testing.assert_array_equal(part, whole[box[0]:box[1], box[2]:box[3]])


def test_a_tile_cache_runs_each_tile_once_over_the_blocks():
    from napari_refocus.bigimage import block_bounds
    from napari_refocus.models.predict import intensity_stats, plan_grid
    from napari_refocus.models.stitch import TileCache

    image = np.random.default_rng(3).integers(100, 4000, size=(200, 260)).astype(np.uint16)
    net = _Toy(2).eval()
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    kw = {"tile": 64, "overlap": 16, "device": "cpu", "batch_size": 1}  # passes = tiles run
    whole = predict_tiled(net, image, **kw)
    n_tiles = len(plan_grid(net, image.shape, tile=64, overlap=16).tiles((0, 400, 0, 520)))
    assert sum(calls) == n_tiles
    calls.clear()
    cache, stats, out = TileCache(), intensity_stats(image), np.zeros_like(whole)
    for y0, y1, x0, x1 in block_bounds(image.shape, 70):
        box = (2 * y0, 2 * y1, 2 * x0, 2 * x1)
        out[box[0]:box[1], box[2]:box[3]] = drain(iter_predict_window(net, image, stats=stats, out_box=box,
                                                                      cache=cache, **kw))
    np.testing.assert_array_equal(out, whole)
    assert sum(calls) == n_tiles  # blocks row by row: no tile ran twice


def test_every_pass_runs_a_full_batch():
    """A short batch is filled with copies of its last tile: each tile runs in a batch of
    ``batch_size`` whichever tiles share it (the CPU's kernels round other batch sizes differently)."""
    image = np.random.default_rng(4).integers(100, 4000, size=(150, 230)).astype(np.uint16)
    net = _Toy().eval()
    sizes = []
    net.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    predict_tiled(net, image, tile=64, overlap=16, device="cpu", batch_size=4)
    assert set(sizes) == {4}


def test_intensity_stats_are_normalise_s_without_the_copy():
    from napari_refocus.models.predict import intensity_stats, normalise

    image = np.random.default_rng(0).integers(0, 60000, size=(90, 70)).astype(np.uint16)
    before = image.copy()
    assert intensity_stats(image) == normalise(image)[1]
    np.testing.assert_array_equal(image, before)  # the caller's array untouched
    flat = np.full((20, 20), 7.0, np.float32)
    assert intensity_stats(flat) == normalise(flat)[1] == (7.0, 1.0)


# ------------------------------------------------------------ the four generators, by blocks
CASES = [  # (optics, never_worse, block): blocks that align with no tile and no patch
    (None, True, 174),
    (None, False, 174),
    ({"pixel_um": 0.65, "na": 0.75}, True, 150),  # coarser than the training sampling: 1.5x up
    ({"pixel_um": 0.2, "na": 0.75}, False, 310),  # finer: 0.46x down
    ({"pixel_um": 0.2, "na": 0.75}, True, 372),
]


@pytest.fixture(scope="module")
def field():
    from napari_refocus.io.samples import infocus_image

    img = np.clip(nr.simulate(infocus_image(), level=4, seed=0), 0, 65535).astype(np.uint16)
    return np.ascontiguousarray(np.tile(img, (2, 2))[:430, :530])


# comi-cyclegan (the fastest) runs every case; the slower generators the two gated ones
GENERATOR_CASES = [("comi-cyclegan", *case) for case in CASES] + [
    (name, *case) for name in ("refocus-unet", "m-deblurgan", "h2t-msunet") for case in (CASES[0], CASES[2])]


@pytest.mark.parametrize(("name", "optics", "never_worse", "block"), GENERATOR_CASES)
def test_generator_blocks_equal_in_memory(field, name, optics, never_worse, block):
    """Bit for bit: the tiles of the whole (resampled) image's grid, resampling windows of the
    global grid, the gate's DelpNet patches of the global canonical grid."""
    da = pytest.importorskip("dask.array")
    from napari_refocus.bigimage import lazy_method

    if not (WEIGHTS / f"{name}.safetensors").exists():
        pytest.skip(f"weights/{name}.safetensors not shipped")
    import dask

    kw = {"tile": 128, "overlap": 32, "never_worse": never_worse, **(optics or {})}
    eager = nr.refocus(field, method=name, device="cpu", **kw)
    lazy = lazy_method(da.from_array(field, chunks=(97, 111)), name, block=block, device="cpu", **kw)
    # the blocks in this thread: torch's thread count is per thread, and a convolution's float32
    # sums depend on it (refocus-unet, h2t-msunet: 1 ulp between 1 and 2 threads); dask's pool
    # threads keep the count they were started with
    with dask.config.set(scheduler="synchronous"):
        got = np.asarray(lazy)
    r = 2 if name == "m-deblurgan" else 1
    assert got.shape == eager.image.shape == (430 * r, 530 * r)
    np.testing.assert_array_equal(got, eager.image)
    assert (eager.gate_weights is not None) == never_worse


def test_writer_blocks_read_from_the_whole_source_equal_too(field):
    from napari_refocus.bigimage import iter_method_blocks

    if not (WEIGHTS / "comi-cyclegan.safetensors").exists():
        pytest.skip("weights/comi-cyclegan.safetensors not shipped")
    kw = {"tile": 128, "overlap": 32, "pixel_um": 0.65, "na": 0.75}
    eager = nr.refocus(field, method="comi-cyclegan", device="cpu", **kw).image
    out = np.full_like(eager, np.nan)
    for _, (y0, y1, x0, x1), block in iter_method_blocks(field, "comi-cyclegan", block=200, device="cpu", **kw):
        out[y0:y1, x0:x1] = block
    np.testing.assert_array_equal(out, eager)


def test_block_halo_follows_the_tiling():
    from napari_refocus.methods.learned_blocks import halo

    assert halo(tile=1024, overlap=96, multiple=64, scale=1.0) == 1024
    assert halo(tile=128, overlap=32, multiple=8, scale=1.0) == 128
    assert halo(tile=128, overlap=32, multiple=8, scale=2.0) > 2 * 128
    assert halo(tile=0, overlap=32, multiple=8, scale=1.0) > 10 ** 9  # one tile: the whole image


def test_the_default_tile_is_1024_px_of_output(monkeypatch):
    """m-deblurgan (x2) runs 512-px tiles by default, the x1 generators 1024 (each method's
    schema, so the parameters recorded are the ones used); a tile given by the user is used as
    it is, in memory and block by block."""
    import napari_refocus as nr
    from napari_refocus.cli.common import method_options
    from napari_refocus.methods import get_method
    from napari_refocus.methods.learned_blocks import halo
    from napari_refocus.models import predict

    assert get_method("m-deblurgan").defaults["tile"] == 512 and get_method("h2t-msunet").defaults["tile"] == 1024
    assert get_method("m-deblurgan").halo == halo(tile=512, overlap=96, multiple=64, scale=1.0)
    assert get_method("h2t-msunet").halo == halo(tile=1024, overlap=96, multiple=64, scale=1.0)
    assert method_options()["tile"]["default"] is None  # the CLI does not state one default for both
    seen = []
    real = predict.plan_grid

    def spy(model, shape, **kw):
        seen.append(kw["tile"])
        return real(model, shape, **kw)

    monkeypatch.setattr(predict, "plan_grid", spy)  # learned_blocks imports it at each call
    img = (np.random.default_rng(0).random((160, 176)) * 1000).astype(np.uint16)
    res = nr.refocus(img, method="m-deblurgan", device="cpu", never_worse=False)
    assert res.parameters["tile"] == 512
    nr.refocus(img, method="m-deblurgan", device="cpu", never_worse=False, tile=256)
    nr.refocus(img, method="comi-cyclegan", device="cpu", never_worse=False)
    assert seen == [512, 256, 1024]
