import os
from pathlib import Path

# One numerical path for MKL (torch's CPU FFT and matrix products) on every x86 CPU, set before
# MKL's first call. MKL takes AVX-512 code on Intel Xeons and its compatible code on AMD EPYC;
# they round differently (measured, torch 2.13.0: lbdvd's output <= 6e-6 of the value apart, the
# class tables' measurement up to 0.16 um apart), and on the AVX-512 path a frame's FFT depends
# on how many frames are transformed with it. The tests that compare bits (block by block
# against in memory, the cached class tables against their measurement) then compare like with
# like on either CPU. The package itself leaves MKL as it is (the AVX-512 path is ~10 % faster).
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
W2_INFOCUS = SHARED / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"


@pytest.fixture(autouse=True)
def saved_preferences(monkeypatch, tmp_path):
    """Every test starts with no saved widget preferences and never touches the user's own:
    magicgui's ``persist=True`` forms save to the user's cache folder, which a test would
    otherwise overwrite (a cancel test left ``iterations=300`` in a developer's Refocus widget)."""
    folder = tmp_path / "cache"
    try:
        import magicgui._util
    except ImportError:  # no magicgui: no widget saves anything
        return folder
    monkeypatch.setattr(magicgui._util, "user_cache_dir", lambda *a, **k: folder)
    return folder


@pytest.fixture(scope="session")
def infocus():
    """A real in-focus BBBC006 image (the one shipped in the package), read-only."""
    from napari_refocus.io.samples import infocus_image

    img = infocus_image()
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def infocus_crop(infocus):
    """A 200x260 crop of the real in-focus image with cells in it."""
    return np.ascontiguousarray(infocus[100:300, 200:460])


def shared_infocus_files():
    return sorted(W2_INFOCUS.glob("*.tif")) if W2_INFOCUS.exists() else []
