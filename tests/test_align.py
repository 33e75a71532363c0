"""core.align: a known sub-pixel shift and a known affine intensity change are recovered on a
real field (the bundled in-focus BBBC006 sample), blurred or not."""

import numpy as np
import pytest
from scipy.ndimage import shift as nd_shift

from napari_refocus.core.align import (
    estimate_shift,
    fit_intensity,
    match_intensity,
    register_translation,
    valid_box,
)
from napari_refocus.core.forward import simulate
from napari_refocus.io.samples import infocus_image

SHIFT = (3.4, -5.7)  # (dy, dx) px


@pytest.fixture(scope="module")
def field():
    return infocus_image()[100:356, 150:406].astype(np.float64)  # 256x256 of a real actin field


def moved(img, shift=SHIFT):
    """``img`` with its content displaced by ``shift`` (so registering it back needs -shift)."""
    return nd_shift(img, shift, order=3, mode="nearest")


def test_estimate_shift_recovers_a_subpixel_shift(field):
    s = estimate_shift(moved(field), field)
    np.testing.assert_allclose(s, [-SHIFT[0], -SHIFT[1]], atol=0.05)


def test_shift_of_a_defocused_copy_with_other_intensities(field):
    """The real use: a blurred (level 3, 6 um), noisy, dimmer copy against the sharp image."""
    blurred = simulate(field.astype(np.float32), level=3, noise="poisson", seed=1).astype(np.float64)
    moving = 0.6 * moved(blurred) + 40.0
    s = estimate_shift(moving, field)
    np.testing.assert_allclose(s, [-SHIFT[0], -SHIFT[1]], atol=0.1)


def test_register_translation_puts_the_content_back_and_marks_the_border(field):
    out = register_translation(moved(field), field)
    assert out.shape == field.shape and out.dtype == np.float64
    # rows/cols that came from beyond the image: 4 at the bottom (dy=-3.4), 6 on the left (dx=+5.7)
    assert np.isnan(out[-4:]).all() and np.isnan(out[:, :6]).all()
    assert np.isfinite(out[:-4, 6:]).all()
    inner = (slice(8, -8), slice(10, -8))  # away from the edge that mode="nearest" repeated
    err = np.abs(out[inner] - field[inner])
    assert err.mean() < 0.01 * np.ptp(field) and err.max() < 0.1 * np.ptp(field)
    # without registering, the same region is far off
    assert np.abs(moved(field)[inner] - field[inner]).mean() > 10 * err.mean()


def test_register_translation_with_a_given_shift_and_integer_shift_is_exact(field):
    out = register_translation(moved(field, (2.0, -3.0)), field, shift_px=(-2.0, 3.0), order=1, fill=-1.0)
    np.testing.assert_allclose(out[2:-2, 3:-3], field[2:-2, 3:-3], atol=1e-9)
    assert (out[-2:] == -1).all() and (out[:, :3] == -1).all()


def test_fit_and_match_intensity_recover_an_affine_change(field):
    a, b = fit_intensity(0.5 * field + 123.0, field)
    assert a == pytest.approx(2.0, rel=1e-9) and b == pytest.approx(-246.0, rel=1e-9)
    # with noise on the moving image, the fit is the least-squares one (np.polyfit's)
    rng = np.random.default_rng(0)
    moving = 1.7 * field - 30.0 + rng.normal(0, 5.0, field.shape)
    a, b = fit_intensity(moving, field)
    a_ref, b_ref = np.polyfit(moving.ravel(), field.ravel(), 1)
    assert (a, b) == pytest.approx((a_ref, b_ref), rel=1e-9)
    out = match_intensity(moving, field)
    assert np.abs(out - field).mean() < np.abs(moving - field).mean() / 10


def test_match_intensity_ignores_pixels_without_data_and_honours_a_mask(field):
    moving = register_translation(moved(0.8 * field + 10.0), field)
    out = match_intensity(moving, field)
    assert np.isnan(out[-4:]).all()
    inner = (slice(8, -8), slice(10, -8))
    assert np.abs(out[inner] - field[inner]).mean() < 0.01 * np.ptp(field)
    mask = np.zeros(field.shape, bool)
    mask[:128] = True
    spoiled = field.copy()
    spoiled[128:] = 0.0  # only the masked half is fitted: the other half must not matter
    assert fit_intensity(2 * field + 5, spoiled, mask=mask) == pytest.approx((0.5, -2.5), rel=1e-9)


def test_valid_box_is_the_region_all_shifted_images_cover():
    rows, cols = valid_box([(2.3, -1.0), (-0.5, 4.0)], (100, 80), margin_px=1)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (4, 100 - 2, 5, 80 - 2)
    with pytest.raises(ValueError, match="no common region"):
        valid_box([(60, 0), (-60, 0)], (100, 80))


def test_bad_input_is_a_clear_error(field):
    with pytest.raises(ValueError, match="differs"):
        estimate_shift(field, field[:-1])
    with pytest.raises(ValueError, match="shift_px"):
        register_translation(field, field, shift_px=(1.0,))
    with pytest.raises(ValueError, match="fewer than two"):
        fit_intensity(np.full((4, 4), np.nan), np.ones((4, 4)))


def test_compare_register_reads_a_real_pair_as_the_protocol_does(field):
    """``compare(..., register=True)``: an input shot dimmer, blurred and shifted, and a
    'restored' image that is the sharp field itself, shifted and dimmer still. Unregistered,
    the restored image looks worse than the input; registered and fitted, it is the ground truth
    (PSNR > 40 dB), each shift is recovered and the report says what was done."""
    from napari_refocus.core.metrics import compare

    blurred = simulate(field.astype(np.float32), level=3, noise="poisson", seed=1).astype(np.float64)
    inp = 0.6 * moved(blurred) + 40.0
    pred = 0.5 * moved(field, (-2.2, 1.6)) + 10.0
    plain = compare(field, pred, inp)
    reg = compare(field, pred, inp, register=True)
    assert plain["gain"]["psnr"] < 0 < reg["gain"]["psnr"]
    assert reg["pred"]["psnr"] > 40 and reg["pred"]["pcc"] > 0.999
    shifts = reg["registration"]["shift_px"]
    np.testing.assert_allclose(shifts["input"], [-SHIFT[0], -SHIFT[1]], atol=0.1)
    np.testing.assert_allclose(shifts["pred"], [2.2, -1.6], atol=0.05)
    a, b = reg["registration"]["intensity"]["pred"]
    assert a == pytest.approx(2.0, rel=0.01) and b == pytest.approx(-20.0, abs=5.0)  # 1 / 0.5, -10 / 0.5
    y0, y1, x0, x1 = reg["registration"]["box"]
    # every image still covers it: ceil(2.2) rows at the top, ceil(3.4) at the bottom, ceil(5.7) and ceil(1.6)
    # columns, each plus the 2-px margin
    assert (y0, y1, x0, x1) == (3 + 2, 256 - 4 - 2, 6 + 2, 256 - 2 - 2)
    # the data range is the ground truth's on that region, the same for both rows
    assert reg["data_range"] == reg["input"]["data_range"] == float(np.ptp(field[y0:y1, x0:x1]))
