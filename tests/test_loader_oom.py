"""A network that does not fit on the accelerator: the loader puts it on the CPU, with a notice.

The stand-in accelerator is torch's "meta" device (as in ``test_gpu_fallback.py``): moving a
network there is made to raise ``torch.cuda.OutOfMemoryError``. ``load_model`` must then give
a network that runs on the CPU (same numbers as the CPU one), say so in the log and in its
``device_note``, and leave other errors alone.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from napari_refocus.models import loader, registry

FAKE_GPU = torch.device("meta")


def oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (fake)")


@pytest.fixture
def no_room(monkeypatch):
    """Moving DelpNet or the CycleGAN generator onto any accelerator runs out of memory."""
    moved = []
    for name in ("DelpNet", "ResnetGenerator"):
        arch = registry.get_architecture(name)

        def prepare(module, device, _real=arch.prepare):
            moved.append(torch.device(device).type)
            if torch.device(device).type != "cpu":
                raise oom()
            return _real(module, device)

        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(arch, prepare=prepare))
    loader.clear_cache()
    yield moved
    loader.clear_cache()


@pytest.mark.parametrize("name, shape", [("delpnet", (3, 1, 84, 84)), ("comi-cyclegan", (1, 1, 64, 64))])
def test_out_of_memory_on_the_device_runs_the_network_on_the_cpu(no_room, caplog, name, shape):
    with caplog.at_level(logging.WARNING, logger="napari_refocus.models.loader"):
        model = loader.load_model(name, FAKE_GPU)
    assert no_room[:2] == ["meta", "cpu"]
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert "meta" in model.device_note and "CPU" in model.device_note
    assert f"out of memory loading {name}.safetensors onto meta" in caplog.text
    # the record of the file really loaded and the network's attributes are kept
    assert model.sha256 == loader.file_sha256(loader.weights_path(name)) and model.meta["architecture"]
    assert getattr(model, "multiple", 1) == getattr(loader.load_fresh(name), "multiple", 1)
    cpu = loader.load_model(name, "cpu")
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, want = model(x), cpu(x)
    assert got.device.type == "cpu" and torch.equal(got, want)
    # cached like any other: the second call does not try the device again
    assert loader.load_model(name, FAKE_GPU) is model and no_room.count("meta") == 1


def test_other_errors_while_moving_are_not_hidden(monkeypatch):
    arch = registry.get_architecture("DelpNet")

    def broken(module, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(registry._REGISTRY, "DelpNet", dataclasses.replace(arch, prepare=broken))
    loader.clear_cache()
    try:
        with pytest.raises(RuntimeError, match="illegal memory"):
            loader.load_model("delpnet", FAKE_GPU)
    finally:
        loader.clear_cache()


def test_the_cpu_fallback_reaches_the_runs_notes(no_room):
    """A method records the network it used; the loader's notice goes into the run's notes
    (RefocusResult.notes), once however often the network is used."""
    from napari_refocus.methods.base import RunReport

    model = loader.load_model("comi-cyclegan", FAKE_GPU)
    report = RunReport(FAKE_GPU)
    report.used_weights("comi-cyclegan", model)
    report.used_weights("comi-cyclegan", model)
    assert report.fallbacks == [model.device_note]
    assert report.weights_sha256["comi-cyclegan"] == model.sha256
    plain = RunReport("cpu")
    plain.used_weights("comi-cyclegan", loader.load_model("comi-cyclegan", "cpu"))
    assert plain.fallbacks == []
