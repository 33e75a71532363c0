"""Other objectives: does the defocus map depend on the size of the objects in its pixels?

"Other objectives and exposures" (eval_objectives.py) takes BBBC006 fields (U2OS cells at
0.65 um pixels) as if sampled at each objective's pixel size, so at 60x/1.4 oil (0.108 um) its
nuclei are 6x smaller than real ones, and the map's lambda/NA resampling shrinks them 2.5x
below the size DelpNet was trained on. This benchmark runs the same protocol three ways:

* ``shipped``: that protocol, as published (the baseline of this run);
* ``native``: the same fields with the map made at the image's own pixels (no resampling) and
  each class's um measured there, so the objects keep the size DelpNet was trained on. Not a
  product option: the resampling is switched off in a child process only, by replacing
  ``core.optics.sampling_scale`` with 1;
* ``real size``: objects sampled at their own physical scale, through the shipped route:
  the DFNN mitochondria in focus (stack plane 51 and the single shot "ON", 0.104 um pixels)
  and BBBC006 crops upscaled 6x (nuclei at their physical size at 0.108 um, but no detail
  finer than the original 0.65 um pixels).

    python benchmarks/object_scale.py [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from _report import SHARED_DATA, git_rev, machine, publish, threads_args
from eval_objectives import OBJECTIVES, fields, scan, summary_line

HIGH_NA = ("40x/0.95 air, 0.16 um", "60x/1.4 oil, 0.108 um")
DFNN = SHARED_DATA / "DFNN_defocus" / "data" / "test" / "mitochondria"
UPSCALE = 6


def real_size_sets():
    """``{name: (pixel_um, [in-focus fields])}`` of objects at their own physical sampling."""
    import tifffile
    from skimage.transform import resize

    dfnn = [tifffile.imread(next((DFNN / "stack").glob("*Abs0051.tif"))),
            tifffile.imread(DFNN / "single" / "cell2G2Dz0p3umON.tif")]
    crops = []
    for _, g in fields():
        h, w = g.shape
        ch, cw = h // UPSCALE, w // UPSCALE
        crop = g[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        crops.append(resize(crop, (ch * UPSCALE, cw * UPSCALE), order=3, preserve_range=True))
    return {"DFNN mitochondria in focus (real 0.104 um)": (0.104, [f.astype(np.float32) for f in dfnn]),
            f"BBBC006 crops upscaled x{UPSCALE} (nuclei at physical size)": (0.65 / UPSCALE,
                                                                            [c.astype(np.float32) for c in crops])}


def run_condition(condition: str) -> list[dict]:
    """The rows of one condition, in this process."""
    import dataclasses

    from napari_refocus.core.optics import Optics

    if condition == "native":
        import napari_refocus.core.optics as optics_module
        import napari_refocus.methods.class_table as class_table

        def one(reference, optics, tolerance=0.01):
            return 1.0

        optics_module.sampling_scale = class_table.sampling_scale = one
        class_table.KNOWN.clear()  # the shipped tables are those of the resampled map
        class_table.KNOWN_COARSE.clear()
    rng = np.random.default_rng(0)
    out = []
    if condition in ("shipped", "native"):
        gts = [gt for _, gt in fields()]
        cases = [(name, Optics(**kw, psf_model="exact"), gts) for name, kw in OBJECTIVES.items()
                 if not name.startswith("paper")]
    else:
        cases = []
        for set_name, (pixel_um, gts) in real_size_sets().items():
            for name in HIGH_NA:
                optics = dataclasses.replace(Optics(**OBJECTIVES[name], psf_model="exact"), pixel_um=pixel_um)
                cases.append((f"{name.split(',')[0]} at {pixel_um:.3f} um, {set_name}", optics, gts))
    for name, optics, gts in cases:
        t0 = time.perf_counter()
        table, rows = scan(optics, gts, rng)
        out.append(dict(name=name, table=list(table), rows=rows, seconds=time.perf_counter() - t0))
        print(summary_line(f"{condition}: {name}", table, rows, out[-1]["seconds"]), file=sys.stderr, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--condition", choices=("shipped", "native", "real size"), help=argparse.SUPPRESS)
    args = threads_args(ap, argv, threads=2)
    if args.condition:  # a child: one condition, its rows as JSON on stdout
        print(json.dumps(run_condition(args.condition)))
        return
    t0 = time.perf_counter()
    results = {}
    for condition in ("shipped", "native", "real size"):  # each in a fresh process: no table cached across
        done = subprocess.run([sys.executable, __file__, "--condition", condition, "--threads", str(args.threads)],
                              check=True, stdout=subprocess.PIPE, text=True)
        results[condition] = json.loads(done.stdout.strip().splitlines()[-1])
    summary, lines = [], ["| condition | objective, fields | class (defocus um) | map within one class | "
                          "LB-DVD PSNR gain (dB) |", "|---|---|---|---|---|"]
    for condition, cases in results.items():
        for c in cases:
            summary.append(summary_line(f"**{condition}**: {c['name']}", c["table"], c["rows"], c["seconds"]))
            lines += [f"| {condition} | {c['name']} | {label} | {w:.1%} | {g:+.2f} |" for label, w, g in c["rows"]]
    publish("object-scale", [
        "## Other objectives: the objects' size in the map's pixels",
        "",
        f"`python benchmarks/object_scale.py --threads {args.threads}` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. Protocol of \"Other objectives and exposures\" (exact PSF at each "
        "defocus, Poisson noise at the field's counts, LB-DVD with the optics given and `never_worse` on). "
        "Conditions: **shipped** = that section's fields (BBBC006 p19_s2, o24_s2 taken as sampled at the "
        "objective's pixel size) and the shipped lambda/NA resampling; **native** = the same fields, the map "
        "made at the image's own pixels with its class table measured there (the resampling switched off in "
        "that process only: not a product option); **real size** = objects at their own physical sampling "
        "through the shipped route: DFNN mitochondria in focus (stack plane 51, single shot ON) at 0.104 um, "
        f"and the two BBBC006 fields' central crops upscaled x{UPSCALE} (cubic) at {0.65 / UPSCALE:.3f} um.",
        "",
        *summary,
        "",
        *lines,
    ], write=not args.no_write)


if __name__ == "__main__":
    main()
