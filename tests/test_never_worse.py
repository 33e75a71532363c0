"""Never worse: every method leaves in-focus regions as they were (``never_worse=True``, the
default), on held-out BBBC006 fields that no network trained or was selected on; gating off gives
the ungated output exactly; block by block equals in memory."""

from pathlib import Path

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.core.metrics import metrics
from napari_refocus.methods import gate as G
from napari_refocus.methods import get_method

W2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"
HELD_OUT = ("p19_s2", "o24_s2")  # bbbc006_w2_p19_s2 (test split), bbbc006_w2_o24_s2 (validation split)
METHODS = ("lbdvd", "comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")


def _field(tag):
    import tifffile

    found = sorted(W2.glob(f"*_{tag}_*.tif")) if W2.exists() else []
    if not found:
        pytest.skip(f"held-out BBBC006 field {tag} not in ../shared/data")
    return tifffile.imread(found[0]).astype(np.float32)


@pytest.fixture(scope="module")
def fields():
    return [_field(t) for t in HELD_OUT]


def _need(method):
    if not get_method(method).weights_present() or not get_method("lbdvd").weights_present():
        pytest.skip(f"weights of {method} or DelpNet not installed")


def _bin(img, r):
    if r == 1:
        return img
    h, w = img.shape[0] // r, img.shape[1] // r
    return img[:h * r, :w * r].reshape(h, r, w, r).mean(axis=(1, 3))


def _gain(out, inp, gt, cols=slice(None)):
    """PSNR gain (dB) of ``out`` over the input, both against ``gt``, on columns ``cols``; an
    x2 output is binned 2x2 and compared with the input as the gate sizes it (resampled x2,
    binned), so that the gate's own resampling is not counted as a change."""
    r = out.shape[0] // inp.shape[0]
    ref = _bin(G.base_like(inp, out.shape), r)
    out = _bin(out, r)
    dr = float(np.ptp(gt))
    return (metrics(out[:, cols], gt[:, cols], data_range=dr)["psnr"]
            - metrics(ref[:, cols], gt[:, cols], data_range=dr)["psnr"])


@pytest.mark.parametrize("method", METHODS)
def test_in_focus_and_level_1_are_not_made_worse(method, fields):
    _need(method)
    for level in (0, 1):
        gains = []
        for k, gt in enumerate(fields):
            inp = nr.simulate(gt.astype(np.uint16), level=level, seed=100 * k + level)
            res = nr.refocus(inp, method=method, device="cpu")
            r = get_method(method).upscale
            dr = float(np.ptp(gt))
            gains.append(metrics(_bin(res.image, r), gt, data_range=dr)["psnr"]
                         - metrics(inp.astype(np.float32), gt, data_range=dr)["psnr"])
            assert res.gate_weights.shape == res.image.shape
            assert 0.0 <= res.changed_fraction <= 1.0
        assert np.mean(gains) >= -0.1, (method, level, gains)


@pytest.mark.parametrize("method", METHODS)
def test_a_crop_smaller_than_one_patch_is_gated_too(method, infocus):
    """A 64x64 crop of one cell (below DelpNet's 84-px patch): in focus it comes back as it went
    in; blurred (level 5) it is restored as without the gate. Before, the generators ran such a
    crop ungated (an in-focus one came back changed at 28-31 dB PSNR against itself) and lbdvd
    refused it; the map is now read on the crop mirrored out to one patch."""
    _need(method)
    gt = np.ascontiguousarray(infocus[200:264, 300:364]).astype(np.float32)
    res = nr.refocus(gt, method=method, device="cpu")
    assert np.array_equal(res.image, G.base_like(gt, res.image.shape)), method
    assert res.changed_fraction == 0.0 and res.gate_weights.shape == res.image.shape
    assert any("mirrored to one" in n for n in res.notes)
    blurred = np.ascontiguousarray(nr.simulate(np.asarray(infocus), level=5, seed=0)[200:264, 300:364])
    gated = nr.refocus(blurred, method=method, device="cpu").image
    plain = nr.refocus(blurred, method=method, device="cpu", never_worse=False).image
    assert _gain(gated, blurred, gt) > 1.0
    assert _gain(gated, blurred, gt) >= _gain(plain, blurred, gt) - 0.05


