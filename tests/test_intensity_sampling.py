"""Exposure-, dtype- and objective-independent building blocks of the defocus map."""

import numpy as np
import pytest

from napari_refocus.core.intensity import noise_sigma, robust_range, to_canonical
from napari_refocus.core.matching import match_defocus_um
from napari_refocus.core.optics import Optics
from napari_refocus.core.resample import resample, resized_shape


def test_to_canonical_ignores_affine_changes_of_intensity(infocus_crop):
    a = infocus_crop.astype(np.float32)
    ref = to_canonical(a, span=1000, offset=150)
    for b in (a * 16 + 300, a / 65535.0, np.round(a / a.max() * 255)):
        out = to_canonical(b, span=1000, offset=150)
        tol = 1000 / 255 if b.max() <= 255 else 1e-2  # 8-bit rounding
        assert np.abs(out - ref).max() <= tol * 1.01
    assert ref.min() >= 0 and np.percentile(ref, 99.8) == pytest.approx(1150, abs=1)


def test_to_canonical_into_a_buffer_gives_the_same_numbers(infocus_crop):
    """``out=``: written into a view of a bigger buffer, or over a float32 image itself."""
    for a in (np.asarray(infocus_crop).astype(np.uint16), np.asarray(infocus_crop, np.float32) / 7):
        want = to_canonical(a, span=1000, offset=150)
        buf = np.full((a.shape[0] + 5, a.shape[1] + 3), -1.0, np.float32)
        got = to_canonical(a, span=1000, offset=150, out=buf[:a.shape[0], :a.shape[1]])
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(buf[:a.shape[0], :a.shape[1]], want)
        assert (buf[a.shape[0]:] == -1).all() and (buf[:, a.shape[1]:] == -1).all()
        if a.dtype == np.float32:
            own = a.copy()
            np.testing.assert_array_equal(to_canonical(own, span=1000, offset=150, out=own), want)


def test_noise_sigma_measures_noise_not_structure(infocus_crop):
    rng = np.random.default_rng(0)
    smooth = np.asarray(infocus_crop, np.float32)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(smooth, 3)
    noisy = smooth + rng.normal(0, 7.0, smooth.shape)
    assert noise_sigma(noisy) == pytest.approx(7.0, rel=0.1)
    lo, hi = robust_range(noisy)
    assert lo < hi


def test_integer_images_give_the_float_formulas_numbers(infocus_crop):
    """8- and 16-bit counts take a histogram route (faster); the robust range and the noise are
    bit for bit numpy's percentile and the float32 Immerkaer formula's median."""
    rng = np.random.default_rng(0)
    cases = [np.asarray(infocus_crop).astype(np.uint16), (np.asarray(infocus_crop) // 64).astype(np.uint8),
             rng.random((9, 7)) < 0.5, np.full((5, 6), 7, np.uint16)]
    cases += [rng.integers(0, int(rng.integers(2, 65536)), size=tuple(rng.integers(3, 40, 2))).astype(
        np.uint16 if k % 2 else np.uint8) for k in range(300)]
    for a in cases:
        x = a.astype(np.float64)
        q = (1.0, 99.8) if a.size % 3 else tuple(rng.random(2) * 100)
        assert robust_range(a, q) == tuple(float(v) for v in np.percentile(x, q))
        f = a.astype(np.float32)
        d = (4 * f[1:-1, 1:-1] - 2 * (f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:])
             + f[:-2, :-2] + f[:-2, 2:] + f[2:, :-2] + f[2:, 2:])
        assert noise_sigma(a) == float(1.4826 * np.median(np.abs(d)) / 6.0)
        assert noise_sigma(a) == noise_sigma(f)  # and the float32 image's own route


def test_resample_shapes_and_mean():
    img = np.random.default_rng(1).random((200, 300)).astype(np.float32) + 1
    small = resample(img, shape=resized_shape(img.shape, 0.4))
    assert small.shape == (80, 120) and small.mean() == pytest.approx(img.mean(), rel=0.01)
    assert resample(img, shape=img.shape) is not None and np.array_equal(resample(img, shape=(200, 300)), img)


