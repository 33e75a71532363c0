"""Learned generators: architectures, tiled inference, z-stack pairs, shipped weights."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_refocus.models.predict import predict_tiled  # noqa: E402
from napari_refocus.models.h2t_msunet import HeadToTailUNet  # noqa: E402
from napari_refocus.models.mdeblurgan import MDeblurGenerator  # noqa: E402
from napari_refocus.models.resnet_generator import ResnetGenerator  # noqa: E402
from napari_refocus.models.unet import ResNetUNet  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DFNN_STACK = SHARED / "DFNN_defocus" / "data" / "test" / "mitochondria" / "stack"

TINY = {
    "comi": lambda: ResnetGenerator(width=4, n_blocks=1, norm="none", residual=True, s2d=2),
    "unet": lambda: ResNetUNet(width=4, blocks=(1, 1), decoder_width=4, s2d=2),
    "mdeblur": lambda: MDeblurGenerator(width=4, n_res=1, n_pool=2, upscale=2, s2d=2),
    "h2t": lambda: HeadToTailUNet(width=4, depth=2, n_scales=2, fusion="concat", s2d=2),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_architecture_output_shape(name):
    torch.manual_seed(0)
    m = TINY[name]().eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        y = m(x)
    r = 2 if name == "mdeblur" else 1
    assert y.shape == (2, 1, 64 * r, 64 * r)
    assert m.upscale == r and m.n_parameters > 0 and 64 % m.multiple == 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_inference_without_concatenations_is_the_same_network(name):
    """At inference the decoders convolve each concatenated part with its slice of the weights
    (models.layers.conv_cat) instead of concatenating; with gradients on (training) they
    concatenate. Both are the same function, channels-last or not, with BatchNorm too."""
    torch.manual_seed(0)
    m = TINY[name]().eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.enable_grad():
        want = m(x).detach()
    with torch.inference_mode():
        np.testing.assert_allclose(m(x).numpy(), want.numpy(), atol=1e-5)
        cl = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        np.testing.assert_allclose(cl.numpy(), want.numpy(), atol=1e-5)


def test_conv_cat_takes_parts_made_on_demand_and_checks_channels():
    from napari_refocus.models.layers import DoubleConv, conv_cat

    torch.manual_seed(1)
    block = DoubleConv(7, 5, norm="batch").eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 4, 16, 16)
    with torch.inference_mode():
        want = block(torch.cat([a, b], 1))
        np.testing.assert_allclose(conv_cat(block, (t for t in (a, b))).numpy(), want.numpy(), atol=1e-5)
        made = []
        got = conv_cat(block, (lambda: made.append("a") or a, lambda: made.append("b") or b))
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
        assert made == ["a", "b"]  # each part made when its turn comes
        with pytest.raises(ValueError, match="6 channels"):
            conv_cat(block, (a, b[:, :3]))


INSTANCE_NORM = {  # normalised over the whole tile: never run in bands (models.layers.band_safe)
    "comi-instance": lambda: ResnetGenerator(width=4, n_blocks=1, norm="instance", residual=True, s2d=2),
    "h2t-instance": lambda: HeadToTailUNet(width=4, depth=2, n_scales=2, norm="instance", s2d=2),
}


@pytest.mark.parametrize("name", sorted(TINY) + sorted(INSTANCE_NORM))
def test_full_resolution_stages_in_bands_are_the_whole_network(name, monkeypatch):
    """At inference the networks run their full-resolution ends band by band
    (models.layers.row_bands, BAND_ROWS rows each, a margin of context): bands of 8 rows on a
    tile of 15 bands (odd last band, coarser maps, the up-sampled skips, pooling, x2 output) give
    the whole network's values: the margins cover every stage's receptive radius."""
    from napari_refocus.models import layers

    torch.manual_seed(3)
    m = {**TINY, **INSTANCE_NORM}[name]().eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 240, 72) * 3  # a batch of two tiles (the GPU runs four)
    with torch.enable_grad():  # with gradients: the whole network, concatenations and all
        want = m(x).detach()
    calls = []
    real = layers.row_bands

    def counting(*args, **kwargs):
        calls.append(args[1][0].shape[-2])
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "BAND_ROWS", 8)
    for module in ("unet", "mdeblurgan", "resnet_generator"):
        monkeypatch.setattr(f"napari_refocus.models.{module}.row_bands", counting)
    monkeypatch.setattr(layers, "row_bands", counting)
    with torch.inference_mode():
        got = m(x)
    # (InstanceNorm divides by a tile's spread: float32 rounding of the split convolutions, ~3e-6, grows)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6 if name in TINY else 2e-5)
    if name in TINY:
        assert max(calls) > 8 + 2 * 8  # some stage did run in several bands


def test_row_bands_maps_coarser_parts_and_falls_back_to_whole():
    from napari_refocus.models.layers import row_bands

    a = torch.arange(2 * 40 * 5, dtype=torch.float32).reshape(1, 2, 40, 5)
    b = torch.rand(1, 3, 20, 5)
    seen = []

    def stage(a, b):
        seen.append((a.shape[-2], b.shape[-2]))
        return torch.cat([a, torch.nn.functional.interpolate(b, size=a.shape[-2:])], 1) * 2

    with torch.inference_mode():
        whole = stage(a, b)
        seen.clear()
        np.testing.assert_array_equal(row_bands(stage, (a, b), margin=2, rows=8).numpy(), whole.numpy())
        assert seen[0] == (10, 5) and all(r == 2 * s for r, s in seen)  # coarser rows follow the grid
        total = torch.ones_like(whole)
        assert row_bands(stage, (a, b), margin=2, rows=8, add_to=total) is total
        np.testing.assert_array_equal(total.numpy(), whole.numpy() + 1)
        pooled = row_bands(lambda a: torch.nn.functional.max_pool2d(a, 2), (a,), margin=2, rows=8, downscale=2)
        np.testing.assert_array_equal(pooled.numpy(), torch.nn.functional.max_pool2d(a, 2).numpy())
        seen.clear()
        row_bands(stage, (a, b), margin=3, rows=8)  # an odd margin cannot map onto b's rows: whole
        assert seen == [(40, 20)]
    seen.clear()
    row_bands(stage, (a, b), margin=2, rows=8)  # with gradients (training): whole
    assert seen == [(40, 20)]


def test_paper_configurations_reachable():
    # the paper sizes are reachable by arguments (built, not run)
    assert ResnetGenerator(width=64, n_blocks=9, norm="instance").n_parameters > 10e6
    assert HeadToTailUNet(width=32, depth=4, n_scales=4, fusion="sum").n_parameters > 1e6
    assert MDeblurGenerator(width=64, upscale=4).upscale == 4


@pytest.mark.parametrize("name", ["h2t", "mdeblur"])
def test_tiled_equals_untiled(name):
    torch.manual_seed(0)
    m = TINY[name]().eval()
    rng = np.random.default_rng(0)
    img = (rng.random((150, 190)) * 800 + 100).astype(np.uint16)
    tiled = predict_tiled(m, img, tile=64, overlap=32, batch_size=3)
    untiled = predict_tiled(m, img, tile=0)
    r = m.upscale
    assert tiled.shape == untiled.shape == (150 * r, 190 * r)
    rel = np.abs(tiled - untiled).max() / np.ptp(untiled)
    assert rel < 0.01, rel


def test_freed_heap_handed_back_every_few_tiles_of_a_big_image(monkeypatch):
    """Above core.memory.SMALL_IMAGE_PIXELS the tiled inference hands freed heap back to the
    system every TRIM_EVERY_TILES tiles (glibc's heap otherwise grew over the tiles), with the same
    result; below it, never."""
    from napari_refocus.core import memory
    from napari_refocus.models import predict

    calls, real = [], memory.release_free_memory

    def counting(*, pixels=None):
        calls.append(pixels)
        return real(pixels=pixels)

    monkeypatch.setattr(memory, "release_free_memory", counting)
    m = ResnetGenerator(width=2, n_blocks=1, norm="none", residual=True, s2d=1).eval()
    big = np.zeros((736, 736), np.float32)
    big[::7] = 100.0
    n_tiles = len(predict.plan_grid(m, big.shape, tile=128, overlap=0).tiles((0, 736, 0, 736)))
    out = predict_tiled(m, big, tile=128, overlap=0, batch_size=3)
    assert big.size >= memory.SMALL_IMAGE_PIXELS and n_tiles == 36
    # batches of 3: a trim after the batch that reaches each multiple of 8 tiles (8, 16, 24, 32)
    assert calls == [big.size] * (n_tiles // predict.TRIM_EVERY_TILES)
    monkeypatch.setattr(predict, "TRIM_EVERY_TILES", 10**9)
    np.testing.assert_array_equal(predict_tiled(m, big, tile=128, overlap=0, batch_size=3), out)
    monkeypatch.setattr(predict, "TRIM_EVERY_TILES", 8)
    calls.clear()
    small = big[:256, :256]
    n_small = len(predict.plan_grid(m, small.shape, tile=32, overlap=0).tiles((0, 256, 0, 256)))
    predict_tiled(m, small, tile=32, overlap=0)  # a small image: asked, and nothing done
    assert n_small >= 8 and calls == [small.size] * (n_small // 8) and not real(pixels=small.size)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (37, 101), (129, 64)])
def test_any_size_and_intensity_round_trip(shape):
    m = TINY["unet"]().eval()
    with torch.no_grad():  # make the net the identity: output = input + 0
        m.out.weight.zero_()
        m.out.bias.zero_()
    rng = np.random.default_rng(1)
    img = (rng.random(shape) * 60000 + 1000).astype(np.uint16)
    out = predict_tiled(m, img, tile=64, overlap=16)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, img.astype(np.float32), rtol=1e-4, atol=0.5)


def test_zstack_focus_detection_synthetic():
    from napari_refocus.core.forward import simulate
    from napari_refocus.training.pairs import zstack_pairs

    rng = np.random.default_rng(0)
    sharp = (rng.random((64, 64)) > 0.97) * 3000.0 + 200
    stack = np.stack([simulate(sharp, level=abs(z - 3), noise=None) for z in range(7)])
    zp = zstack_pairs(stack)
    assert zp["focus"] == 3 and len(zp["pairs"]) == 6
    assert all(t is not None for _, _, t in zp["pairs"])


@pytest.mark.skipif(not DFNN_STACK.exists(), reason="../shared/data (DFNN stack) not available")
def test_zstack_focus_detection_dfnn():
    from napari_refocus.training.pairs import find_focus, read_zstack

    stack, names = read_zstack(DFNN_STACK)
    assert stack.shape[0] == 34
    order = int(names[find_focus(stack)][-8:-4])
    assert abs(order - 51) <= 1, order  # upstream: order 51 in focus (Laplacian peaks at 50-51)


def test_training_smoke(tmp_path):
    from napari_refocus.training.configs import DEFAULTS
    from napari_refocus.training.losses import FeatureLoss
    from napari_refocus.training.train_generators import _Trainer

    cfg = dict(DEFAULTS["h2t-msunet"], model=dict(width=4, depth=2, n_scales=2, s2d=2))
    tr = _Trainer("h2t-msunet", cfg, torch.device("cpu"), FeatureLoss("gradient"))
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert np.isfinite(tr.step(x, y)["loss"])


def _shipped(name):
    from napari_refocus.core.resources import weights_dir

    try:
        return (weights_dir() / f"{name}.safetensors").exists()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("name", ["comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet"])
def test_shipped_method_gains_on_sample(name, infocus):
    if not _shipped(name):
        pytest.skip(f"weights/{name}.safetensors not shipped")
    from napari_refocus import refocus
    from napari_refocus.methods import get_method
    from napari_refocus.core.metrics import compare
    from napari_refocus.core.forward import simulate

    gt = np.ascontiguousarray(infocus[100:356, 200:456])
    blurred = simulate(gt, level=6, seed=0)
    res = refocus(blurred, method=name, device="cpu")
    r = get_method(name).upscale
    out = res.image
    assert out.shape == (256 * r, 256 * r) and out.dtype == np.float32
    if r > 1:
        out = out.reshape(256, r, 256, r).mean(axis=(1, 3))
    gain = compare(gt, out, blurred)["gain"]["psnr"]
    assert gain > 0, gain
    # the same network in 128-px tiles: a model whose features depend on the input size (as a
    # BatchNorm variant trained on 128-px patches did) restores whole images much worse
    small = refocus(blurred, method=name, device="cpu", tile=128, overlap=32).image
    if r > 1:
        small = small.reshape(256, r, 256, r).mean(axis=(1, 3))
    assert abs(compare(gt, small, blurred)["gain"]["psnr"] - gain) < 1.0


def test_train_generator_end_to_end_stages_and_resume(tmp_path):
    """The real training entry point on the real sources (tiny net, a few steps): weights +
    card + eval JSON, a second stage from --init records both commands, and a resumed run
    continues from its checkpoint instead of starting again."""
    from conftest import SHARED

    if not (SHARED / "BBBC006_w2_infocus").exists():
        pytest.skip("needs ../shared/data (BBBC006 in-focus fields)")
    from napari_refocus.training.train_generators import train_generator
    from napari_refocus.models.loader import read_metadata

    tiny = dict(model=dict(width=4, depth=2, n_scales=2, s2d=2), batch=2, patch=64)
    r1 = train_generator("h2t-msunet", tmp_path, steps=3, evaluate=False, progress=False, **tiny)
    w = tmp_path / "h2t-msunet.safetensors"
    assert r1["steps"] == 3 and w.exists() and (tmp_path / "h2t-msunet.md").exists()
    assert "napari-refocus train h2t-msunet" in (tmp_path / "h2t-msunet.md").read_text()
    # resume: asking for 5 steps continues from step 3
    r2 = train_generator("h2t-msunet", tmp_path, steps=5, evaluate=False, progress=False, **tiny)
    assert r2["steps"] == 5 and r2["history"][0]["step"] <= 3
    # a second stage from these weights records both stages
    out2 = tmp_path / "stage2"
    r3 = train_generator("h2t-msunet", out2, steps=2, init=w, evaluate=False, progress=False, lr=3e-4,
                         levels=[1, 4], **tiny)
    stages = read_metadata(out2 / "h2t-msunet.safetensors")["provenance"]["stages"]
    assert len(stages) == 2 and stages[1]["command"] == r3["command"]
    # every setting that differs from the command line's defaults is in the recorded command
    assert f"--init {w}" in r3["command"] and "--lr 0.0003" in r3["command"]
    assert "--set levels=[1,4]" in r3["command"]
    assert "Trained in stages" in (out2 / "h2t-msunet.md").read_text()


def test_tta_makes_inference_rotation_and_flip_equivariant():
    """Averaging over the 8 flips/rotations gives f(rot(x)) == rot(f(x)) for any network;
    without it a random network is not equivariant (so the check has teeth)."""
    from napari_refocus.models.predict import predict_tiled
    from napari_refocus.models.h2t_msunet import HeadToTailUNet

    torch.manual_seed(0)
    model = HeadToTailUNet(width=4, depth=2, n_scales=2, s2d=2).eval()  # multiple 16
    x = np.random.default_rng(0).poisson(500, (64, 64)).astype(np.float32)
    kw = dict(device="cpu", tile=0, overlap=0)  # one tile, no padding: the layout is symmetric
    for t in (lambda a: np.rot90(a, 1), lambda a: a[:, ::-1], lambda a: a.T):
        a = predict_tiled(model, np.ascontiguousarray(t(x)), tta=True, **kw)
        b = t(predict_tiled(model, x, tta=True, **kw))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-2)
    plain = predict_tiled(model, np.ascontiguousarray(np.rot90(x, 1)), **kw)
    assert np.abs(plain - np.rot90(predict_tiled(model, x, **kw), 1)).max() > 1e-2


def test_intensity_stats_do_not_depend_on_the_units():
    """The percentiles of a float image in units of 1e-30 are used as they are (an absolute
    floor once replaced them by the full range): (lo, scale) scale with the image."""
    from napari_refocus.models.predict import intensity_stats

    x = np.random.default_rng(0).gamma(2.0, 300.0, (64, 64)).astype(np.float32)
    lo, scale = intensity_stats(x)
    for units in (2.0**-100, 2.0**100):
        lo_u, scale_u = intensity_stats(x * np.float32(units))
        assert lo_u == lo * units and scale_u == scale * units
    assert intensity_stats(np.zeros((8, 8), np.float32)) == (0.0, 1.0)
    assert intensity_stats(np.full((8, 8), 7.0, np.float32)) == (7.0, 1.0)
