"""How stable is the defocus map across noise draws and exposures, and would smoothing it help?

Issue 13 asks the same field at x0.25..x16 the counts to give the same map (>= 85 % of the
non-background patches identical). The shipped map takes each patch's argmax on its own. This
benchmark reads the exposure protocol of ``eval_objectives.py`` (held-out BBBC006 fields p19_s2 and
o24_s2, the paper's objective, the training's blur at levels 2, 5, 8 (``eval_objectives.training_blur``;
before stop 36 the exact PSF at 2 um a level, between the classes), Poisson noise at x1, another x1
draw, x0.25, x4, x16) and, on the same fields, spatially varying defocus (tilts along x and y over
levels 0..10, three steps of 2 / 6 / 9), and compares ways of turning DelpNet's probabilities into
classes, none of them shipped:

- ``argmax``: the shipped reading;
- ``expect kxk``: each patch's expected class (softmax over classes 0..10, renormalised), averaged
  over its k x k non-background neighbours, rounded;
- each with the map's test-time augmentation (``tta=True``, the 8 flips/rotations; 8x the map's time).

Per variant: the share of non-background patches identical to the first x1 draw's map (min and mean
over the 6 field/level cases), and against the truth (the level at a patch's centre) on all the
images: the share exactly right, within one class, and the mean absolute error in classes.

    python benchmarks/map_stability.py [--no-write]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _report import git_rev, machine, publish

EXPOSURES = {"another x1 draw": 1.0, "x0.25": 0.25, "x4": 4.0, "x16": 16.0}


def expected_class(p, bg, k: int) -> np.ndarray:
    """Classes from the k x k neighbourhood mean of each patch's expected class (bg stays bg)."""
    from scipy.ndimage import uniform_filter

    q = p[..., :11] / np.maximum(p[..., :11].sum(-1, keepdims=True), 1e-12)
    e = np.where(bg, 0.0, (q * np.arange(11)).sum(-1))
    w = (~bg).astype(np.float64)
    m = uniform_filter(e, k, mode="constant") / np.maximum(uniform_filter(w, k, mode="constant"), 1e-12)
    return np.where(bg, 11, np.rint(m)).astype(np.int64)


READINGS = {
    "argmax (shipped)": lambda p, bg: np.where(bg, 11, p.argmax(-1)),
    "expect 3x3": lambda p, bg: expected_class(p, bg, 3),
    "expect 5x5": lambda p, bg: expected_class(p, bg, 5),
}


def readings(image, tta: bool):
    import napari_refocus as nr

    dm = nr.defocus_map(image, device="cpu", tta=tta)
    bg = dm.levels == 11
    return {name: f(dm.probabilities, bg) for name, f in READINGS.items()}, dm


def level_fields(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return {"tilt along x": 10.0 * xx / (w - 1), "tilt along y": 10.0 * yy / (h - 1),
            "steps 2/6/9": np.where(xx < w / 3, 2.0, np.where(xx < 2 * w / 3, 6.0, 9.0))}


def run(tta: bool, rng):
    from eval_objectives import fields, training_blur

    same = {name: {k: [] for k in EXPOSURES} for name in READINGS}
    truth = {name: [] for name in READINGS}

    def score(levels, true_level):
        fg = levels != 11
        d = levels[fg] - true_level[fg]
        return float((levels[fg] == np.rint(true_level[fg])).mean()), float((np.abs(d) <= 1).mean()), \
            float(np.abs(d).mean())

    for _, gt in fields():
        for level in (2, 5, 8):
            clean = training_blur(gt, level=level)
            base, dm = readings(rng.poisson(np.clip(clean, 0, None)).astype(np.uint16), tta)
            centre = np.full(dm.levels.shape, float(level))
            for name in READINGS:
                truth[name].append(score(base[name], centre))
            for k, e in EXPOSURES.items():
                got, _ = readings(np.clip(rng.poisson(np.clip(clean * e, 0, None)), 0, 65535).astype(np.uint16), tta)
                for name in READINGS:
                    fg = base[name] != 11
                    same[name][k].append(float((got[name][fg] == base[name][fg]).mean()))
        for lf in level_fields(gt.shape).values():
            clean = training_blur(gt, level_field=lf)
            got, dm = readings(rng.poisson(np.clip(clean, 0, None)).astype(np.uint16), tta)
            c = dm.grid.corners() + (dm.grid.patch - 1) // 2
            centre = lf[np.clip(c[..., 0], 0, gt.shape[0] - 1), np.clip(c[..., 1], 0, gt.shape[1] - 1)]
            for name in READINGS:
                truth[name].append(score(got[name], centre))
    return same, truth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    head = "| reading | " + " | ".join(f"identical to x1: {k} (min / mean)" for k in EXPOSURES) + \
        " | vs truth: exact / within one / mean error (classes) |"
    lines = [head, "|" + "---|" * (len(EXPOSURES) + 2)]
    for tta in (False, True):
        same, truth = run(tta, np.random.default_rng(1))
        for name in READINGS:
            cells = [f"{min(v):.1%} / {np.mean(v):.1%}" for v in same[name].values()]
            t = np.mean(truth[name], 0)
            lines.append(f"| {name}{', tta' if tta else ''} | " + " | ".join(cells) +
                         f" | {t[0]:.1%} / {t[1]:.1%} / {t[2]:.2f} |")
        print("\n".join(lines), flush=True)
    publish("map-stability", [
        "## Defocus map: stability across noise draws and exposures",
        "",
        f"`python benchmarks/map_stability.py` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. The exposure protocol of \"Other objectives and exposures\" (held-out "
        "fields p19_s2 and o24_s2, paper objective, levels 2 / 5 / 8; 6 cases) and, for the truth columns, also "
        "tilts over levels 0..10 along x and y and steps of 2 / 6 / 9 on the same fields. Readings other than "
        "argmax are post-hoc on the same probabilities, not shipped (module doc).",
        "",
        *lines,
    ], write=not args.no_write)


if __name__ == "__main__":
    main()
