"""Other objectives: does the defocus map depend on the size of the objects in its pixels?

"Other objectives and exposures" (eval_objectives.py) takes BBBC006 fields (U2OS cells at
0.65 um pixels) as if sampled at each objective's pixel size, so at 60x/1.4 oil (0.108 um) its
nuclei are 6x smaller than real ones, and the map's lambda/NA resampling shrinks them 2.5x
below the size DelpNet was trained on. This benchmark runs the same protocol four ways:

* ``shipped``: that protocol, as published (the baseline of this run);
* ``native``: the same fields with the map made at the image's own pixels
  (``map_pixel_um`` = the pixel size), each class's um measured there, so the objects keep the
  size DelpNet was trained on;
* ``real size``: objects sampled at their own physical scale, through the default route: the
  DFNN mitochondria in focus (stack plane 51 and the single shot "ON", 0.104 um pixels) and
  BBBC006 crops upscaled 6x (nuclei at their physical size at 0.108 um, but no detail finer than
  the original 0.65 um pixels);
* ``physical``: whole BBBC006 fields upscaled (x3 at 0.217 um for 40x/0.95, x6 at 0.108 um for
  60x/1.4 oil): cells at their physical size, each blurred once per defocus and read both by
  the default route (lambda/NA) and with ``map_pixel_um=0.65`` (DelpNet's training pixel).

    python benchmarks/object_scale.py [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from _report import SHARED_DATA, git_rev, machine, publish, threads_args
from eval_objectives import OBJECTIVES, blur, evaluate_blurred, fields, scan, summary_line

HIGH_NA = ("40x/0.95 air, 0.16 um", "60x/1.4 oil, 0.108 um")
DFNN = SHARED_DATA / "DFNN_defocus" / "data" / "test" / "mitochondria"
UPSCALE = 6
#: the physical condition: objective -> (upscale of the whole fields, how many fields)
PHYSICAL = {"40x/0.95 air, 0.16 um": (3, 2), "60x/1.4 oil, 0.108 um": (6, 1)}
#: DelpNet's training pixel
TRAINING_PIXEL_UM = 0.65


def real_size_sets(gts):
    """``{name: (pixel_um, [in-focus fields])}`` of objects at their own physical sampling (``gts``: the
    BBBC006 fields, whose central crops are upscaled)."""
    import tifffile
    from skimage.transform import resize

    dfnn = [tifffile.imread(next((DFNN / "stack").glob("*Abs0051.tif"))),
            tifffile.imread(DFNN / "single" / "cell2G2Dz0p3umON.tif")]
    crops = []
    for g in gts:
        h, w = g.shape
        ch, cw = h // UPSCALE, w // UPSCALE
        crop = g[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        crops.append(resize(crop, (ch * UPSCALE, cw * UPSCALE), order=3, preserve_range=True))
    return {"DFNN mitochondria in focus (real 0.104 um)": (0.104, [f.astype(np.float32) for f in dfnn]),
            f"BBBC006 crops upscaled x{UPSCALE} (nuclei at physical size)": (0.65 / UPSCALE,
                                                                            [c.astype(np.float32) for c in crops])}


def upscaled(gt, factor):
    from skimage.transform import resize

    return resize(gt, (gt.shape[0] * factor, gt.shape[1] * factor), order=3, preserve_range=True).astype(np.float32)


def physical_rows(gts, rng):
    """Cells at their physical size read by both routes: ``[(name, table, rows)]`` per route."""
    from napari_refocus.core.optics import Optics
    from napari_refocus.methods.lbdvd import rl_frame

    out = []
    for name, (factor, n_fields) in PHYSICAL.items():
        base = Optics(**{**OBJECTIVES[name], "pixel_um": TRAINING_PIXEL_UM / factor}, psf_model="exact")
        routes = {"default (lambda/NA)": base,
                  f"map_pixel_um={TRAINING_PIXEL_UM}": dataclasses.replace(base, map_pixel_um=TRAINING_PIXEL_UM)}
        tables = {k: rl_frame(o).optics.defocus_table_um for k, o in routes.items()}
        physical = tables[f"map_pixel_um={TRAINING_PIXEL_UM}"]
        big = [upscaled(gt, factor) for gt in gts[:n_fields]]
        rows = {k: [] for k in routes}
        t0 = time.perf_counter()
        for c in (0, 2, 4, 6, 8, 10):  # the defocus of the physical route's classes (the wider range)
            z = physical[c]
            got = {k: [] for k in routes}
            for gt in big:
                # 3x3 samples a pixel: these PSFs are 200-450 px wide, where 5x5 took minutes each
                b = blur(gt, dataclasses.replace(routes[f"map_pixel_um={TRAINING_PIXEL_UM}"], oversample=3), z, rng)
                for k, o in routes.items():
                    got[k].append(evaluate_blurred(o, b, gt, z, tables[k]))
            for k in routes:
                rows[k].append((f"{c} ({z:.2f})", float(np.nanmean([r[0] for r in got[k]])),
                                float(np.mean([r[1] for r in got[k]]))))
        seconds = time.perf_counter() - t0
        label = f"{name.split(',')[0]} at {base.pixel_um:.3f} um, BBBC006 field{'s' if n_fields > 1 else ''} x{factor}"
        # the routes read each image in turn: each row's time is half the pair's
        out += [(f"{label}, {k}", tables[k], rows[k], seconds / 2) for k in routes]
    return out


def main(argv=None):
    from napari_refocus.core.optics import Optics

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args = threads_args(ap, argv, threads=2)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    results = []  # (condition, name, table, rows, seconds)
    gts = [gt for _, gt in fields()]
    for condition in ("shipped", "native"):
        for name, kw in OBJECTIVES.items():
            if name.startswith("paper"):
                continue
            optics = Optics(**kw, psf_model="exact")
            if condition == "native":
                optics = dataclasses.replace(optics, map_pixel_um=optics.pixel_um)
            t1 = time.perf_counter()
            table, rows = scan(optics, gts, rng)
            results.append((condition, name, table, rows, time.perf_counter() - t1))
            print(summary_line(f"{condition}: {name}", *results[-1][2:]), flush=True)
    for set_name, (pixel_um, set_gts) in real_size_sets(gts).items():
        for name in HIGH_NA:
            optics = dataclasses.replace(Optics(**OBJECTIVES[name], psf_model="exact"), pixel_um=pixel_um)
            t1 = time.perf_counter()
            table, rows = scan(optics, set_gts, rng)
            results.append(("real size", f"{name.split(',')[0]} at {pixel_um:.3f} um, {set_name}", table, rows,
                            time.perf_counter() - t1))
            print(summary_line(f"real size: {results[-1][1]}", *results[-1][2:]), flush=True)
    for name, table, rows, seconds in physical_rows(gts, rng):
        results.append(("physical", name, table, rows, seconds))
        print(summary_line(f"physical: {name}", table, rows, seconds), flush=True)
    summary = [summary_line(f"**{c}**: {n}", t, r, s) for c, n, t, r, s in results]
    lines = ["| condition | objective, fields | class (defocus um) | map within one class | LB-DVD PSNR gain (dB) |",
             "|---|---|---|---|---|"]
    lines += [f"| {c} | {n} | {label} | {w:.1%} | {g:+.2f} |" for c, n, _, r, _ in results for label, w, g in r]
    publish("object-scale", [
        "## Other objectives: the objects' size in the map's pixels",
        "",
        f"`python benchmarks/object_scale.py --threads {args.threads}` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. Protocol of \"Other objectives and exposures\" (exact PSF at each "
        "defocus, Poisson noise at the field's counts, LB-DVD with the optics given and `never_worse` on). "
        "Conditions: **shipped** = that section's fields (BBBC006 p19_s2, o24_s2 taken as sampled at the "
        "objective's pixel size) and the default lambda/NA resampling; **native** = the same fields with "
        "`map_pixel_um` = their pixel size (no resampling; classes measured there); **real size** = objects at "
        "their own physical sampling through the default route: DFNN mitochondria in focus (stack plane 51, "
        f"single shot ON) at 0.104 um, and the two BBBC006 fields' central crops upscaled x{UPSCALE} (cubic) at "
        f"{0.65 / UPSCALE:.3f} um; **physical** = whole BBBC006 fields upscaled (x3 for 40x/0.95, x6 and p19_s2 "
        "alone for oil), blurred at the defocus of the `map_pixel_um=0.65` route's classes 0-10, each image read "
        "by both routes (the truth is each route's nearest class, so a defocus beyond the default route's top "
        "class counts as its top class; each route's time is half the pair's).",
        "",
        *summary,
        "",
        *lines,
    ], write=not args.no_write)


if __name__ == "__main__":
    main()
