"""DelpNet's classes in um for any objective, measured with DelpNet itself (methods.class_table)."""

import numpy as np
import pytest

from napari_refocus.core.matching import match_defocus_um
from napari_refocus.core.optics import Optics, psf_bank, psf_stack
from napari_refocus.methods import class_table
from napari_refocus.methods.class_table import SELF_TOLERANCE_UM, response_table, smooth_table
from napari_refocus.methods.defocus import CANONICAL, map_frame
from napari_refocus.methods.frames import rl_frame

OIL = Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108)


def test_training_objective_gives_back_its_own_classes():
    # the procedure, run on the objective DelpNet was trained on, must find 2 L um per class
    table = np.array(response_table(CANONICAL))
    assert table[0] == 0.0 and np.all(np.diff(table) > 0)
    assert np.abs(table - 2.0 * np.arange(11)).max() <= SELF_TOLERANCE_UM


def test_high_na_classes_reach_further_than_encircled_energy():
    # at NA 1.4 DelpNet reads the compact core of a defocused PSF, not its faint halo: the
    # same class needs more defocus than the encircled-energy match says (measured: 5.83 vs 2.68 um
    # at the top)
    table = np.array(response_table(OIL))
    ee = np.array(match_defocus_um(CANONICAL, OIL))
    assert table[0] == 0.0 and np.all(np.diff(table) > 0)
    assert table[-1] > 1.4 * ee[-1]
    assert abs(table[1] - ee[1]) < 0.15  # near focus both agree (within half a class there)


def test_map_and_deconvolution_share_the_table():
    table = map_frame(OIL)[1]
    assert table == response_table(OIL)
    assert rl_frame(OIL).optics.defocus_table_um == table
    # fields that do not change the PSF's shape do not make a new table
    assert response_table(Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108,
                                 psf_size=51, level_step_um=1.0)) == table


def test_training_objective_keeps_its_exact_classes():
    assert map_frame(CANONICAL)[1] == tuple(2.0 * lv for lv in range(11))


@pytest.mark.parametrize("optics", [Optics(), OIL], ids=["paper", "oil"])
def test_psf_stack_agrees_with_the_bank(optics):
    # the interpolated stack (for many defocus values) draws the bank's PSFs
    bank = psf_bank(**{k: getattr(optics, k) for k in ("wavelength_nm", "na", "refractive_index", "pixel_um",
                                                       "psf_size", "psf_model")})
    zs = [optics.defocus_um(lv) for lv in (0, 3, 10)]
    stack = psf_stack(optics, zs, size=optics.psf_size, oversample=optics.oversample)
    for got, want in zip(stack, bank[[0, 3, 10]]):
        assert np.abs(got - want).sum() < 0.01
        assert got.sum() == pytest.approx(1.0, abs=1e-5)


def test_smooth_table_falls_back_to_the_points_when_the_fit_turns_down():
    levels = np.arange(1, 11, dtype=float)
    smooth = smooth_table(levels, 2.0 * levels + np.where(levels % 2 == 0, 0.3, -0.3))
    assert np.abs(smooth[1:] - 2.0 * levels).max() < 0.35  # a wiggle is smoothed away
    bent = np.array([1, 2, 3, 4, 5, 9, 9.1, 9.2, 9.3, 9.4])  # a cubic through these falls somewhere
    out = smooth_table(levels, bent)
    assert out[0] == 0.0 and np.all(np.diff(out) >= 0)


def test_known_tables_are_what_the_procedure_measures():
    # the shipped constant for the default objective is a cache, not a second source of truth
    for optics, (_, table) in class_table.KNOWN.items():
        measured = class_table._table.__wrapped__(optics)
        np.testing.assert_allclose(measured, table, atol=1e-6)
        assert response_table(optics) == table


def test_reference_field_is_the_shipped_sample():
    from napari_refocus.io.samples import infocus_image

    np.testing.assert_array_equal(class_table.reference_field(), infocus_image().astype(np.float32))


def test_a_custom_delpnet_gets_its_own_classes_in_the_map_and_the_deconvolution(tmp_path):
    """``weights=`` (a user's own DelpNet): the classes in um are that network's reading, in the
    map and in lbdvd's Richardson-Lucy, not the shipped network's. Here the shipped weights with
    their output shifted by one class (every patch read one class higher): class L comes at
    about the shipped network's class L - 1."""
    import torch

    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.models.loader import load_fresh, save_weights

    model = load_fresh("delpnet")
    with torch.no_grad():
        w, b = model.classifier.weight.clone(), model.classifier.bias.clone()
        model.classifier.weight[1:11], model.classifier.bias[1:11] = w[:10], b[:10]
        model.classifier.bias[0] = b[0] - 100.0
    path = str(save_weights(model, tmp_path / "shifted.safetensors", meta=model.meta, write_hash=False))
    shipped, own = np.array(response_table(OIL)), np.array(response_table(OIL, weights=path))
    assert np.all(own[1:] < shipped[1:])
    assert np.all(np.abs(own[1:] - shipped[:-1]) < 0.5 * np.diff(shipped))
    assert map_frame(OIL, weights=path)[1] == tuple(own) and rl_frame(OIL, path).optics.defocus_table_um == tuple(own)
    image = nr.simulate(infocus_image()[:400, :400].astype(np.float32), level=1, noise=None,
                        optics=Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108,
                                      level_step_um=2.0, n_levels=2))
    res = nr.refocus(image.astype(np.uint16), method="lbdvd", weights=path, optics=OIL, device="cpu")
    assert tuple(res.defocus_map.defocus_um) == tuple(own)
