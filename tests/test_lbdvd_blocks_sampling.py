"""Block by block at any sampling: the global-grid resampler, and lbdvd's blocks equal to in memory."""

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
