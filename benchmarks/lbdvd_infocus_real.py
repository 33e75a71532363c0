"""lbdvd on in-focus input and on the real DFNN pair, with the canonical intensity scale
(``normalise=True``, the default since issue 13) and on raw counts (``normalise=False``, as before).

* the bundled real in-focus BBBC006 field (z_16): PSNR of the output against the input itself
  (how much an in-focus image is changed; data range = the input's);
* held-out BBBC006 fields (p19_s2, o24_s2) at levels 0 (unblurred, as the paper) and 1 (2 um),
  Poisson noise: PSNR gain against the truth;
* the real DFNN mitochondria z-stack (eval_quality's protocol: 11 held-out planes, rows 520..800):
  PSNR gain against its in-focus plane;
* eval_quality's held-out synthetic set (levels 2..10): PSNR gain per level;
* the real BBBC006 z_00 planes (32 um from focus): share of non-background patches at level >= 9.

    python benchmarks/lbdvd_infocus_real.py [--no-write]
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np

from _report import SHARED_DATA, git_rev, machine, publish

SETTINGS = {"canonical scale (default)": {}, "raw counts (before)": {"normalise": False}}


def main(argv=None):
    import tifffile

    import napari_refocus as nr
    from napari_refocus.core.metrics import compare, metrics
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.training.pairs import dfnn_stack_dir, read_zstack, zstack_pairs, zstack_split

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    root = SHARED_DATA / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"
    fields = [tifffile.imread(glob.glob(str(root / f"*{f}*"))[0]).astype(np.float32) for f in ("p19_s2", "o24_s2")]
    sims = {lv: [rng.poisson(np.clip(nr.simulate(g, level=lv, noise=None), 0, None)).astype(np.uint16) for g in fields]
            for lv in (0, 1)}
    stack, _ = read_zstack(dfnn_stack_dir())
    focus = zstack_pairs(stack)["focus"]
    _, held = zstack_split(stack.shape[0], focus, every=3)
    r0 = int(stack.shape[1] * 0.65)
    gt_dfnn = stack[focus, r0:].astype(np.float32)
    infocus = infocus_image()
    from napari_refocus.training.pairs import synthetic_test_set

    held_set = synthetic_test_set(levels=tuple(range(2, 11)))
    z00 = [tifffile.imread(p) for p in sorted(glob.glob(str(SHARED_DATA / "BBBC006_microscopeimagequality" / "tests"
                                                             / "data" / "images_for_glob_test" / "*.tif")))]
    levels_lines = ["| setting | " + " | ".join(f"L{lv}" for lv in range(2, 11)) + " | mean | real z_00 at level >= 9 |",
                    "|---" * 12 + "|"]
    lines = ["| setting | in-focus field: output vs input PSNR (dB) | level 0 gain | level 1 gain | DFNN real gain |",
             "|---|---|---|---|---|"]
    for name, kw in SETTINGS.items():
        out = nr.refocus(infocus, method="lbdvd", device="cpu", **kw).image
        same = metrics(out, infocus.astype(np.float32), data_range=float(np.ptp(infocus)))["psnr"]
        gains = {}
        for lv, imgs in sims.items():
            g = []
            for img, gt in zip(imgs, fields):
                dr = float(gt.max() - gt.min())
                r = nr.refocus(img, method="lbdvd", device="cpu", **kw).image
                g.append(metrics(r, gt, data_range=dr)["psnr"] - metrics(img, gt, data_range=dr)["psnr"])
            gains[lv] = float(np.mean(g))
        d = []
        for z in held:
            inp = stack[z, r0:]
            c = compare(gt_dfnn, nr.refocus(inp, method="lbdvd", device="cpu", **kw).image, inp.astype(np.float32))
            d.append(c["pred"]["psnr"] - c["input"]["psnr"])
        lines.append(f"| {name} | {same:.2f} | {gains[0]:+.2f} | {gains[1]:+.2f} | {np.mean(d):+.2f} |")
        print(lines[-1], flush=True)
        per = {}
        for s in held_set:
            dr = float(s["gt"].max() - s["gt"].min())
            r = nr.refocus(s["input"], method="lbdvd", device="cpu", **kw).image
            per.setdefault(s["level"], []).append(metrics(r, s["gt"], data_range=dr)["psnr"]
                                                  - metrics(s["input"], s["gt"], data_range=dr)["psnr"])
        row = [float(np.mean(per[lv])) for lv in sorted(per)]
        hist = sum(np.bincount(nr.defocus_map(img, device="cpu", **kw).levels.ravel(), minlength=12) for img in z00)
        levels_lines.append(f"| {name} | " + " | ".join(f"{g:+.2f}" for g in row)
                            + f" | **{np.mean(row):+.2f}** | {hist[9:11].sum() / hist[:11].sum():.1%} |")
        print(levels_lines[-1], flush=True)
    publish("lbdvd-infocus-real", [
        "## lbdvd on in-focus input and on a real pair",
        "",
        f"`python benchmarks/lbdvd_infocus_real.py` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. The canonical intensity scale (issue 13) against raw counts (before).",
        "",
        *lines,
        "",
        "Held-out synthetic set of eval_quality (PSNR gain, dB) and the real 32 um planes:",
        "",
        *levels_lines,
    ], write=not a.no_write)


if __name__ == "__main__":
    main()
