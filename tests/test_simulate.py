import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.core.optics import rms_radius_px


def test_dtype_kept_and_seeded(infocus_crop):
    a = nr.simulate(infocus_crop, level=4, seed=1)
    b = nr.simulate(infocus_crop, level=4, seed=1)
    c = nr.simulate(infocus_crop, level=4, seed=2)
    assert a.dtype == np.uint16 and a.shape == infocus_crop.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    f = nr.simulate(infocus_crop.astype(np.float32), level=4, seed=1)
    assert f.dtype == np.float32


def test_blur_conserves_flux_and_smooths(infocus_crop):
    img = infocus_crop.astype(np.float64)
    prev = np.inf
    for level in (0, 2, 5, 10):
        out = nr.simulate(img, level=level, noise=None)
        assert abs(out.mean() - img.mean()) / img.mean() < 0.01
        grad = np.abs(np.diff(out, axis=1)).mean()
        assert grad < prev
        prev = grad
    np.testing.assert_array_equal(nr.simulate(img, level=0, noise=None), img)


def test_blur_of_a_point_is_the_psf():
    img = np.zeros((101, 101))
    img[50, 50] = 1.0
    out = nr.simulate(img, level=6, noise=None)
    psf = nr.psf_bank()[6]
    np.testing.assert_allclose(out[32:69, 32:69], psf, atol=1e-6)


def test_poisson_noise_in_image_counts():
    img = np.full((128, 128), 400, dtype=np.uint16)
    out = nr.simulate(img, level=3, seed=0).astype(np.float64)
    assert abs(out.var() / 400 - 1) < 0.1  # Poisson: variance == mean in counts
    out4 = nr.simulate(img, level=3, seed=0, gain=4.0).astype(np.float64)
    assert out4.var() < out.var() / 2


def test_level_field_interpolates_between_levels(infocus_crop):
    img = infocus_crop.astype(np.float64)
    field = np.full(img.shape, 3.0)
    np.testing.assert_allclose(
        nr.simulate(img, level_field=field, noise=None), nr.simulate(img, level=3, noise=None), atol=1e-3
    )
    half = nr.simulate(img, level_field=np.full(img.shape, 3.5), noise=None)
    mid = 0.5 * (nr.simulate(img, level=3, noise=None) + nr.simulate(img, level=4, noise=None))
    np.testing.assert_allclose(half, mid, atol=1e-3)
    tilt = nr.tilted_level_field(img.shape, low=0, high=8)
    assert tilt[:, 0].max() == 0 and np.isclose(tilt[:, -1].min(), 8)
    out = nr.simulate(img, level_field=tilt, noise=None)
    left = np.abs(out[:, :40] - img[:, :40]).mean()
    right = np.abs(out[:, -40:] - img[:, -40:]).mean()
    assert right > 3 * left


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 5)), np.full((8, 8), np.nan), -np.ones((8, 8)), np.zeros((4, 4, 4)),
     np.array([["a"]]), np.zeros((8, 8), dtype=bool)],
)
def test_bad_input(bad):
    with pytest.raises(ValueError):
        nr.simulate(bad, level=2)


@pytest.mark.parametrize("level", [-1, 11, 2.5, "3", True])
def test_bad_level(level, infocus_crop):
    with pytest.raises(ValueError):
        nr.simulate(infocus_crop, level=level)


def test_input_not_modified(infocus_crop):
    img = np.array(infocus_crop)
    before = img.copy()
    nr.simulate(img, level=5, seed=0)
    np.testing.assert_array_equal(img, before)
