"""Defocus beyond DelpNet's top class: the map at half the sampling (an experiment, issue 13).

DelpNet's top class is 20 um at the paper's objective, and everything farther reads as that
class; BBBC006's own stacks reach 32 um. Blur scales with the pixel: an image binned 2x2 shows
a given defocus as a blur half as wide in pixels, so the same network, run on the binned
image, should read 20-32 um as lower classes it can still tell apart. This measures whether it
does, without changing the package:

* held-out fields (test and validation split) blurred with the default (exact) PSF at 0..32 um,
  Poisson noise: mean class of the non-background patches, native and 2x2-binned;
* the real BBBC006 z_00 planes (32 um from focus): the same two readings;
* PSNR gain at 24..32 um of lbdvd as it is against Richardson-Lucy with the exact PSF at the
  true defocus (an oracle: what reading the defocus right would allow) and at 20 um (what the
  top class means), both 15 iterations as lbdvd.

    python benchmarks/coarse_map.py [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import SHARED_DATA, git_rev, machine, publish, threads_args  # noqa: E402

DEPTHS_UM = (0, 4, 8, 12, 16, 20, 24, 28, 32)


def mean_class(m) -> float:
    lv = m.levels[m.levels < 11]
    return float(lv.mean()) if lv.size else float("nan")


def main(argv=None):
    import tifffile

    import napari_refocus as nr
    from napari_refocus.core.metrics import metrics
    from napari_refocus.core.optics import Optics
    from napari_refocus.training.evaluation import bin_output
    from napari_refocus.training.sources import load_sources, split_sources

    a = threads_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), argv, threads=2)
    t0 = time.perf_counter()
    split = split_sources(load_sources(None))
    fields = [(s.name, s.image.astype(np.float32)) for s in split["test"] + split["val"]]
    deep = Optics(n_levels=17, psf_size=81)  # 2 um per level to 32 um, a window for the widest PSF
    rows, gains = [], []
    for z in DEPTHS_UM:
        native, coarse = [], []
        for k, (name, gt) in enumerate(fields):
            inp = nr.simulate(gt.astype(np.uint16), level=z // 2, optics=deep, seed=100 * k + z)
            native.append(mean_class(nr.defocus_map(inp, device="cpu")))
            coarse.append(mean_class(nr.defocus_map(bin_output(inp.astype(np.float32), 2), device="cpu")))
            if z >= 24:
                dr = float(np.ptp(gt))

                def gain(out, _gt=gt, _inp=inp, _dr=dr):
                    return (metrics(np.asarray(out, np.float32), _gt, data_range=_dr)["psnr"]
                            - metrics(_inp.astype(np.float32), _gt, data_range=_dr)["psnr"])

                lb = nr.refocus(inp, method="lbdvd", device="cpu").image
                oracle = nr.deconvolve(inp, level=z // 2, iterations=15, device="cpu", optics=deep)
                top = nr.deconvolve(inp, level=10, iterations=15, device="cpu", optics=deep)
                gains.append((z, name, gain(lb), gain(oracle), gain(top)))
        rows.append(f"| {z} | {' / '.join(f'{v:.2f}' for v in native)} | {' / '.join(f'{v:.2f}' for v in coarse)} |")
        print(rows[-1], flush=True)
    real = []
    for f in sorted(glob.glob(str(SHARED_DATA / "BBBC006_microscopeimagequality" / "**" / "00_*.tif"), recursive=True)):
        img = tifffile.imread(f).astype(np.float32)
        real.append((mean_class(nr.defocus_map(img, device="cpu")),
                     mean_class(nr.defocus_map(bin_output(img, 2), device="cpu"))))
    names = " / ".join(n for n, _ in fields)
    seconds = time.perf_counter() - t0
    head = (f"Command: `python benchmarks/coarse_map.py --threads {a.threads}` (git {git_rev()}; {machine()}; "
            f"{seconds:.0f} s). Nothing in the package changes: this measures a route for issue 13's classes to 32 um.")
    fields_line = (f"Held-out fields ({names}), default exact PSF at each defocus, Poisson noise; mean DelpNet class "
                   "of the non-background patches, each field, of the image as it is and binned 2x2 (the float32 "
                   "map, the paper's objective):")
    real_line = (f"Real BBBC006 z_00 planes (32 um from focus, {len(real)} images), mean class native / binned: "
                 + ", ".join(f"{n:.2f} / {c:.2f}" for n, c in real)
                 + f" (means {np.mean([n for n, _ in real]):.2f} / {np.mean([c for _, c in real]):.2f}).")
    gains_line = ("PSNR gain (dB) at 24..32 um: lbdvd as it is / Richardson-Lucy with the exact PSF at the true "
                  "defocus (oracle) / at 20 um (the top class), 15 iterations:")
    lines = ["## Defocus beyond the top class: the map at half the sampling (experiment)", "", head, "", fields_line,
             "", "| defocus (um) | native: mean class | binned 2x2: mean class |", "|---|---|---|", *rows, "",
             real_line, "", gains_line, "",
             "| defocus (um) | field | lbdvd | RL at the true defocus | RL at 20 um |", "|---|---|---|---|---|",
             *[f"| {z} | {n} | {g:+.2f} | {o:+.2f} | {t:+.2f} |" for z, n, g, o, t in gains]]
    print("\n".join(lines))
    publish("coarse-map", lines, write=not a.no_write)


if __name__ == "__main__":
    main()
