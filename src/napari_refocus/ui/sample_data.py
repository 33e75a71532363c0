"""napari sample data of napari-refocus (npe2 ``sample_data`` contributions).

Each returns a list of LayerData tuples ``(data, kwargs, "image")`` in micrometres (scale
0.65 um per pixel, BBBC006). No Qt and no napari imports here.
"""

from __future__ import annotations

import numpy as np

ATTRIBUTION = (
    "BBBC006v1, Broad Bioimage Benchmark Collection (Ljosa et al., Nature Methods 2012, "
    "doi:10.1038/nmeth.2083; Bray et al., J Biomol Screen 2012, doi:10.1177/1087057111420292). "
    "See napari_refocus/data/ATTRIBUTION.md."
)


def _common_meta(**extra) -> dict:
    from ..io.samples import PIXEL_UM

    return {"pixel_um": PIXEL_UM, "attribution": ATTRIBUTION, **extra}


def sample_pair():
    """Synthetic tilted-defocus image and its real in-focus ground truth (two layers)."""
    from ..io.samples import INFOCUS_FILE, PIXEL_UM, SAMPLE_LEVELS, SAMPLE_SEED, synthetic_pair

    blurred, gt, _field = synthetic_pair()
    scale = (PIXEL_UM, PIXEL_UM)
    how = (f"Born-Wolf defocus tilting from level {SAMPLE_LEVELS[0]:g} (left, in focus) to "
           f"{SAMPLE_LEVELS[1]:g} ({2 * SAMPLE_LEVELS[1]:g} um, right) + Poisson noise (seed {SAMPLE_SEED})")
    hi = float(np.percentile(gt, 99.8))
    return [
        (np.array(blurred), {
            "name": "defocused (synthetic)", "scale": scale,
            "colormap": "gray", "contrast_limits": (float(blurred.min()), float(np.percentile(blurred, 99.8))),
            "metadata": _common_meta(kind="synthetic defocus", simulation=how, made_from=INFOCUS_FILE,
                                     level_range=list(SAMPLE_LEVELS)),
        }, "image"),
        (np.array(gt), {
            "name": "ground truth", "scale": scale, "colormap": "gray",
            "contrast_limits": (float(gt.min()), hi), "visible": False,
            "metadata": _common_meta(kind="real in-focus image (BBBC006 w2 phalloidin, z_16)",
                                     file=INFOCUS_FILE),
        }, "image"),
    ]


def _real_sample(img, *, name: str, kind: str, file: str):
    """One real BBBC006 image as a LayerData list (a copy, at 0.65 um per pixel)."""
    img = np.array(img)
    return [(img, {
        "name": name, "scale": (0.65, 0.65), "colormap": "gray",
        "contrast_limits": (float(img.min()), float(np.percentile(img, 99.8))),
        "metadata": _common_meta(kind=kind, file=file),
    }, "image")]


def sample_real_defocused():
    """A real out-of-focus BBBC006 nuclei image (Hoechst, plane z_00, 32 um from focus)."""
    from ..io.samples import DEFOCUSED_FILE, real_defocused_image

    return _real_sample(real_defocused_image(), name="BBBC006 nuclei z_00 (out of focus)",
                        kind="real out-of-focus image (BBBC006 w1 Hoechst, z_00, ~32 um off)", file=DEFOCUSED_FILE)


def sample_real_infocus():
    """A real in-focus BBBC006 field (phalloidin, plane z_16): the map finds it near focus."""
    from ..io.samples import INFOCUS_FILE, infocus_image

    return _real_sample(infocus_image(), name="BBBC006 actin z_16 (in focus)",
                        kind="real in-focus image (BBBC006 w2 phalloidin, z_16)", file=INFOCUS_FILE)
