"""Images with an empty canvas (issue 16, hostile input; "never worse"): every method on a
defocused field placed on a zero canvas (a stitched mosaic's margin) and on the same field
rotated 20 degrees (zero corners, as scipy's or Fiji's rotation leaves them).

Held-out BBBC006 fields (p19_s2, o24_s2) blurred at levels 2, 5 and 8 with Poisson noise.
For each method, the PSNR gain on the field's own pixels:

* **alone**: the field as it is (the reference the canvas should not change);
* **canvas rule**: through ``napari_refocus.refocus``, which fills the canvas by reflection
  for the method and gives it back as zeros (``core.padding``);
* **no rule (before)**: the method's own ``run`` on the image with its zeros and the rule off
  (``methods.padding.padding_mask`` replaced for the call), as every method ran before the rule:
  the baseline of this run.

    python benchmarks/canvas.py [--no-write] [--methods lbdvd rl ...]
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np

from _report import SHARED_DATA, git_rev, machine, publish

LEVELS = (2, 5, 8)
ANGLE = 20.0


def psnr(gt, x, keep, data_range):
    d = (gt.astype(np.float64) - x)[keep]
    return float(10 * np.log10(data_range ** 2 / np.mean(d ** 2)))


def main(argv=None):
    import tifffile
    from scipy import ndimage as ndi

    import napari_refocus as nr
    from napari_refocus.core.progress import drain
    from napari_refocus.methods import list_methods
    from napari_refocus.methods import padding as P
    from napari_refocus.methods.base import RunReport
    from napari_refocus.methods.registry import get_method

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--methods", nargs="+", default=[m.name for m in list_methods() if m.weights_present()])
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    root = SHARED_DATA / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"
    fields = [tifffile.imread(glob.glob(str(root / f"*{f}*"))[0]).astype(np.float32) for f in ("p19_s2", "o24_s2")]

    def before(image, m):  # the method's run on the image with its zeros (no canvas rule anywhere)
        meth = get_method(m)
        found, P.padding_mask = P.padding_mask, lambda *_, **__: None  # the map's rule off too
        try:
            out = drain(meth.run(image, meth.parse(), device="cpu", report=RunReport("cpu")))
        finally:
            P.padding_mask = found
        return np.asarray(out, np.float32)

    def binned(x, u):
        return x if u == 1 else x.reshape(x.shape[0] // u, u, x.shape[1] // u, u).mean((1, 3))

    gains = {(m, kind): {lv: [] for lv in LEVELS} for m in a.methods for kind in ("alone", "margin", "margin-before",
                                                                                 "rotated", "rotated-before")}
    for gt in fields:
        H, W = gt.shape
        dr = float(gt.max() - gt.min())
        for lv in LEVELS:
            blur = rng.poisson(np.clip(nr.simulate(gt, level=lv, noise=None), 0, None)).astype(np.uint16)
            y0, x0 = H // 4, W // 4
            margin = np.zeros((H + 2 * y0, W + 2 * x0), np.uint16)
            margin[y0:y0 + H, x0:x0 + W] = blur
            rot = np.clip(np.rint(ndi.rotate(blur.astype(np.float32), ANGLE, order=1, reshape=True, cval=0)), 0, None)
            rot = rot.astype(np.uint16)
            rgt = ndi.rotate(gt, ANGLE, order=1, reshape=True, cval=0)
            keep_rot = ndi.binary_erosion(ndi.rotate(np.ones_like(gt), ANGLE, order=1, reshape=True) > 0.999,
                                          iterations=2)
            every = np.ones_like(gt, bool)
            for m in a.methods:
                u = get_method(m).upscale
                out = binned(np.asarray(nr.refocus(blur, method=m).image), u)
                gains[m, "alone"][lv].append(psnr(gt, out, every, dr) - psnr(gt, blur, every, dr))
                crop = (slice(y0 * u, (y0 + H) * u), slice(x0 * u, (x0 + W) * u))
                for kind, run in (("margin", lambda x: np.asarray(nr.refocus(x, method=m).image)),
                                  ("margin-before", lambda x: before(x, m))):
                    out = binned(run(margin)[crop], u)
                    gains[m, kind][lv].append(psnr(gt, out, every, dr) - psnr(gt, blur, every, dr))
                base = psnr(rgt, rot, keep_rot, dr)
                for kind, run in (("rotated", lambda x: np.asarray(nr.refocus(x, method=m).image)),
                                  ("rotated-before", lambda x: before(x, m))):
                    gains[m, kind][lv].append(psnr(rgt, binned(run(rot), u), keep_rot, dr) - base)
            print(f"level {lv} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    def cell(m, kind):
        return " / ".join(f"{np.mean(gains[m, kind][lv]):+.2f}" for lv in LEVELS)

    lines = [
        "## Empty canvas: a mosaic's margin and a rotated image's corners",
        "",
        f"`python benchmarks/canvas.py` on {machine()}, commit {git_rev()}, {time.perf_counter() - t0:.0f} s. "
        f"Held-out fields p19_s2 and o24_s2 at levels {', '.join(map(str, LEVELS))} (Poisson noise), each method "
        "with its defaults. **margin**: the field on a zero canvas 1.5x its size; **rotated**: the field turned "
        f"{ANGLE:.0f} degrees (bilinear, zero corners; PSNR on the pixels inside the field, 2 px in from its edge, "
        "against the truth turned alike). Cells: mean PSNR gain (dB) on the field at levels "
        f"{' / '.join(map(str, LEVELS))}; **before** = the method's own run on the image with its zeros "
        "(no canvas rule), the baseline of this run.",
        "",
        "| method | alone | margin | margin, before | rotated | rotated, before |",
        "|---|---|---|---|---|---|",
    ]
    for m in a.methods:
        lines.append(f"| {m} | {cell(m, 'alone')} | **{cell(m, 'margin')}** | {cell(m, 'margin-before')} | "
                     f"**{cell(m, 'rotated')}** | {cell(m, 'rotated-before')} |")
    print("\n".join(lines))
    publish("canvas", lines, write=not a.no_write)


if __name__ == "__main__":
    main()
