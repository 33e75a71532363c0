import numpy as np
import pytest
from skimage.metrics import structural_similarity

import napari_refocus as nr


def test_identical_images():
    gt = np.random.default_rng(0).random((64, 64)) * 100
    m = nr.metrics(gt, gt)
    assert m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0) and m["pcc"] == pytest.approx(1.0)
    assert m["data_range"] == pytest.approx(gt.max() - gt.min())


def test_known_values():
    gt = np.zeros((50, 50))
    gt[0, 0] = 100.0
    pred = gt + 1.0  # mse = 1, range = 100 -> 40 dB
    m = nr.metrics(pred, gt)
    assert m["psnr"] == pytest.approx(40.0)
    m = nr.metrics(pred, gt, data_range=10.0)
    assert m["psnr"] == pytest.approx(20.0) and m["data_range"] == 10.0
    a = np.random.default_rng(1).random((40, 40))
    assert nr.metrics(2 * a + 3, a)["pcc"] == pytest.approx(1.0)
    assert nr.metrics(-a + 5, a)["pcc"] == pytest.approx(-1.0)


def test_ssim_is_scikit_image(infocus_crop):
    blurred = nr.simulate(infocus_crop, level=5, seed=0)
    gt = infocus_crop.astype(float)
    dr = gt.max() - gt.min()
    ref = structural_similarity(blurred.astype(float), gt, data_range=dr)
    assert nr.metrics(blurred, infocus_crop)["ssim"] == pytest.approx(ref)


def test_compare_gains(infocus_crop):
    blurred = nr.simulate(infocus_crop, level=5, seed=0)
    restored = nr.deconvolve(blurred, level=5)
    out = nr.compare(infocus_crop, restored, blurred)
    assert out["gain"]["psnr"] == pytest.approx(out["pred"]["psnr"] - out["input"]["psnr"])
    assert out["gain"]["psnr"] > 0.5
    assert out["input"]["data_range"] == out["pred"]["data_range"] == out["data_range"]


def test_bad():
    with pytest.raises(ValueError, match="shape"):
        nr.metrics(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="data_range"):
        nr.metrics(np.zeros((8, 8)), np.zeros((8, 8)))


def test_pcc_of_identical_images_is_exactly_one():
    """Rounding once put it at 1.0000000000000002 on a 5x5 crop."""
    a = np.random.default_rng(0).poisson(300, (200, 300)).astype(np.uint16)[:5, :5]
    assert nr.metrics(a, a)["pcc"] == 1.0