def test_an_image_too_long_to_mirror_is_left_alone_or_refused(infocus, monkeypatch):
    """Mirroring a thin image out to one patch multiplies its pixels (a 1-row line scan of 10^7 px
    would become 84 rows of it): above ``MIRROR_MAX_PIXELS`` a generator returns the input as it
    came in (its x2 grid for m-deblurgan), with a note, and lbdvd gives the map's one-line error."""
    monkeypatch.setattr(G, "MIRROR_MAX_PIXELS", 84 * 84 - 1)
    crop = np.ascontiguousarray(nr.simulate(np.asarray(infocus), level=5, seed=0)[200:264, 300:364])
    for method in ("comi-cyclegan", "m-deblurgan"):
        _need(method)
        res = nr.refocus(crop, method=method, device="cpu")
        assert np.array_equal(res.image, G.base_like(crop, res.image.shape)) and res.changed_fraction == 0.0
        assert any("returned as it came in" in n for n in res.notes)
    _need("lbdvd")
    with pytest.raises(ValueError, match="DelpNet needs at least 84x84"):
        nr.refocus(crop, method="lbdvd", device="cpu")


def test_mirror_padding_is_the_fewest_pixels_for_one_patch():
    from napari_refocus.core.tiling import PATCH

    assert G.mirror_padding((64, 100)) == ((10, 10), (0, 0))
    assert G.mirror_padding((83, 84)) == ((0, 1), (0, 0))
    assert G.mirror_padding((200, 300)) == ((0, 0), (0, 0))
    from napari_refocus.core.optics import Optics

    oil = Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108)
    (t, b), (l, r) = G.mirror_padding((100, 120), oil)
    assert G.map_fits((100 + t + b, 120 + l + r), oil) and not G.map_fits((100 + t + b - 1, 120 + l + r), oil)
    # a thin image whose mirrored form would exceed the bound is not mirrored
    assert G.mirror_padding((1, G.MIRROR_MAX_PIXELS // PATCH + 1)) is None
    assert G.mirror_padding((1, G.MIRROR_MAX_PIXELS // PATCH)) == ((41, 42), (0, 0))
    mirrored = np.pad(np.arange(12.0).reshape(3, 4), ((41, 42), (0, 0)), mode="symmetric")
    assert np.array_equal(G.unmirror(mirrored, ((41, 42), (0, 0)), (3, 4)), np.arange(12.0).reshape(3, 4))
    assert PATCH == 84


def test_gate_weights_are_made_lazily_with_the_same_numbers():
    """A learned run records its weights as GateWeights (no output-sized map held): reading them
    whole, by a slice or by a strided index gives Gate.weights' numbers exactly."""
    rng = np.random.default_rng(0)
    conf = np.where(rng.random((5, 7)) < 0.2, G.BG_CONFIDENCE, 1.0)
    gate = G.Gate(rng.random((5, 7)), conf, (5, 7), 84, 42, 1.0, 3.6)
    for r in (1, 2):
        lazy, full = G.GateWeights(gate, (252, 336), r), gate.weights((252, 336), r)
        assert lazy.shape == full.shape == np.shape(lazy) and lazy.dtype == np.float32 and lazy.size == full.size
        np.testing.assert_array_equal(np.asarray(lazy), full)
        np.testing.assert_array_equal(lazy[17:300, 5:40], full[17:300, 5:40])
        np.testing.assert_array_equal(lazy[::3, 2], full[::3, 2])
        np.testing.assert_array_equal(np.zeros_like(lazy), np.zeros_like(full))


def tilted(gt, *, high=8.0, seed=0):
    """``gt`` as a tilted sample: its left third in focus (level 0), then defocus rising
    linearly to ``high`` at the right edge (each pixel the blend of its two neighbouring levels)."""
    w = gt.shape[1]
    third = w // 3
    field = np.zeros(gt.shape)
    field[:, third:] = np.linspace(0.0, high, w - third)[None, :]
    return nr.simulate(gt.astype(np.uint16), level_field=field, seed=seed), third


@pytest.mark.parametrize("method", METHODS)
def test_tilted_sample_leaves_the_in_focus_third(method, fields):
    _need(method)
    gt = fields[0]
    inp, third = tilted(gt)
    res = nr.refocus(inp, method=method, device="cpu")
    assert abs(_gain(res.image, inp, gt, slice(0, third))) <= 0.1
    r = get_method(method).upscale
    w = res.gate_weights
    assert w[:, :third * r].max() < 0.05 and w[:, -third * r:].mean() > 0.9  # left alone / restored
    assert _gain(res.image, inp, gt, slice(2 * third, None)) > 1.0  # the defocused third still gains
    assert 0.3 < res.changed_fraction < 0.8
    assert res.changed_fraction == pytest.approx(float((np.asarray(w) > G.CHANGED_ABOVE).mean()), abs=1e-12)
    prov = res.provenance()
    assert prov["parameters"]["never_worse"] is True and prov["never_worse"]["ran"] is True
    assert prov["never_worse"]["threshold_um"] == pytest.approx(2 * 0.451 / 0.25, abs=1e-3)


def test_rl_deconvolves_at_its_level_only_where_the_map_sees_defocus(fields, infocus):
    """rl at the level it is told, gated (the default): an in-focus field, the in-focus third of
    the tilted sample and an in-focus crop smaller than one patch come back as they went in (the
    crop to 1e-3 counts);
    the defocused third gains as ungated; never_worse=False is Richardson-Lucy itself."""
    _need("lbdvd")
    gt = fields[0]
    inp = nr.simulate(gt.astype(np.uint16), level=0, seed=3)
    gated = nr.refocus(inp, method="rl", level=5, device="cpu")
    plain = nr.refocus(inp, method="rl", level=5, device="cpu", never_worse=False)
    assert _gain(gated.image, inp, gt) >= -0.1 and gated.changed_fraction < 0.05
    assert _gain(plain.image, inp, gt) < -3.0  # what the gate holds back
    np.testing.assert_array_equal(plain.image, nr.deconvolve(inp, level=5, device="cpu"))
    assert plain.gate_weights is None and gated.provenance()["never_worse"]["ran"] is True
    tilt, third = tilted(gt)
    on = nr.refocus(tilt, method="rl", level=4, device="cpu")
    off = nr.refocus(tilt, method="rl", level=4, device="cpu", never_worse=False)
    assert abs(_gain(on.image, tilt, gt, slice(0, third))) <= 0.1
    assert _gain(off.image, tilt, gt, slice(0, third)) < -1.0
    assert _gain(on.image, tilt, gt, slice(2 * third, None)) >= _gain(off.image, tilt, gt, slice(2 * third, None)) - 0.05
    crop = np.ascontiguousarray(infocus[200:264, 300:364]).astype(np.float32)
    res = nr.refocus(crop, method="rl", level=5, device="cpu")
    # as it went in up to float rounding: w ~1e-7 there, times rl's change of ~1,000 counts
    assert np.abs(res.image - crop).max() < 1e-3 and any("mirrored to one" in n for n in res.notes)


def test_rl_at_a_level_far_above_the_blur_leaves_the_image_alone(fields):
    """rl's gate also asks DelpNet for 2/3 of the defocus rl is told (rl.LEVEL_SHARE): told 10 um
    on 4 um of blur it lost 6.9 dB (ungated, benchmarks/rl_never_worse.py); gated it leaves such
    an image as it is, and applies a level that fits."""
    from napari_refocus.methods.rl import LEVEL_SHARE

    _need("lbdvd")
    gt = fields[1]
    inp = nr.simulate(gt.astype(np.uint16), level=2, seed=5)  # 4 um
    gated = nr.refocus(inp, method="rl", level=5, device="cpu")  # told 10 um
    plain = nr.refocus(inp, method="rl", level=5, device="cpu", never_worse=False)
    assert _gain(plain.image, inp, gt) < -3.0 and abs(_gain(gated.image, inp, gt)) <= 0.1
    assert gated.provenance()["never_worse"]["threshold_um"] == pytest.approx(LEVEL_SHARE * 10.0, abs=1e-3)
    fits = nr.refocus(inp, method="rl", level=2, device="cpu")  # told 4 um: the objective's threshold
    assert fits.provenance()["never_worse"]["threshold_um"] == pytest.approx(2 * 0.451 / 0.25, abs=1e-3)
    assert _gain(fits.image, inp, gt) > 1.0


def test_rl_on_real_planes_deconvolves_the_defocused_and_leaves_the_near_focus():
    """Real BBBC006 planes (../shared/data): rl at level 10 (20 um) or 16 (32 um, the true distance)
    deconvolves the z_00 planes (32 um from focus) nearly everywhere; at level 10 it leaves the
    near-focus planes as they are."""
    _need("lbdvd")
    import imageio.v3 as iio
    import tifffile

    base = Path(__file__).resolve().parents[2] / "shared" / "data" / "BBBC006_microscopeimagequality" / "tests" / "data"
    z00 = sorted((base / "images_for_glob_test").glob("00_*.tif"))[:2]
    near = sorted(base.glob("BBBC006_z_aligned__*.png"))[:2]
    if not z00 or not near:
        pytest.skip("the real BBBC006 planes are not in ../shared/data")
    for f in z00:
        assert nr.refocus(tifffile.imread(f), method="rl", level=10, device="cpu").changed_fraction > 0.8, f.name
    # told the true distance, 32 um, beyond the map's top class (20 um): the top class suffices
    told = nr.refocus(tifffile.imread(z00[0]), method="rl", level=16, optics=nr.Optics(n_levels=17, psf_size=81),
                      device="cpu")
    assert told.changed_fraction > 0.8 and told.provenance()["never_worse"]["threshold_um"] < 20.0
    for f in near:
        img = iio.imread(f)
        res = nr.refocus(img, method="rl", level=10, device="cpu")
        assert res.changed_fraction < 0.05 and np.abs(res.image - img).max() < 1.0, f.name


def test_default_objective_counts_class_two_as_defocused():
    # its class 2 is measured at 3.596 um, a hair under 2 depths of field (3.608 um): the
    # tolerance keeps the class (else lbdvd would leave every class-2 patch blurred)
    from napari_refocus.methods.defocus import map_frame

    table = map_frame(nr.Optics())[1]
    assert table[2] < 2 * 0.451 / 0.25
    np.testing.assert_array_equal(G.defocused_classes(table, nr.Optics()), np.arange(11) >= 2)


def test_gating_off_is_the_ungated_method_exactly(fields):
    """never_worse=False: lbdvd = depth-variant RL with DelpNet's argmax levels; a learned
    method = its network tiled over the image; no gate recorded."""
    from napari_refocus.methods.learned import get_generator
    from napari_refocus.models.predict import predict_tiled

    _need("lbdvd")
    inp = nr.simulate(fields[0][:252, :336].astype(np.uint16), level=4, seed=1)
    off = nr.refocus(inp, method="lbdvd", device="cpu", never_worse=False)
    # the map's classes as defocus of the image's optics (lbdvd's RL frame: the default exact PSF
    # at each class's matched defocus), as lbdvd deconvolves them
    from napari_refocus.core.optics import Optics
    from napari_refocus.methods.frames import rl_frame, rl_group

    frame = rl_frame(Optics())
    group = rl_group(frame, patch=84, stride=42)
    assert group == 4  # the patches of a level in each 4x4 group share one frame
    ref = nr.deconvolve(inp, level_map=off.defocus_map.levels, device="cpu", optics=frame.optics, group=group)
    np.testing.assert_array_equal(off.image, ref)
    assert off.gate_weights is None and "never_worse" not in off.provenance()
    on = nr.refocus(inp, method="lbdvd", device="cpu")
    assert not np.array_equal(on.image, off.image)
    for method in ("h2t-msunet", "m-deblurgan"):
        _need(method)
        off = nr.refocus(inp, method=method, device="cpu", never_worse=False)
        np.testing.assert_array_equal(off.image, predict_tiled(get_generator(method), inp, device="cpu"))


def test_lbdvd_blocks_equal_in_memory_gated(fields):
    _need("lbdvd")
    from napari_refocus.bigimage import lazy_method

    inp, _ = tilted(fields[1][:420, :588])
    eager = nr.refocus(inp, method="lbdvd", device="cpu")
    assert 0.0 < eager.changed_fraction < 1.0
    # blocks of at least the halo (96 px, and 3 strides more for the 4x4 groups of patches RL runs in)
    blocks = np.asarray(lazy_method(inp, "lbdvd", block=252, device="cpu"))
    np.testing.assert_allclose(blocks, eager.image, rtol=1e-5, atol=1e-2)
    off = np.asarray(lazy_method(inp, "lbdvd", block=252, device="cpu", never_worse=False))
    np.testing.assert_allclose(off, nr.refocus(inp, method="lbdvd", device="cpu", never_worse=False).image,
                               rtol=1e-5, atol=1e-2)


def test_learned_blocks_are_gated_lazily(fields):
    """A lazy (block by block) learned run is gated as in memory: the tilted sample's in-focus
    third is not made worse. Block weights equal the in-memory run's bit for bit:
    tests/test_learned_blocks.py::test_generator_blocks_equal_in_memory (never_worse on)."""
    _need("h2t-msunet")
    from napari_refocus.bigimage import lazy_method

    inp, third = tilted(fields[0][:336, :504])
    # 128-px tiles: a block reads the tiles of the whole image that touch it (halo 128 px <= block)
    lazy = np.asarray(lazy_method(inp, "h2t-msunet", block=256, device="cpu", tile=128, overlap=32))
    assert abs(_gain(lazy, inp, fields[0][:336, :504], slice(0, third))) <= 0.1


def test_gate_weights_are_smooth_and_follow_the_evidence():
    """Per-patch probabilities -> pixel weights: equal to the patch's value at its centre,
    bilinear between centres, background takes its neighbours' weight."""
    v = np.array([[0.0, 1.0, 1.0]], np.float32)
    c = np.ones_like(v)
    w = G.pixel_weights(v, c, grid_shape=(1, 3), bounds=(0, 1, 0, 168), patch=84, stride=42)[0]
    assert w[41] == pytest.approx(0.0, abs=0.02) and w[84] == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(w) >= -1e-6) and np.abs(np.diff(w)).max() <= 1 / 42 + 1e-6
    probs = np.zeros((3, 4, 12), np.float32)
    probs[:, 0, 0] = probs[:, 1, 5] = probs[:, 2, 5] = probs[:, 3, 1] = 1.0
    levels = np.array([[0, 5, 5, 11]] * 3)
    v, c = G.patch_evidence(probs, levels, G.defocused_classes(tuple(2.0 * k for k in range(11)), nr.Optics()))
    np.testing.assert_allclose(v, [[0.0, 1.0, 1.0, G.BG_VALUE]] * 3)
    assert c[0, 3] == G.BG_CONFIDENCE
    w = G.pixel_weights(v, c, grid_shape=(3, 4), bounds=(0, 1, 0, 210), patch=84, stride=42)[0]
    assert w[150] > 0.9  # between a defocused patch and background: the cells' weight
    np.testing.assert_array_equal(G.gate_levels(probs, levels, G.defocused_classes(
        tuple(2.0 * k for k in range(11)), nr.Optics())), [[0, 5, 5, 11]] * 3)


def test_a_reading_unlike_its_neighbours_is_not_trusted():
    """The gate's evidence is each patch's P(defocused) lowered to its second most defocused
    non-background neighbour's: an isolated defocused reading among in-focus patches is not
    trusted (lbdvd leaves it alone too), a region two patches wide is, evidence is never raised
    (not at an in-focus edge beside a defocused interior either), and background is no neighbour."""
    beyond = G.defocused_classes(tuple(2.0 * k for k in range(11)), nr.Optics())

    def evidence(levels):
        levels = np.asarray(levels)
        probs = np.zeros((*levels.shape, 12), np.float32)
        np.put_along_axis(probs, np.minimum(levels, 11)[..., None], 1.0, axis=-1)
        return G.patch_evidence(probs, levels, beyond)[0], G.gate_levels(probs, levels, beyond)

    v, lv = evidence([[0, 0, 0], [0, 9, 0], [0, 0, 0]])
    assert v[1, 1] == 0.0 and lv[1, 1] == 0  # an outlier: not changed, not deconvolved
    v, _ = evidence([[0, 0, 0, 0], [0, 9, 9, 0], [0, 9, 9, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(v[1:3, 1:3], 1.0)  # a 2 x 2 defocused region: trusted
    np.testing.assert_array_equal(v[[0, 3]], 0.0)
    v, _ = evidence([[0, 9, 9, 9]] * 3)
    np.testing.assert_array_equal(v[:, 0], 0.0)  # the in-focus edge is not raised towards its interior
    np.testing.assert_array_equal(v[:, 2:], 1.0)
    v, _ = evidence([[11, 11, 11], [11, 9, 11], [11, 11, 11]])
    assert v[1, 1] == 1.0  # cells alone in background: their own reading
    v, _ = evidence([[11, 0, 11], [11, 9, 11], [11, 11, 11]])
    assert v[1, 1] == 0.0  # its one neighbour disagrees
    v, _ = evidence([[11, 9, 11], [11, 9, 11], [11, 11, 11]])
    np.testing.assert_array_equal(v[:2, 1], 1.0)  # two defocused patches alone: each agrees with the other
    v, _ = evidence([[0, 9, 0, 0], [0, 9, 0, 0], [0, 9, 0, 0]])
    np.testing.assert_array_equal(v[[0, 2], 1], 0.0)  # a line one patch wide: only its middle has two
    assert v[1, 1] == 1.0


def test_a_window_of_the_grid_gives_the_whole_grids_evidence_inside():
    """A block reads the patches of its span and one more ring (gate.neighbour_span); the
    evidence of the span then equals the whole grid's, at the grid's edges too."""
    rng = np.random.default_rng(1)
    beyond = G.defocused_classes(tuple(2.0 * k for k in range(11)), nr.Optics())
    levels = rng.integers(0, 12, (9, 11))
    probs = rng.random((9, 11, 12)).astype(np.float32)
    whole, _ = G.patch_evidence(probs, levels, beyond)
    for span in (((0, 2), (0, 3)), ((3, 5), (4, 8)), ((6, 8), (9, 10)), ((0, 8), (0, 10))):
        (r0, r1), (c0, c1) = G.neighbour_span(span, levels.shape)
        part, _ = G.patch_evidence(probs[r0:r1 + 1, c0:c1 + 1], levels[r0:r1 + 1, c0:c1 + 1], beyond)
        (a, b), (c, d) = span
        np.testing.assert_array_equal(part[a - r0:b - r0 + 1, c - c0:d - c0 + 1], whole[a:b + 1, c:d + 1])


def test_gate_weights_are_the_confidence_weighted_bilinear_blend_of_patch_centres():
    """The separable form gives, at every pixel, sum(b * c * v) / sum(b * c) over the four patch
    centres around it (b: the bilinear weights), for a part of the image, x2 outputs and a map
    on another sampling alike."""
    rng = np.random.default_rng(3)
    v = rng.random((5, 7)).astype(np.float32)
    c = np.where(rng.random((5, 7)) < 0.3, G.BG_CONFIDENCE, 1.0).astype(np.float32)
    for bounds, upscale, scale in (((0, 252, 0, 336), 1, 1.0), ((17, 140, 40, 300), 2, 1.0),
                                   ((3, 90, 5, 200), 1, 1.3)):
        kw = dict(upscale=upscale, scale=scale, patch=84, stride=42)
        w = G.pixel_weights(v, c, grid_shape=(5, 7), bounds=bounds, **kw)
        iy, ty = G._axis(bounds[1] - bounds[0], bounds[0], 5, **kw)
        ix, tx = G._axis(bounds[3] - bounds[2], bounds[2], 7, **kw)
        num = den = 0.0
        for dy, wy in ((0, 1.0 - ty), (1, ty)):
            for dx, wx in ((0, 1.0 - tx), (1, tx)):
                rows, cols = np.minimum(iy + dy, 4), np.minimum(ix + dx, 6)
                b = wy[:, None].astype(np.float64) * wx[None, :]
                num = num + b * (c * v)[np.ix_(rows, cols)]
                den = den + b * c[np.ix_(rows, cols)]
        assert w.dtype == np.float32 and w.shape == (bounds[1] - bounds[0], bounds[3] - bounds[2])
        np.testing.assert_allclose(w, np.clip(num / den, 0, 1), atol=1e-6)


def test_never_worse_is_a_schema_option_everywhere():
    for method in (*METHODS, "rl"):
        spec = {s["name"]: s for s in get_method(method).describe()}
        assert spec["never_worse"]["default"] is True
        assert "never_worse" in get_method(method).form_fields
    with pytest.raises(ValueError, match="never_worse"):
        get_method("lbdvd").parse(never_worse="yes")


@pytest.mark.gui
def test_widget_states_the_share_changed_and_shows_where(make_napari_viewer, qtbot, fields, monkeypatch, tmp_path):
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    import magicgui._util

    from napari_refocus.ui import RefocusWidget

    _need("h2t-msunet")
    monkeypatch.setattr(magicgui._util, "user_cache_dir", lambda *a, **k: tmp_path / "cache")
    viewer = make_napari_viewer()
    inp, third = tilted(fields[0][:168, :336])
    layer = viewer.add_image(inp, name="tilted", scale=(0.65, 0.65), translate=(10.0, 20.0))
    w = RefocusWidget(viewer)
    viewer.window.add_dock_widget(w, name="refocus")
    w.set_method("m-deblurgan")
    assert w.form.never_worse.value is True
    w.show_changed.value = True
    w.run(layer)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    result, changed = w.last_layer, w.changed_layer
    assert "never worse: changed" in w.panel.status.value
    assert changed is not None and changed.data.shape == result.data.shape == (336, 672)
    np.testing.assert_allclose(changed.scale, result.scale)
    np.testing.assert_allclose(changed.translate, result.translate)
    assert changed.data[:, :third * 2].max() < 0.05 and changed.data[:, -third * 2:].mean() > 0.9
    assert result.metadata["never_worse"]["ran"] is True
    w.set_values(never_worse=False)
    w.run(layer)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.changed_layer is None and "never worse" not in w.panel.status.value


def test_real_near_focus_planes_are_not_made_worse():
    """The real DFNN mitochondria stack (no optics given): refocus-unet, gated, does not make the
    near-focus planes worse. DelpNet reads a few lone patches there far out of focus; before the
    gate asked for its neighbours' agreement these planes lost 0.76-1.13 dB (ungated: 4.7-6.0)."""
    _need("refocus-unet")
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import dfnn_stack_dir, read_zstack, zstack_pairs

    if not dfnn_stack_dir().exists():
        pytest.skip("the DFNN stack is not in shared/data")
    stack, _ = read_zstack(dfnn_stack_dir())
    focus = zstack_pairs(stack)["focus"]
    r0 = int(stack.shape[1] * 0.65)
    gt = stack[focus, r0:].astype(np.float32)
    for z in (focus - 3, focus + 3, focus + 6):
        inp = stack[z, r0:]
        c = compare(gt, nr.refocus(inp, method="refocus-unet", device="cpu").image, inp.astype(np.float32))
        assert c["pred"]["psnr"] - c["input"]["psnr"] >= -0.05, z
