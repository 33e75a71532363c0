"""Choosing the map pixel per image (``map_pixel_um="auto"``) against the default lambda/NA reading.

Two kinds of images, each blurred once per defocus (exact PSF, Poisson noise at the field's counts):

* ``protocol``: the held-out BBBC006 fields of "Other objectives and exposures" taken as sampled
  at each objective's pixel (objects as small in lambda/NA as DelpNet's training objects), at the
  defocus cases of that section (the default route's classes 0-10 and three between);
* ``physical``: the same fields' central crops upscaled (x3 at 0.217 um for 40x/0.95, x6 at 0.108
  um for 60x/1.4 oil): cells at their physical size, at the defocus cases of the 0.65 um reading's
  classes (the wider range).

Each image is read by the default route and by ``auto`` (which reads it both ways and keeps the
surer reading), and LB-DVD runs on each map. Reported per case: the map within one class of the
truth (each reading's own classes: the 0.65 um reading's classes are wider, so this is looser for
it), the median error of the patches' defocus in um (the same yardstick for both), the readings
``auto`` kept, and LB-DVD's PSNR gain.

    python benchmarks/map_choice.py [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from _report import git_rev, machine, publish, threads_args
from eval_objectives import OBJECTIVES, blur, defocus_cases, fields, psnr
from object_scale import upscaled

#: the physical condition: objective -> upscale of the fields' central crops
PHYSICAL = {"40x/0.95 air, 0.16 um": 3, "60x/1.4 oil, 0.108 um": 6}


def read(image, gt, blurred, optics, z_um):
    """``(within one class, median |error| um, gain dB, map)`` of LB-DVD with ``optics`` on ``image``."""
    import napari_refocus as nr

    dm = nr.defocus_map(image, optics=optics, device="cpu")
    res = nr.refocus(image, method="lbdvd", optics=optics, defocus_map=dm, device="cpu")
    table = np.asarray(dm.defocus_um)
    fg = dm.levels != 11
    truth = int(np.argmin(np.abs(table - z_um)))
    within = float((np.abs(dm.levels[fg] - truth) <= 1).mean()) if fg.any() else float("nan")
    error = float(np.median(np.abs(table[np.minimum(dm.levels[fg], len(table) - 1)] - z_um))) if fg.any() \
        else float("nan")
    return within, error, psnr(res.image, gt) - psnr(blurred, gt), dm


def run_case(base, images, table, rng):
    """Rows ``(label, {route: (within, error, gain)}, picks)`` over the defocus cases of ``table``."""
    routes = {"default": base, "auto": dataclasses.replace(base, map_pixel_um="auto")}
    rows = []
    for label, z in defocus_cases(list(table)):
        got, picks = {k: [] for k in routes}, []
        for gt in images:
            b = blur(gt, dataclasses.replace(base, oversample=3), z, rng)
            image = np.clip(b, 0, 65535).astype(np.uint16)
            for k, o in routes.items():
                *vals, dm = read(image, gt, b, o, z)
                got[k].append(vals)
                if k == "auto":
                    picks.append("0.65" if dm.optics["map_pixel_um"] else "l/NA")
        rows.append((label, {k: np.nanmean(np.array(v, float), 0) for k, v in got.items()}, picks))
        print(label, {k: np.round(v, 3).tolist() for k, v in rows[-1][1].items()}, picks, flush=True)
    return rows


def main(argv=None):
    from napari_refocus.core.optics import Optics
    from napari_refocus.methods.frames import rl_frame

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args = threads_args(ap, argv, threads=2)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    gts = [gt for _, gt in fields()]
    cases = []  # (condition, objective, rows, seconds)
    for name, kw in OBJECTIVES.items():
        base = Optics(**kw, psf_model="exact")
        t1 = time.perf_counter()
        rows = run_case(base, gts, rl_frame(base).optics.defocus_table_um, rng)
        cases.append(("protocol", name, rows, time.perf_counter() - t1))
    for name, factor in PHYSICAL.items():
        base = Optics(**{**OBJECTIVES[name], "pixel_um": 0.65 / factor}, psf_model="exact")
        h, w = gts[0].shape
        ch, cw = 1100 // factor, 1400 // factor
        crops = [upscaled(g[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw], factor) for g in gts]
        table = rl_frame(dataclasses.replace(base, map_pixel_um=0.65)).optics.defocus_table_um
        t1 = time.perf_counter()
        cases.append((f"physical x{factor}", name, run_case(base, crops, table, rng), time.perf_counter() - t1))
    summary = ["| condition | objective | route | map within one class | median error (um) | LB-DVD gain mean (dB) "
               "| gain min (dB) | kept 0.65 um |", "|---|---|---|---|---|---|---|---|"]
    lines = ["| condition | objective | defocus case (um) | within one: default / auto | median error um: default / "
             "auto | LB-DVD gain dB: default / auto | auto kept |", "|---|---|---|---|---|---|---|"]
    for cond, name, rows, seconds in cases:
        for k in ("default", "auto"):
            v = np.array([r[1][k] for r in rows])
            kept = sum(p == "0.65" for r in rows for p in r[2]) if k == "auto" else ""
            total = sum(len(r[2]) for r in rows)
            summary.append(f"| {cond} | {name} | {k} | {np.nanmean(v[:, 0]):.1%} | {np.nanmean(v[:, 1]):.2f} | "
                           f"{v[:, 2].mean():+.2f} | {v[:, 2].min():+.2f} | "
                           f"{f'{kept} of {total}' if k == 'auto' else ''} |")
        for label, r, picks in rows:
            d, a = r["default"], r["auto"]
            lines.append(f"| {cond} | {name} | {label} | {d[0]:.1%} / {a[0]:.1%} | {d[1]:.2f} / {a[1]:.2f} | "
                         f"{d[2]:+.2f} / {a[2]:+.2f} | {', '.join(picks)} |")
    publish("map-choice", [
        "## Choosing the map pixel per image (`map_pixel_um=\"auto\"`)",
        "",
        f"`python benchmarks/map_choice.py --threads {args.threads}` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. Held-out BBBC006 fields p19_s2 and o24_s2, exact PSF, Poisson noise, "
        "LB-DVD with the optics given (`never_worse` on). **protocol**: the fields as sampled at the objective's "
        "pixel, at the defocus cases of \"Other objectives and exposures\"; **physical**: their central crops "
        "upscaled (cells at their physical size), at the cases of the 0.65 um reading's classes. Each image is "
        "read by the default route (lambda/NA) and by `auto` (both readings on the central crop, the one with "
        "the higher mean certainty of the non-background patches kept). Within one class counts each "
        "reading's own classes (the 0.65 um reading's are wider on these objectives, so looser); the median "
        "error of the patches' defocus in um is the same yardstick for both.",
        "",
        *summary,
        "",
        *lines,
    ], write=not args.no_write)


if __name__ == "__main__":
    main()
