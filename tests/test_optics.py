import numpy as np
import pytest
from scipy import integrate
from scipy.special import j0

import napari_refocus as nr
from napari_refocus.core.optics import Optics, radial_profile, rms_radius_px


def _quad_intensity(r_um, z_um, lam_nm=451.0, na=0.5, n=1.0):
    """Independent Born-Wolf integral with adaptive quadrature (real and imaginary parts)."""
    k = 2 * np.pi / (lam_nm * 1e-3)

    def part(fn):
        return integrate.quad(
            lambda rho: fn(-0.5 * k * rho**2 * z_um * na**2 / n**2) * j0(k * na / n * r_um * rho) * rho,
            0, 1, limit=400, epsabs=1e-13,
        )[0]

    return part(np.cos) ** 2 + part(np.sin) ** 2


def test_bank_shape_dtype_and_normalisation():
    bank = nr.psf_bank()
    assert bank.shape == (11, 37, 37)
    assert bank.dtype == np.float32
    np.testing.assert_allclose(bank.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert (bank >= 0).all()
    assert not bank.flags.writeable


def test_bank_is_cached_per_optics():
    assert nr.psf_bank() is nr.psf_bank()
    assert nr.psf_bank(na=0.4) is not nr.psf_bank()
    assert not np.allclose(nr.psf_bank(na=0.4)[5], nr.psf_bank()[5])


@pytest.mark.parametrize("z_um", [0.0, 4.0, 10.0, 20.0])
def test_radial_profile_matches_adaptive_quadrature(z_um):
    radii = np.array([0.0, 0.3, 1.0, 2.5, 5.0, 8.0, 11.0])
    ours = radial_profile(radii, z_um, Optics(psf_model="paraxial"))  # _quad_intensity is eq. 2
    ref = np.array([_quad_intensity(r, z_um) for r in radii])
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * ref.max())


def test_bank_pixels_match_independent_integration():
    """Point-sampled bank (oversample=1) vs the quad integral at pixel centres, normalised."""
    size, px = 21, 0.65
    bank = nr.psf_bank(psf_size=size, oversample=1, n_levels=6, psf_model="paraxial")  # eq. 2, as _quad_intensity
    c = np.arange(size) - size // 2
    r = np.hypot(c[:, None], c[None, :]) * px
    for level in (0, 3, 5):
        radii, inverse = np.unique(np.round(r, 9), return_inverse=True)
        vals = np.array([_quad_intensity(rr, 2.0 * level) for rr in radii])[inverse].reshape(r.shape)
        np.testing.assert_allclose(bank[level], vals / vals.sum(), rtol=2e-3, atol=2e-6)


def test_radial_symmetry():
    for psf in nr.psf_bank():
        np.testing.assert_allclose(psf, psf.T, atol=1e-7)
        np.testing.assert_allclose(psf, psf[::-1, :], atol=1e-7)
        np.testing.assert_allclose(psf, np.rot90(psf), atol=1e-7)


def test_width_grows_with_level():
    widths = [rms_radius_px(p) for p in nr.psf_bank()]
    assert all(b > a for a, b in zip(widths, widths[1:])), widths
    # level 10 = 20 um defocus: geometric blur radius z*NA = 10 um = 15.4 px
    assert 8 < widths[-1] < 15


def test_every_optical_value_is_a_parameter():
    base = nr.psf_bank()[4]
    for kw in ({"wavelength_nm": 520.0}, {"na": 0.4}, {"refractive_index": 1.33},
               {"pixel_um": 0.5}, {"level_step_um": 1.0}):
        assert not np.allclose(nr.psf_bank(**kw)[4], base), kw


@pytest.mark.parametrize("kw", [{"na": 1.2}, {"pixel_um": 0}, {"psf_size": 36}, {"wavelength_nm": -1}])
def test_bad_optics(kw):
    with pytest.raises(ValueError):
        nr.psf_bank(**kw)
