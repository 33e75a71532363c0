"""Which DelpNet reads a map: the shipped ``delpnet`` at its own sampling, ``delpnet-objectives``
at any other (methods.canonical.map_weights), and every class table with the map's own network."""

import numpy as np

import napari_refocus as nr
from napari_refocus.core.optics import Optics
from napari_refocus.methods.canonical import OBJECTIVES_WEIGHTS, map_weights
from napari_refocus.methods.class_table import response_table
from napari_refocus.methods.defocus import map_frame
from napari_refocus.methods.frames import rl_frame
from napari_refocus.models.loader import file_sha256, resolve_path

OIL = Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108)


def test_the_network_follows_the_sampling():
    assert map_weights(None, None) is None and map_weights(None, Optics()) is None  # the paper's sampling
    assert map_weights(None, Optics(psf_model="paraxial", pixel_um=0.652)) is None  # within 1 %
    assert map_weights(None, OIL) == OBJECTIVES_WEIGHTS
    assert map_weights(None, Optics(pixel_um=0.325)) == OBJECTIVES_WEIGHTS
    assert map_weights(None, Optics(map_pixel_um="auto")) is None  # each reading asks again
    assert map_weights("mine.safetensors", OIL) == "mine.safetensors"  # a user's file always wins


def test_an_oil_map_and_its_deconvolution_use_the_objectives_network_and_its_classes():
    from napari_refocus.io.samples import infocus_image

    own = response_table(OIL, weights=OBJECTIVES_WEIGHTS)
    assert response_table(OIL) == own == map_frame(OIL)[1] == rl_frame(OIL).optics.defocus_table_um
    # the paper's objective keeps the shipped network's classes
    assert response_table(Optics()) == response_table(Optics(), weights="delpnet")
    image = nr.simulate(infocus_image()[:400, :400].astype(np.float32), level=1, noise=None,
                        optics=Optics(na=1.4, refractive_index=1.515, wavelength_nm=520.0, pixel_um=0.108,
                                      level_step_um=2.0, n_levels=2))
    dm = nr.defocus_map(image.astype(np.uint16), optics=OIL, device="cpu")
    assert dm.weights_sha256 == file_sha256(resolve_path(OBJECTIVES_WEIGHTS))
    assert tuple(dm.defocus_um) == tuple(own)
    paper = nr.defocus_map(infocus_image(), device="cpu")
    assert paper.weights_sha256 == file_sha256(resolve_path("delpnet"))
