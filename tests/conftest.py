from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
W2_INFOCUS = SHARED / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"


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