def test_defocus_tables_match_the_reference_and_scale_with_the_objective():
    paper = Optics()
    same = match_defocus_um(paper, paper)
    np.testing.assert_allclose(same, [2.0 * lv for lv in range(11)], atol=0.11)
    oil = match_defocus_um(paper, Optics(na=1.4, refractive_index=1.515, wavelength_nm=520, pixel_um=0.108,
                                         psf_model="exact"))
    assert all(b >= a for a, b in zip(oil, oil[1:])) and oil[0] == 0
    # small defocus blurs like the same number of depths of field (0.40 um in oil, 1.8 um in air)
    assert oil[1] == pytest.approx(2.0 * 0.402 / 1.804, rel=0.4)
    # and the top class is far less defocus in oil than in air
    assert oil[-1] < 0.2 * same[-1]


def test_defocus_table_is_validated_and_used():
    o = Optics(n_levels=3, defocus_table_um=(0, 1, 5))
    assert o.defocus_um(2) == 5 and o.defocus_um(1.5) == 3
    with pytest.raises(ValueError, match="defocus_table_um"):
        Optics(n_levels=3, defocus_table_um=(0, 1))


def test_histogram_counts_in_chunks_as_bincount_does():
    """``robust_range``'s histogram is made a chunk at a time (bincount's int64 copy of a whole
    image was 8 bytes per pixel at a run's peak); the counts are bincount's."""
    from napari_refocus.core import intensity

    rng = np.random.default_rng(0)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535), (np.uint16, 900)):
        a = rng.integers(0, top + 1, size=(700, 1000)).astype(dtype)
        assert a.size > intensity.HISTOGRAM_CHUNK
        flat = a.ravel()
        parts = (flat[i:i + intensity.HISTOGRAM_CHUNK] for i in range(0, flat.size, intensity.HISTOGRAM_CHUNK))
        assert np.array_equal(intensity.histogram(parts), np.bincount(flat))
        assert robust_range(a) == tuple(float(v) for v in np.percentile(a.astype(np.float64), (1.0, 99.8)))
    small = np.array([[0, 3], [3, 1]], np.uint16)
    assert np.array_equal(intensity.histogram([small]), [1, 1, 0, 2])
    assert np.array_equal(intensity.histogram([small[:1], small[1:]]), [1, 1, 0, 2])


@pytest.mark.parametrize("level", [2, 5, 8])
def test_the_shipped_map_reads_the_same_at_more_photons_and_in_any_dtype(level):
    """Issue 13's exposure criterion where it holds (BENCHMARKS.md "Other objectives and exposures"):
    the shipped field blurred as DelpNet was trained (LB-DVD eq. 2), Poisson noise at its counts;
    at 4x and 16x the photons >= 85 % of the non-background patches keep their class and >= 95 %
    stay within one; as float counts the map is the same, scaled to 0..1 >= 99 %, as 8-bit >= 95 %. (4x
    fewer photons do not meet it: DelpNet reads the stronger noise as blur.)"""
    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image

    rng = np.random.default_rng(0)
    clean = np.clip(nr.simulate(infocus_image(), level=level, noise=None, optics=Optics(psf_model="paraxial")), 0, None)
    base = rng.poisson(clean).astype(np.uint16)
    ref = nr.defocus_map(base, device="cpu").levels
    fg = ref != 11
    assert fg.mean() > 0.9
    variants = {"x4": np.clip(rng.poisson(clean * 4), 0, 65535).astype(np.uint16),
                "x16": np.clip(rng.poisson(clean * 16), 0, 65535).astype(np.uint16),
                "float32 counts": base.astype(np.float32), "float 0..1": (base / 65535.0).astype(np.float32),
                "uint8": np.round(base / base.max() * 255).astype(np.uint8)}
    for name, image in variants.items():
        levels = nr.defocus_map(image, device="cpu").levels
        same, within_one = (levels[fg] == ref[fg]).mean(), (np.abs(levels[fg] - ref[fg]) <= 1).mean()
        assert within_one >= 0.95, (name, within_one)
        # float 0..1 is the same map up to a near-tie on another CPU's rounding (100 % here and in the benchmark)
        assert same >= {"float32 counts": 1.0, "float 0..1": 0.99, "uint8": 0.95}.get(name, 0.85), (name, same)
