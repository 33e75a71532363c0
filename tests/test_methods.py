"""Methods as data: strict parameter schemas, an explicit registry, true provenance."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import napari_refocus as nr  # noqa: E402
from napari_refocus.methods import get_method, list_methods, register, unregister  # noqa: E402
from napari_refocus.methods.registry import BUILTIN  # noqa: E402


@pytest.fixture(scope="module")
def small(infocus_crop):
    return np.ascontiguousarray(nr.simulate(infocus_crop, level=4, seed=0)[:128, :160])


def test_registry_is_the_explicit_list_and_refuses_duplicates():
    assert [m.name for m in list_methods()][: len(BUILTIN)] == [m.name for m in BUILTIN]
    assert [m.name for m in BUILTIN] == ["lbdvd", "rl", "comi-cyclegan", "refocus-unet", "m-deblurgan",
                                         "h2t-msunet"]
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("rl"))
    custom = dataclasses.replace(get_method("rl"), name="rl-copy")
    register(custom)
    try:
        assert get_method("rl-copy") is custom
    finally:
        unregister("rl-copy")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


@pytest.mark.parametrize("method, bad", [("rl", "stride"), ("h2t-msunet", "iterations"),
                                         ("h2t-msunet", "level"), ("lbdvd", "level")])
def test_unknown_parameter_is_a_value_error_listing_the_valid_ones(small, method, bad):
    with pytest.raises(ValueError) as err:
        nr.refocus(small, method=method, device="cpu", **{bad: 1})
    msg = str(err.value)
    assert repr(bad) in msg and "valid:" in msg
    for name in get_method(method).parameter_names[:3]:
        assert name in msg


@pytest.mark.parametrize("kw, match", [({"iterations": 0}, ">= 1"), ({"iterations": 2.5}, "integer"),
                                       ({"level": 11}, "0..10"), ({"pixel_um": 0}, "positive"),
                                       ({"level": True}, "integer")])
def test_bad_values_are_clear_errors(small, kw, match):
    with pytest.raises(ValueError, match=match):
        nr.refocus(small, method="rl", device="cpu", **kw)


def test_provenance_holds_the_parameters_the_method_used(small):
    res = nr.refocus(small, method="rl", device="cpu", level=3, iterations=4, pixel_um=0.5)
    prov = res.provenance()
    assert prov["parameters"]["level"] == 3 and prov["parameters"]["iterations"] == 4
    assert prov["parameters"]["optics"]["pixel_um"] == 0.5
    assert set(prov["parameters"]) == {"level", "iterations", "optics", "never_worse"}
    assert prov["device"] == "cpu" and prov["weights_sha256"] == {}


@pytest.fixture(scope="module")
def custom_h2t(tmp_path_factory):
    """The shipped h2t-msunet tensors re-saved with other metadata: same network, new file hash."""
    from napari_refocus.models.loader import file_sha256, load_model, save_weights

    if not get_method("h2t-msunet").weights_present():
        pytest.skip("h2t-msunet weights not installed")
    model = load_model("h2t-msunet", "cpu")
    path = tmp_path_factory.mktemp("w") / "mine.safetensors"
    save_weights(model, path, meta={**model.meta, "provenance": {"note": "a user's copy"}})
    return path, file_sha256(path)


def test_provenance_records_a_custom_weights_files_own_hash(small, custom_h2t):
    from napari_refocus.models.loader import weights_hash

    path, digest = custom_h2t
    shipped = nr.refocus(small, method="h2t-msunet", device="cpu")
    mine = nr.refocus(small, method="h2t-msunet", device="cpu", weights=str(path))
    assert digest != weights_hash("h2t-msunet")
    assert shipped.provenance()["weights_sha256"] == {"h2t-msunet": weights_hash("h2t-msunet")}
    assert mine.provenance()["weights_sha256"] == {"h2t-msunet": digest}
    assert mine.provenance()["parameters"]["weights"] == str(path)
    np.testing.assert_array_equal(mine.image, shipped.image)  # same tensors, same output
    # only what a learned method uses: no iterations; optics None (none given)
    assert set(mine.provenance()["parameters"]) == {f.name for f in dataclasses.fields(get_method("h2t-msunet").schema)}


def test_provenance_records_the_device_that_ran_after_an_oom_fallback(small, monkeypatch):
    """A pretend accelerator that is always out of memory: tiles are halved down to one, then
    the CPU finishes the job; provenance says "cpu", not the device asked for."""
    import napari_refocus.core.devices as devices
    import napari_refocus.methods.learned as learned
    import napari_refocus.methods.run as run

    if not get_method("h2t-msunet").weights_present():
        pytest.skip("h2t-msunet weights not installed")
    want = nr.refocus(small, method="h2t-msunet", device="cpu", tile=64, overlap=16)
    real_get = learned.get_generator
    fake = torch.device("cuda")  # only a name: this machine need not have CUDA
    batches = []
    monkeypatch.setattr(run, "resolve_device", lambda d: fake)
    monkeypatch.setattr(learned, "get_generator", lambda src, d, **kw: real_get(src, "cpu", **kw))

    def always_oom(exc):
        return True

    monkeypatch.setattr(devices, "is_oom", always_oom)
    real_run_chunked = devices.run_chunked

    def spy(fn, n, **kw):
        calls = []
        batches.append(calls)  # one list per chunked run: the gate's map (read first), then the tiles

        def fn2(start, stop, d):
            calls.append((stop - start, d.type))
            return fn(start, stop, d)
        return real_run_chunked(fn2, n, **kw)

    monkeypatch.setattr(devices, "run_chunked", spy)
    # four tiles a pass on the accelerator (the CPU's default is one), halved on each out-of-memory error
    res = nr.refocus(small, method="h2t-msunet", device="cuda", tile=64, overlap=16, batch_size=4)
    assert res.device == "cpu" and res.provenance()["device"] == "cpu"
    assert any("CPU" in n for n in res.provenance()["notes"])
    tiles = batches[-1]
    assert [b for b, d in tiles if d == "cuda"] == [4, 2, 1]  # halved, then the CPU
    assert {d for _, d in tiles[3:]} == {"cpu"}
    np.testing.assert_allclose(res.image, want.image, rtol=1e-5)  # batch 1 vs 4: float rounding only


def test_a_cached_model_is_not_moved_by_a_run_on_another_device(small):
    """Each device gets its own cached instance; a run elsewhere never moves the CPU one
    (the 'meta' device stands in for an accelerator this machine may not have)."""
    from napari_refocus.models.loader import load_model

    if not get_method("h2t-msunet").weights_present():
        pytest.skip("h2t-msunet weights not installed")
    cpu = load_model("h2t-msunet", "cpu")
    weights_before = {k: v.clone() for k, v in cpu.state_dict().items()}
    other = load_model("h2t-msunet", torch.device("meta"))
    assert other is not cpu and {p.device.type for p in other.parameters()} == {"meta"}
    nr.refocus(small, method="h2t-msunet", device="cpu")
    assert load_model("h2t-msunet", "cpu") is cpu
    assert {p.device.type for p in cpu.parameters()} == {"cpu"}
    assert all(torch.equal(v, weights_before[k]) for k, v in cpu.state_dict().items())


def test_the_api_restores_stacks_and_rgb_plane_by_plane(small):
    """refocus(stack, axes=...) runs the core's plane driver: each plane as the 2-D run of it."""
    stack = np.stack([small, small[::-1], small[:, ::-1]])
    res = nr.refocus(stack, axes="ZYX", method="rl", level=3, iterations=4, device="cpu")
    assert res.image.shape == stack.shape and res.image.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(res.image[k], nr.refocus(stack[k], method="rl", level=3, iterations=4,
                                                                 device="cpu").image)
    rgb = np.stack([small, small // 2, small // 3], axis=-1)
    out = nr.refocus(rgb, axes="YXS", method="rl", level=3, iterations=4, device="cpu")
    assert out.image.shape == rgb.shape and "plane" in " ".join(out.provenance()["notes"])
    with pytest.raises(ValueError, match=r"3-D with shape \(3, .*give axes= \(e.g. 'ZYX' for a stack, 'YXS' for RGB\)"):
        nr.refocus(stack, method="rl", device="cpu")  # a stack needs its axes, and the error says how
