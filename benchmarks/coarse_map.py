"""Defocus beyond DelpNet's top class: lbdvd's second reading at half the sampling (issue 13).

DelpNet's top class is 20 um at the paper's objective (18.7 um with the default exact PSF), and
everything farther reads as that class; BBBC006's own stacks reach 32 um. Where the map has
patches at the top class, it now reads the image again at twice its pixel
(``napari_refocus.methods.deep``) and lbdvd deconvolves the patches read beyond the top class at
that defocus (``beyond_top=True``, the default). This measures it:

* held-out fields (test and validation split) blurred with the default (exact) PSF at 0..32 um,
  Poisson noise: the map's mean class, the coarse reading's mean class and the map's median
  defocus (um); PSNR gain of lbdvd with and without the second reading, and (from 20 um) of
  Richardson-Lucy with the exact PSF at the true defocus (an oracle), 15 iterations as lbdvd;
* the real BBBC006 z_00 planes (32 um from focus, no in-focus partner here): the same readings,
  the share of patches read beyond the top class and lbdvd's time with and without it.

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


def mean_class(levels) -> float:
    lv = np.asarray(levels)[np.asarray(levels) < 11]
    return float(lv.mean()) if lv.size else float("nan")


def readings(m) -> tuple[float, float, float, float]:
    """(map mean class, coarse mean class (nan without one), median defocus um, share of the
    non-background map patches read beyond the top class)."""
    um = m.defocus_map_um()
    deep = m.deep_um()
    fg = m.levels < 11
    share = float(np.isfinite(deep[fg]).mean()) if deep is not None and fg.any() else 0.0
    coarse = mean_class(m.coarse.levels) if m.coarse is not None else float("nan")
    return mean_class(m.levels), coarse, float(np.nanmedian(um)), share


def main(argv=None):
    import tifffile

    import napari_refocus as nr
    from napari_refocus.core.metrics import metrics
    from napari_refocus.core.optics import Optics
    from napari_refocus.training.sources import load_sources, split_sources

    a = threads_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), argv, threads=2)
    t0 = time.perf_counter()
    split = split_sources(load_sources(None))
    fields = [(s.name, s.image.astype(np.float32)) for s in split["test"] + split["val"]]
    deep = Optics(n_levels=17, psf_size=81)  # 2 um per level to 32 um, a window for the widest PSF
    rows = []
    for z in DEPTHS_UM:
        for k, (name, gt) in enumerate(fields):
            inp = nr.simulate(gt.astype(np.uint16), level=z // 2, optics=deep, seed=100 * k + z)
            dr = float(np.ptp(gt))

            def gain(out, _gt=gt, _inp=inp, _dr=dr):
                return (metrics(np.asarray(out, np.float32), _gt, data_range=_dr)["psnr"]
                        - metrics(_inp.astype(np.float32), _gt, data_range=_dr)["psnr"])

            on = nr.refocus(inp, method="lbdvd", device="cpu")
            off = nr.refocus(inp, method="lbdvd", device="cpu", beyond_top=False)
            oracle = (gain(nr.deconvolve(inp, level=z // 2, iterations=15, device="cpu", optics=deep))
                      if z >= 20 else float("nan"))
            n, c, um, share = readings(on.defocus_map)
            rows.append((z, name, n, c, um, share, gain(on.image), gain(off.image), oracle,
                         bool(np.array_equal(on.image, off.image))))
            print(rows[-1], flush=True)
    real = []
    for f in sorted(glob.glob(str(SHARED_DATA / "BBBC006_microscopeimagequality" / "**" / "00_*.tif"), recursive=True)):
        img = tifffile.imread(f)
        t1 = time.perf_counter()
        on = nr.refocus(img, method="lbdvd", device="cpu")
        t_on = time.perf_counter() - t1
        t1 = time.perf_counter()
        off = nr.refocus(img, method="lbdvd", device="cpu", beyond_top=False)
        t_off = time.perf_counter() - t1
        well = Path(f).name.split("_")[2:4]  # 00_mcf-z-stacks-03212011_<well>_<site>_w1...: the well and site
        real.append(("_".join(well), *readings(on.defocus_map), t_on, t_off,
                     float(np.mean(np.abs(on.image - off.image))) / float(np.ptp(img))))
        print(real[-1], flush=True)
    names = " / ".join(n for n, _ in fields)
    seconds = time.perf_counter() - t0
    head = (f"Command: `python benchmarks/coarse_map.py --threads {a.threads}` (git {git_rev()}; {machine()}; "
            f"{seconds:.0f} s). lbdvd with its defaults (`beyond_top` on) against `beyond_top=False` (the map "
            "and lbdvd before the second reading).")
    fields_line = (f"Held-out fields ({names}), default exact PSF at each defocus, Poisson noise. Map: mean class of "
                   "the non-background patches, mean class of the coarse reading (where there is one), the map's "
                   "median defocus (um) and the share of its patches read beyond the top class. PSNR gain (dB) of "
                   "lbdvd with / without the second reading, and of Richardson-Lucy with the exact PSF at the true "
                   "defocus (oracle, 15 iterations):")
    table = ["| defocus (um) | field | map: mean class | coarse reading: mean class | map: median um | "
             "read beyond the top | lbdvd | lbdvd, beyond_top off | RL at the true defocus |",
             "|---|---|---|---|---|---|---|---|---|"]
    for z, name, n, c, um, share, g_on, g_off, o, same in rows:
        table.append(f"| {z} | {name} | {n:.2f} | {'-' if c != c else f'{c:.2f}'} | {um:.1f} | {100 * share:.0f}% | "
                     f"{g_on:+.2f}{' (identical)' if same else ''} | {g_off:+.2f} | "
                     f"{'-' if o != o else f'{o:+.2f}'} |")
    real_lines = [f"Real BBBC006 z_00 planes (32 um from focus; {len(real)} images, no in-focus partner here, so no "
                  "PSNR): the same readings; the mean |difference| between lbdvd with and without the second "
                  "reading (share of the image's range); lbdvd's time (s) with / without:", "",
                  "| plane | map: mean class | coarse: mean class | map: median um | read beyond the top | "
                  "mean abs difference | time on / off (s) |", "|---|---|---|---|---|---|---|"]
    for name, n, c, um, share, t_on, t_off, diff in real:
        real_lines.append(f"| {name} | {n:.2f} | {c:.2f} | {um:.1f} | {100 * share:.0f}% | {100 * diff:.2f}% | "
                          f"{t_on:.2f} / {t_off:.2f} |")
    lines = ["## Defocus beyond the top class: lbdvd's second reading at half the sampling", "", head, "",
             fields_line, "", *table, "", *real_lines]
    print("\n".join(lines))
    publish("coarse-map", lines, write=not a.no_write)


if __name__ == "__main__":
    main()
