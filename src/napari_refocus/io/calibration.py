"""Calibration files: read a z-stack, fit its effective optics (:mod:`napari_refocus.core.calibration`),
write the result as JSON that every ``--optics FILE.json`` accepts.

The JSON holds the fit's values at the top level (NA, defocus scale, focal plane index and um,
pixel size, wavelength, refractive index, PSF model, the normalised residual, ``quality`` and
why, the stack's SHA-256 and the command) and, under ``"optics"``, the
:class:`~napari_refocus.core.optics.Optics` fields the fit sets: what
:func:`napari_refocus.io.optics.load_optics_file` reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.calibration import RESIDUAL_LIMIT
from ..models.loader import file_sha256  # the one SHA-256 of a file (no torch at import)


def as_zstack(array) -> np.ndarray:
    """``(z, y, x)`` from an array whose other axes have length 1 (a ``TZCYX`` file of one
    channel, a napari layer of shape ``(1, z, y, x)``); a ValueError otherwise."""
    arr = np.asarray(array)
    squeezed = arr.reshape([n for n in arr.shape if n != 1] or [1])
    if squeezed.ndim != 3:
        raise ValueError(f"calibration needs one z-stack (z, y, x); got shape {arr.shape}")
    return squeezed


def read_stack(path) -> tuple[np.ndarray, dict]:
    """The ``(z, y, x)`` stack of a TIFF (single-channel) and what its metadata says of the optics."""
    from .read import read_image

    arr, info = read_image(path)
    return as_zstack(arr), dict(info.get("optics") or {})


def iter_calibrate(stack, *, bead: bool, z_step_um: float, pixel_um: float, wavelength_nm: float,
                   refractive_index: float, psf_model: str = "exact", max_iter: int = 300):
    """Generator: the bead or thin-sample fit of ``stack``; returns a
    :class:`~napari_refocus.core.calibration.Calibration`."""
    from ..core.optics import Optics

    for name, value in (("z_step_um", z_step_um), ("pixel_um", pixel_um)):
        if value is None or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    Optics(na=min(0.5, refractive_index * 0.9), wavelength_nm=wavelength_nm, refractive_index=refractive_index,
           pixel_um=pixel_um, psf_model=psf_model)  # the given values' own checks
    kw = dict(z_step_um=float(z_step_um), pixel_um=float(pixel_um), wavelength_nm=float(wavelength_nm),
              refractive_index=float(refractive_index), psf_model=psf_model, max_iter=max_iter)
    if bead:
        from ..core.calibration_bead import iter_fit_bead

        return (yield from iter_fit_bead(as_zstack(stack), **kw))
    from ..core.calibration_thin import iter_fit_thin

    return (yield from iter_fit_thin(as_zstack(stack), **kw))


def calibration_record(cal, *, stack_sha256: str | None = None, source=None, command=None) -> dict:
    """The JSON form of a fit (see the module docstring)."""
    d = cal.as_dict()
    rec = {k: d[k] for k in ("mode", "na", "defocus_scale", "focal_plane_index", "focal_plane_um", "z_step_um",
                             "pixel_um", "wavelength_nm", "refractive_index", "psf_model", "residual", "quality",
                             "reasons", "at_bound", "free_scale_fit")}
    rec["residual_limit"] = RESIDUAL_LIMIT[cal.mode]
    rec["residual_meaning"] = ("bead: RMS misfit of the radial profiles over their RMS (pixel-weighted); "
                               "thin: RMS misfit of the planes' spectra beyond the noise over their RMS")
    rec.update({"stack": None if source is None else str(source), "stack_sha256": stack_sha256,
                "command": command, "seconds": d["seconds"], "evaluations": d["evaluations"],
                "optics": cal.optics_values(), "curves": d["curves"], "details": d["extra"]})
    return rec


def write_calibration(record: dict, path, *, inputs=()) -> Path:
    """Write ``record`` as JSON to ``path`` atomically; never over one of ``inputs``."""
    path = Path(path)
    for src in inputs:
        if src is not None and Path(src).exists() and path.exists() and os.path.samefile(src, path):
            raise ValueError(f"refusing to write the calibration over its input {src}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_calibrate_file(path, output, *, bead: bool, z_step_um: float, pixel_um=None, wavelength_nm=None,
                        refractive_index=None, psf_model: str = "exact", command=None, max_iter: int = 300):
    """Generator: read ``path``, fit, write ``output`` (JSON); returns the record. The pixel
    size, wavelength and index not given come from the file's metadata, else the defaults of
    :class:`~napari_refocus.core.optics.Optics` (a pixel size is required from one or the other)."""
    from ..core.optics import Optics

    stack, meta = read_stack(path)
    defaults = Optics()
    pixel_um = pixel_um or meta.get("pixel_um")
    if pixel_um is None:
        raise ValueError(f"{path}: no pixel size in the file's metadata; give --pixel-um")
    wavelength_nm = wavelength_nm or meta.get("wavelength_nm") or defaults.wavelength_nm
    refractive_index = refractive_index or meta.get("refractive_index") or defaults.refractive_index
    cal = yield from iter_calibrate(stack, bead=bead, z_step_um=z_step_um, pixel_um=pixel_um,
                                    wavelength_nm=wavelength_nm, refractive_index=refractive_index,
                                    psf_model=psf_model, max_iter=max_iter)
    rec = calibration_record(cal, stack_sha256=file_sha256(path), source=path, command=command)
    rec["output"] = str(write_calibration(rec, output, inputs=(path,)))
    return rec
