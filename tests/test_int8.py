"""DelpNet in int8 on the CPU (opt-in, ``NAPARI_REFOCUS_INT8=1``): the same map within a few
patches, the same map block by block as in memory, and float32 wherever int8 cannot run."""

import numpy as np
import pytest
import torch

import napari_refocus as nr
from napari_refocus.io.samples import infocus_image
from napari_refocus.methods import canonical
from napari_refocus.models import quantize

CPU = torch.device("cpu")
needs_int8 = pytest.mark.skipif(not quantize.int8_available(), reason="torch has no x86 quantised engine here")


@pytest.fixture
def int8(monkeypatch):
    monkeypatch.setenv(canonical.INT8_ENV, "1")


def test_float32_unless_asked_or_where_int8_cannot_run(monkeypatch):
    monkeypatch.delenv(canonical.INT8_ENV, raising=False)
    plain = canonical.delpnet(None, CPU)
    assert not isinstance(plain, quantize.QuantizedDelpNet)
    monkeypatch.setenv(canonical.INT8_ENV, "1")
    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    assert canonical.delpnet(None, CPU) is plain  # no engine: the float32 network, no error


@needs_int8
def test_int8_network_is_cached_and_carries_the_files_identity(int8):
    a, b = canonical.delpnet(None, CPU), canonical.delpnet(None, CPU)
    assert a is b and isinstance(a, quantize.QuantizedDelpNet) and a.precision == "int8"
    from napari_refocus.models.loader import load_model

    plain = load_model("delpnet", CPU)
    assert a.sha256 == plain.sha256 and a.weights_file == plain.weights_file
    kinds = [type(m).__module__ for m in a.features.modules()]
    assert any("quantized" in k for k in kinds), kinds  # the blocks after the first run quantised


@needs_int8
def test_int8_map_reads_patches_as_float32_does(monkeypatch):
    gt = infocus_image()
    same, near = [], []
    for level in (0, 2, 5, 8):
        img = nr.simulate(gt, level=level, seed=level) if level else gt
        monkeypatch.delenv(canonical.INT8_ENV, raising=False)
        ref = nr.defocus_map(img, device="cpu")
        monkeypatch.setenv(canonical.INT8_ENV, "1")
        got = nr.defocus_map(img, device="cpu")
        assert got.weights_sha256 == ref.weights_sha256
        same.append(np.mean(got.levels == ref.levels))
        near.append(np.mean(np.abs(got.levels - ref.levels) <= 1))
        assert np.abs(got.probabilities - ref.probabilities).max() < 0.5
    assert np.mean(same) >= 0.95 and min(near) == 1.0, (same, near)


@needs_int8
def test_int8_map_block_by_block_equals_in_memory(int8):
    from napari_refocus.core.optics import Optics
    from napari_refocus.methods.lbdvd import METHOD
    from napari_refocus.methods.lbdvd_blocks import chunked_defocus_map

    img = nr.simulate(infocus_image(), level_field=nr.tilted_level_field(infocus_image().shape, low=0, high=8),
                      seed=3)
    ref = nr.defocus_map(img, device="cpu")
    stats = METHOD.image_stats(img.astype(np.float32), params=METHOD.parse())["stats"]
    got = chunked_defocus_map(img, block=60, device="cpu", stats=stats, optics=Optics(psf_model="paraxial"))
    assert len(np.unique(ref.levels)) > 2
    np.testing.assert_array_equal(got.levels, ref.levels)
    np.testing.assert_array_equal(got.probabilities, ref.probabilities)


@needs_int8
def test_cancel_stops_the_calibration_and_leaves_nothing_cached(int8):
    """Calibration takes seconds on a process's first int8 map: a Cancel stops it at once, and
    the next map calibrates afresh (the caches keep no half-made network)."""
    import threading
    import time
    from pathlib import Path

    from napari_refocus.core.progress import Cancelled, CancelToken, cancel_scope
    from napari_refocus.models.loader import weights_path

    canonical.int8_delpnet.cache_clear()
    canonical.calibration_patches.cache_clear()
    path = Path(weights_path("delpnet"))
    token = CancelToken()
    threading.Timer(0.5, token.cancel).start()  # mid-way: blurring the field and calibrating take ~3.5 s
    t0 = time.perf_counter()
    with cancel_scope(token), pytest.raises(Cancelled):
        canonical.int8_delpnet(str(path), path.stat().st_mtime_ns)
    assert time.perf_counter() - t0 < 0.5 + 1.0
    assert canonical.int8_delpnet.cache_info().currsize == 0
    assert isinstance(canonical.delpnet(None, CPU), quantize.QuantizedDelpNet)


@needs_int8
def test_int8_lbdvd_block_by_block_equals_in_memory(int8):
    """lbdvd's block form classifies with the same int8 network as the run in memory."""
    from napari_refocus.bigimage import iter_method_blocks

    gt = infocus_image()
    img = nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=8), seed=5)
    eager = nr.refocus(img, method="lbdvd", device="cpu")
    out = np.full(img.shape, np.nan, np.float32)
    for _, (y0, y1, x0, x1), block in iter_method_blocks(img, "lbdvd", device="cpu", block=252):
        out[y0:y1, x0:x1] = block
    np.testing.assert_array_equal(out, eager.image)
