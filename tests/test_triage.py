import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.methods.triage import best_focus_plane, normalized_variance

from conftest import SHARED

DFNN = SHARED / "DFNN_defocus" / "data" / "test" / "mitochondria" / "stack"


def test_sharpness_drops_with_defocus(infocus_crop):
    values = [normalized_variance(nr.simulate(infocus_crop, level=lv, noise=None)) for lv in (0, 2, 5, 9)]
    assert values == sorted(values, reverse=True)


def test_best_plane_of_a_simulated_stack(infocus_crop):
    stack = np.stack([nr.simulate(infocus_crop, level=lv, seed=lv) for lv in (6, 3, 0, 2, 7)])
    rec = best_focus_plane(stack, use_delpnet=False)
    assert rec[0]["best_plane"] == 2
    two = np.stack([stack, stack[::-1]], axis=1)  # (Z, C, Y, X), the second channel reversed
    recs = best_focus_plane(two, channel_axis=1, use_delpnet=False)
    assert [r["best_plane"] for r in recs] == [2, 2]
    with pytest.raises(ValueError, match="channel_axis"):
        best_focus_plane(two, use_delpnet=False)


@pytest.mark.skipif(not DFNN.exists(), reason="../shared/data/DFNN_defocus not present")
def test_real_dfnn_stack_in_focus_plane():
    files = sorted(DFNN.glob("*.tif"))
    stack = np.stack([nr.read_image(f)[0] for f in files])
    orders = [int(f.stem[-4:]) for f in files]
    rec = best_focus_plane(stack, use_delpnet=False)[0]
    # SOURCE.md: order 51 is in focus; sharpness peaks at orders 50-51
    assert orders[rec["best_plane"]] in (50, 51, 52)
