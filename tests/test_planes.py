"""core.planes: the nD / RGB plane driver (pure numpy, no method, no Qt)."""

import numpy as np
import pytest

from napari_refocus.core.planes import (
    default_axes,
    iter_map_planes,
    normalise_axes,
    plane_indices,
)
from napari_refocus.core.progress import Progress, drain


def _job(up=1, seen=None):
    """A plane job: 2 x the plane (repeated ``up`` x), two progress steps; result = plane sum."""
    def job(plane):
        if seen is not None:
            seen.append(plane.copy())
        yield Progress(1, 2, "half")
        yield Progress(2, 2, "done")
        out = 2 * np.asarray(plane, np.float32)
        out = np.repeat(np.repeat(out, up, 0), up, 1)
        return out, float(plane.sum())
    return job


def _run(data, axes, up=1, seen=None):
    events = []
    stack, first = drain(iter_map_planes(data, _job(up, seen), axes=axes, upscale=up), events.append)
    return stack, first, events


def test_normalise_axes_errors():
    assert normalise_axes(" zyx ", 3) == "ZYX"
    for bad, nd, msg in [("ZYX", 2, "name 3 dimensions"), ("ZZX", 3, "Y exactly once"),
                         ("SYXS", 4, "only once"), ("Z-X", 3, "letters"), (None, 2, "string"),
                         ("YXX", 3, "X exactly once")]:
        with pytest.raises(ValueError, match=msg):
            normalise_axes(bad, nd)


def test_default_axes():
    assert default_axes(2) == "YX"
    assert default_axes(4) == "QQYX"
    assert default_axes(3, rgb=True) == "YXS"
    with pytest.raises(ValueError):
        default_axes(2, rgb=True)


def test_plane_indices_skip_alpha_and_keep_order():
    full = slice(None)
    assert plane_indices((4, 5), axes="YX") == [(full, full)]
    idx = plane_indices((2, 4, 5, 4), axes="ZYXS")  # RGBA: 3 colour planes per z
    assert idx == [(z, full, full, c) for z in range(2) for c in range(3)]
    assert len(plane_indices((2, 3, 4, 5), axes="TCYX")) == 6
    assert len(plane_indices((4, 5, 2), axes="YXS")) == 2  # 2 samples: both restored


def test_zstack_plane_by_plane_same_axes():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, (3, 16, 20)).astype(np.uint16)
    before = data.copy()
    stack, first, events = _run(data, "ZYX")
    assert stack.shape == data.shape and stack.dtype == np.float32
    np.testing.assert_array_equal(stack, 2 * data.astype(np.float32))
    np.testing.assert_array_equal(data, before)  # never written
    assert first == float(data[0].sum())
    assert events[-1].done == events[-1].total == 3000
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert events[0].stage == "plane 1/3 (z 0) half"


def test_single_plane_has_plain_stages():
    data = np.ones((8, 8), np.float32)
    stack, _, events = _run(data, "YX")
    assert [e.stage for e in events] == ["half", "done"]
    np.testing.assert_array_equal(stack, 2 * data)


def test_rgba_colour_planes_restored_alpha_copied_and_upscaled():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (6, 7, 4)).astype(np.uint8)
    seen = []
    stack, _, events = _run(data, "YXS", up=2, seen=seen)
    assert stack.shape == (12, 14, 4)
    assert len(seen) == 3 and all(p.shape == (6, 7) for p in seen)
    for c in range(3):
        want = np.repeat(np.repeat(2 * data[..., c].astype(np.float32), 2, 0), 2, 1)
        np.testing.assert_array_equal(stack[..., c], want)
    alpha = np.repeat(np.repeat(data[..., 3].astype(np.float32), 2, 0), 2, 1)
    np.testing.assert_array_equal(stack[..., 3], alpha)  # copied, not doubled
    assert events[0].stage == "plane 1/3 (channel 0) half"


def test_planar_rgb_and_x_before_y():
    rng = np.random.default_rng(2)
    data = rng.random((3, 5, 6)).astype(np.float32)
    stack, _, _ = _run(data, "SYX")
    np.testing.assert_allclose(stack, 2 * data)
    seen = []
    xy = rng.random((6, 5)).astype(np.float32)  # axes XY: the job still sees (Y, X)
    stack, _, _ = _run(xy, "XY", seen=seen)
    assert seen[0].shape == (5, 6)
    np.testing.assert_allclose(stack, 2 * xy)


def test_lazy_sources_read_plane_by_plane():
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(3)
    data = rng.random((2, 3, 9, 10)).astype(np.float32)
    want, _, _ = _run(data, "TCYX")
    lazy, _, _ = _run(da.from_array(data, chunks=(1, 1, 9, 10)), "TCYX")
    z = zarr.zeros(data.shape, chunks=(1, 1, 9, 10), dtype="f4")
    z[...] = data
    stored, _, _ = _run(z, "TCYX")
    np.testing.assert_array_equal(lazy, want)
    np.testing.assert_array_equal(stored, want)
    np.testing.assert_array_equal(z[...], data)


def test_wrong_plane_shape_is_an_error():
    def job(plane):
        yield Progress(1, 1)
        return plane[:-1], None

    with pytest.raises(ValueError, match="expected"):
        drain(iter_map_planes(np.zeros((4, 4)), job, axes="YX"))
    with pytest.raises(ValueError, match="upscale"):
        drain(iter_map_planes(np.zeros((4, 4)), job, axes="YX", upscale=0))
