"""Where the shipped files are: the npe2 manifest, weights/ and sample data.

In a wheel, ``napari.yaml`` and ``weights/`` are packaged inside ``napari_refocus/`` (see
pyproject's force-include); in an editable install or a source checkout they are found at
the repository root, so there is only one copy of each.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent  # the napari_refocus package


def _find(name: str) -> Path:
    for candidate in (_PKG / name, _PKG.parent.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"napari-refocus cannot find its {name!r} (looked in {_PKG} and the repo root)")


def manifest_path() -> Path:
    """The npe2 manifest ``napari.yaml``."""
    return _find("napari.yaml")


def weights_dir() -> Path:
    """The folder holding ``<method>.safetensors`` and model cards."""
    return _find("weights")


#: the shipped in-focus sample (a real BBBC006 field at DelpNet's training sampling): the sample
#: menu's "nothing to do" image and the reference field of DelpNet's class tables
INFOCUS_SAMPLE = "bbbc006_a14_s2_w2_z16_infocus.tif"


def data_dir() -> Path:
    """Small sample images shipped in the package (with their attribution)."""
    return _PKG / "data"


def package_version() -> str:
    """The installed napari-refocus version ("0+unknown" in a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-refocus")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
