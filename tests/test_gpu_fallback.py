"""The accelerator path without an accelerator: out of memory -> smaller batches -> the CPU.

A stand-in accelerator: torch's "meta" device (tensors with shapes and no data: moving a
chunk there works) and a network or RL step that raises ``torch.cuda.OutOfMemoryError``
there (a unit test of ``run_chunked`` also has a device that fits small batches). The runs must halve their batches, then move to the CPU, say so in
the result's notes (and the log), and give the result of a plain CPU run.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_refocus.core import rl
from napari_refocus.core.devices import DeviceReport, run_chunked
from napari_refocus.core.tiling import patch_grid
from napari_refocus.io.samples import oracle_level_map, synthetic_pair
from napari_refocus.methods import get_method, refocus_array
from napari_refocus.methods.defocus import BATCH, DefocusMap

FAKE_GPU = torch.device("meta")


def oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")


@pytest.fixture(scope="module")
def pair():
    b, _, f = synthetic_pair()
    return np.ascontiguousarray(b[:300, 250:650]), np.ascontiguousarray(f[:300, 250:650])


def test_run_chunked_halves_then_moves_to_the_cpu(caplog):
    calls = []

    def fn(start, stop, device):
        calls.append((stop - start, device.type))
        if device.type != "cpu" and stop - start > 2:  # fits 2 items at most
            raise oom()
        return np.arange(start, stop)

    report = DeviceReport(FAKE_GPU)
    out = [r for _, r in run_chunked(fn, 20, batch_size=8, device=FAKE_GPU, report=report)]
    assert np.array_equal(np.concatenate(out), np.arange(20))
    assert calls[:3] == [(8, "meta"), (4, "meta"), (2, "meta")]
    assert {d for _, d in calls} == {"meta"}, "it fitted with 2 items: no move to the CPU"
    assert report.fallbacks == ["out of memory on meta: batches cut to 2"] and report.device == FAKE_GPU

    calls.clear()

    def never_fits(start, stop, device):
        calls.append((stop - start, device.type))
        if device.type != "cpu":
            raise oom()
        return np.arange(start, stop)

    report = DeviceReport(FAKE_GPU)
    with caplog.at_level(logging.WARNING, logger="napari_refocus.core.devices"):
        out = [r for _, r in run_chunked(never_fits, 5, batch_size=4, device=FAKE_GPU, report=report)]
    assert np.array_equal(np.concatenate(out), np.arange(5))
    assert calls[:4] == [(4, "meta"), (2, "meta"), (1, "meta"), (1, "cpu")]
    assert report.device.type == "cpu"
    assert any("continued on the CPU" in n for n in report.fallbacks)
    assert "continuing on the CPU" in caplog.text


def test_other_errors_are_not_retried():
    def broken(start, stop, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory"):
        list(run_chunked(broken, 4, batch_size=4, device=FAKE_GPU))


@pytest.mark.parametrize("batch_size", [None, 4], ids=["default", "4"])
def test_generator_halves_its_tile_batches_then_uses_the_cpu(monkeypatch, pair, batch_size):
    """refocus-unet through the method, its tiles on the stand-in accelerator. By default a
    pass runs one tile on the CPU and four on an accelerator (models.predict.tiles_per_pass), so
    the default run halves too."""
    method = "refocus-unet"
    if not get_method(method).weights_present():
        pytest.skip(f"weights of {method} not installed")
    from napari_refocus.methods import learned

    torch.set_num_threads(1)
    image = pair[0]
    # never_worse=False: the tiles alone (the gate's map: test_the_learned_methods_gate_map_reports_its_fallback)
    kw = {"tile": 192, "overlap": 32, "never_worse": False}
    if batch_size is not None:
        kw["batch_size"] = batch_size
    plain = refocus_array(image, method=method, device="cpu", **kw)

    real_get = learned.get_generator
    sizes = []

    def get_generator(source, device="cpu", **kw):
        net = real_get(source, "cpu", **kw)
        if torch.device(device).type == "cpu":
            return net
        return _OnFakeGpu(net, sizes)

    monkeypatch.setattr(learned, "get_generator", get_generator)
    res = refocus_array(image, method=method, device=FAKE_GPU, **kw)
    assert sizes == [4, 2, 1], "tile batches of 4, 2, 1 on the accelerator, then the CPU"
    assert res.device == "cpu"
    assert any("batches cut to 1" in n for n in res.notes), res.notes
    assert any("continued on the CPU" in n for n in res.notes), res.notes
    np.testing.assert_allclose(res.image, plain.image, rtol=0, atol=1e-4 * float(np.ptp(plain.image)))


class _OnFakeGpu(torch.nn.Module):
    """A network "on" the stand-in accelerator: out of memory on every batch of tiles."""

    def __init__(self, net, log: list):
        super().__init__()
        self.log = log
        self.multiple, self.upscale = getattr(net, "multiple", 1), getattr(net, "upscale", 1)
        self.sha256 = getattr(net, "sha256", "")

    def forward(self, x):
        assert x.device == FAKE_GPU
        self.log.append(x.shape[0])
        raise oom()


@pytest.fixture
def rl_on_fake_gpu(monkeypatch):
    """RL on the stand-in accelerator: out of memory for every batch of patches (or image)."""
    from napari_refocus.core import rl_batch

    real = rl.iter_richardson_lucy_batch
    sizes = []

    def fake(observed, otf, iterations=15, **kw):
        if observed.device.type == "cpu":
            return (yield from real(observed, otf, iterations, **kw))
        sizes.append(observed.shape[0])
        raise oom()

    # the whole-image form looks it up in core.rl, the batches of patches in core.rl_batch
    monkeypatch.setattr(rl, "iter_richardson_lucy_batch", fake)
    monkeypatch.setattr(rl_batch, "iter_richardson_lucy_batch", fake)
    return sizes


def test_depth_variant_rl_halves_its_patch_batches_then_uses_the_cpu(rl_on_fake_gpu, pair):
    sizes = rl_on_fake_gpu
    image, field = pair
    grid = patch_grid(image.shape)
    levels = oracle_level_map(field, grid)
    assert (levels > 0).sum() > 32, "enough defocused patches for a full batch"
    probs = np.zeros((*grid.shape, 12), np.float32)
    np.put_along_axis(probs, levels[..., None], 1.0, axis=-1)
    dmap = DefocusMap(levels=levels, probabilities=probs, certainty=np.ones(grid.shape, np.float32), grid=grid)
    plain = refocus_array(image, method="lbdvd", device="cpu", defocus_map=dmap, iterations=5)
    res = refocus_array(image, method="lbdvd", device=FAKE_GPU, defocus_map=dmap, iterations=5)
    # lbdvd deconvolves the patches of a level in each 4x4 group together (core.rl_groups), one
    # frame shape at a time (job_boxes); an accelerator's batch is 256 such frames: all n of the
    # first shape's, then the powers of two below n down to 1 (a chunk of one frame is
    # deconvolved with a copy of it: rl.MIN_BATCH); then every other shape goes to the CPU at
    # once (no second round of out-of-memory errors)
    from napari_refocus.core.rl_groups import group_grid, group_jobs

    jobs = len(group_jobs(levels, grid.shape, 4, group_cols=group_grid(grid, 4).shape[1]))
    n = sizes[0]
    assert 2 < n < jobs, "enough frames to halve, and more than one frame shape"
    halves = [2**k for k in range(int(np.log2(n)), -1, -1) if 2**k < n]
    assert set(sizes[:-len(halves)]) == {n} and sizes[-len(halves):] == [*halves[:-1], max(1, rl.MIN_BATCH)], sizes
    assert res.device == "cpu"
    assert any("batches cut to 1" in n for n in res.notes) and any("continued on the CPU" in n for n in res.notes)
    np.testing.assert_allclose(res.image, plain.image, rtol=1e-5, atol=1e-3)


def test_depth_invariant_rl_moves_to_the_cpu(rl_on_fake_gpu, pair, caplog):
    sizes = rl_on_fake_gpu
    image = pair[0]
    # never_worse=False: Richardson-Lucy alone (the gate's map on the stand-in device: the generators' tests)
    plain = refocus_array(image, method="rl", device="cpu", level=4, iterations=5, never_worse=False)
    with caplog.at_level(logging.WARNING, logger="napari_refocus.core.rl"):
        res = refocus_array(image, method="rl", device=FAKE_GPU, level=4, iterations=5, never_worse=False)
    assert sizes == [1]  # one whole image: nothing to halve
    assert res.device == "cpu" and any("continued on the CPU" in n for n in res.notes)
    assert "deconvolving on the CPU" in caplog.text
    np.testing.assert_array_equal(res.image, plain.image)


@pytest.fixture
def delpnet_on_fake_gpu(monkeypatch):
    """DelpNet "on" the stand-in accelerator: out of memory for every batch of patches."""
    from napari_refocus.methods import defocus

    if not get_method("lbdvd").weights_present():
        pytest.skip("DelpNet weights not installed")
    real = defocus._model
    sizes = []

    def model(weights, device):
        net = real(weights, "cpu")
        return net if torch.device(device).type == "cpu" else _OnFakeGpu(net, sizes)

    monkeypatch.setattr(defocus, "_model", model)
    return sizes


def test_delpnet_halves_its_patch_batches_then_uses_the_cpu(delpnet_on_fake_gpu, pair, caplog):
    from napari_refocus.core.progress import drain
    from napari_refocus.methods.defocus import iter_defocus_map

    sizes = delpnet_on_fake_gpu
    torch.set_num_threads(1)
    image = pair[0]
    plain = drain(iter_defocus_map(image, device="cpu", batch_size=16))
    report = DeviceReport(FAKE_GPU)
    with caplog.at_level(logging.WARNING, logger="napari_refocus.core.devices"):
        dmap = drain(iter_defocus_map(image, device=FAKE_GPU, batch_size=16, report=report))
    # batches of 16, 8, 4, 2, 1 on the accelerator (mean_softmax may pad the smallest), then the CPU
    assert len(sizes) == 5 and sizes[:3] == [16, 8, 4], sizes
    assert report.device.type == "cpu"
    assert report.fallbacks == ["out of memory on meta: batches cut to 1", "out of memory on meta: continued on the CPU"]
    assert "continuing on the CPU" in caplog.text
    np.testing.assert_array_equal(dmap.levels, plain.levels)
    np.testing.assert_allclose(dmap.probabilities, plain.probabilities, rtol=0, atol=1e-5)


def test_lbdvd_map_and_rl_fall_back_to_the_cpu_with_notes(delpnet_on_fake_gpu, rl_on_fake_gpu, pair):
    """The whole method: DelpNet's map and the RL both run out of memory on the accelerator;
    the result says so and equals the CPU's."""
    image = pair[0]
    plain = refocus_array(image, method="lbdvd", device="cpu", iterations=5)
    res = refocus_array(image, method="lbdvd", device=FAKE_GPU, iterations=5)
    # the default batch (16), then 8, 4, 2, 1 (mean_softmax may pad the smallest), then the CPU
    sizes = delpnet_on_fake_gpu
    assert len(sizes) == 5 and sizes[:3] == [BATCH, BATCH // 2, BATCH // 4], sizes
    assert res.device == "cpu"
    assert any("continued on the CPU" in note for note in res.notes), res.notes
    np.testing.assert_array_equal(res.defocus_map.levels, plain.defocus_map.levels)
    np.testing.assert_allclose(res.image, plain.image, rtol=1e-5, atol=1e-3)


def test_the_learned_methods_gate_map_reports_its_fallback(delpnet_on_fake_gpu, pair):
    """The map that gates a learned method runs out of memory on the accelerator too: the run's
    report hears of it (so the result's provenance does), and the gate equals the CPU's."""
    from napari_refocus.core.progress import drain
    from napari_refocus.methods.gate import iter_image_gate

    torch.set_num_threads(1)
    plain_map, plain_gate = drain(iter_image_gate(pair[0], device="cpu"))
    report = DeviceReport(FAKE_GPU)
    dmap, gate = drain(iter_image_gate(pair[0], device=FAKE_GPU, report=report))
    assert report.device.type == "cpu" and any("continued on the CPU" in n for n in report.fallbacks)
    np.testing.assert_array_equal(dmap.levels, plain_map.levels)
    np.testing.assert_array_equal(gate.weights(pair[0].shape, 1), plain_gate.weights(pair[0].shape, 1))


def test_gated_rl_map_and_deconvolution_fall_back_to_the_cpu(delpnet_on_fake_gpu, rl_on_fake_gpu, pair):
    """rl with its gate (the default): the gate's map and Richardson-Lucy both run out of memory
    on the accelerator; the run moves to the CPU, says so, and equals the CPU's result."""
    torch.set_num_threads(1)
    image = pair[0]
    plain = refocus_array(image, method="rl", device="cpu", level=4, iterations=5)
    res = refocus_array(image, method="rl", device=FAKE_GPU, level=4, iterations=5)
    assert delpnet_on_fake_gpu and rl_on_fake_gpu  # both tried the accelerator first
    assert res.device == "cpu" and any("continued on the CPU" in n for n in res.notes), res.notes
    assert res.provenance()["never_worse"]["ran"] is True
    np.testing.assert_allclose(res.image, plain.image, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(res.gate_weights), np.asarray(plain.gate_weights))
