"""Never worse for ``rl`` (Richardson-Lucy at one level the user gives): gated against ungated.

    python benchmarks/rl_never_worse.py [--threads 2] [--no-write]

``rl`` deconvolves the whole image at the level it is told. Gated (``never_worse=True``, the
default since stop 39) its change is weighted by DelpNet's map as the learned methods' is
(``methods/gated.py``): regions in focus come back unchanged. Measured here:

* the held-out BBBC006 fields of ``eval_never_worse.py`` (``synthetic_test_set``, levels 0..10):
  mean PSNR gain over the input with rl told the true level, and with rl at its default level 5
  whatever the truth (a user who clicks Refocus without knowing), gated and ungated, and the
  share of pixels the gate let change;
* the tilted sample of ``eval_never_worse.py`` (left third in focus, then level 0 -> 8), rl at
  level 4, per third;
* the bundled in-focus field (``io.samples.infocus_image``): the output against the input;
* real planes near focus: the DFNN mitochondria stack (``../shared/data``, when present; no optics
  given, as ``tests/test_never_worse.py`` reads it), planes 3 and 6 from focus, rl at level 5,
  PSNR gain against the in-focus plane;
* real BBBC006 planes (``../shared/data``, when present): the z_00 planes (32 um from focus) and
  the near-focus ones (no in-focus pair: the share of pixels the gate let rl change, at level 10;
  the z_00 planes also at level 16, their true distance, beyond the map's top class).

Writes the section ``never-worse-rl`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, git_rev, machine, publish, threads_args  # noqa: E402
from eval_never_worse import LEVELS, tilted_items  # noqa: E402


def gain(out, inp, gt, cols=slice(None)) -> float:
    from napari_refocus.core.metrics import metrics

    dr = float(gt.max() - gt.min())
    return (metrics(out[:, cols], gt[:, cols], data_range=dr)["psnr"]
            - metrics(inp.astype(np.float32)[:, cols], gt[:, cols], data_range=dr)["psnr"])


def main(argv=None):
    import napari_refocus as nr
    from napari_refocus.core.optics import Optics
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.training.pairs import synthetic_test_set

    a = threads_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), argv, threads=2)
    t0 = time.perf_counter()
    items = synthetic_test_set(LEVELS)
    sources = sorted({it["source"] for it in items})
    rows, changed = {}, {}
    for it in items:
        lv = it["level"]
        for told in ("true", 5):
            level = lv if told == "true" else told
            for gated in (False, True):
                res = nr.refocus(it["input"], method="rl", level=level, device="cpu", never_worse=gated)
                rows.setdefault((told, gated), {}).setdefault(lv, []).append(gain(res.image, it["input"], it["gt"]))
                if gated:
                    changed.setdefault(told, {}).setdefault(lv, []).append(res.changed_fraction)
        print(f"level {lv} {it['source']} done", flush=True)
    fields = [(s, next(it["gt"] for it in items if it["source"] == s)) for s in sources]
    w = fields[0][1].shape[1]
    thirds = {"in-focus third": slice(0, w // 3), "middle": slice(w // 3, 2 * w // 3),
              "defocused third": slice(2 * w // 3, None)}
    tilt = {}
    for it in tilted_items(fields):
        for gated in (False, True):
            out = nr.refocus(it["input"], method="rl", level=4, device="cpu", never_worse=gated).image
            for name, c in thirds.items():
                tilt.setdefault((name, gated), []).append(gain(out, it["input"], it["gt"], c))
    sample = infocus_image()
    infocus = {}
    for gated in (False, True):
        out = nr.refocus(sample, method="rl", device="cpu", never_worse=gated).image
        s = sample.astype(np.float64)
        infocus[gated] = (10 * np.log10(float(s.max() - s.min()) ** 2 / max(np.mean((out - s) ** 2), 1e-30)),
                          float(np.abs(out - s).max()))

    real = {}
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import dfnn_stack_dir, read_zstack, zstack_pairs

    if dfnn_stack_dir().exists():
        stack, _ = read_zstack(dfnn_stack_dir())
        focus = zstack_pairs(stack)["focus"]
        truth = stack[focus].astype(np.float32)
        for z in (focus - 6, focus - 3, focus + 3, focus + 6):
            for gated in (False, True):
                out = nr.refocus(stack[z], method="rl", level=5, device="cpu", never_worse=gated).image
                c = compare(truth, out, stack[z].astype(np.float32))
                real.setdefault(gated, []).append((z - focus, c["pred"]["psnr"] - c["input"]["psnr"]))

    bbbc = {}
    base = ROOT.parent / "shared" / "data" / "BBBC006_microscopeimagequality" / "tests" / "data"
    if base.exists():
        import imageio.v3 as iio
        import tifffile

        for kind, files in (("z_00 (32 um)", sorted((base / "images_for_glob_test").glob("00_*.tif"))),
                            ("near focus", sorted(base.glob("BBBC006_z_aligned__*.png")))):
            for f in files:
                img = tifffile.imread(f) if f.suffix == ".tif" else iio.imread(f)
                bbbc.setdefault(kind, []).append(nr.refocus(img, method="rl", level=10, device="cpu").changed_fraction)
                if kind.startswith("z_00"):  # told the true distance, beyond the map's top class
                    bbbc.setdefault("z_00 at level 16 (32 um)", []).append(nr.refocus(
                        img, method="rl", level=16, optics=Optics(n_levels=17, psf_size=81), device="cpu").changed_fraction)

    mean = lambda v: float(np.mean(v))  # noqa: E731
    lines = ["| rl told | | " + " | ".join(f"L{lv}" for lv in LEVELS) + " | mean 2..10 |",
             "|---" * (len(LEVELS) + 3) + "|"]
    for told in ("true", 5):
        name = "the true level" if told == "true" else "level 5 (default)"
        for gated in (False, True):
            row = [mean(rows[(told, gated)][lv]) for lv in LEVELS]
            lines.append(f"| {name} | {'**gated**' if gated else 'ungated'} | "
                         + " | ".join(f"{g:+.2f}" for g in row) + f" | {np.mean(row[2:]):+.2f} |")
        lines.append(f"| {name} | share changed | " + " | ".join(f"{mean(changed[told][lv]):.0%}" for lv in LEVELS)
                     + " | |")
    tlines = ["| | " + " | ".join(thirds) + " |", "|---" * (len(thirds) + 1) + "|"]
    for gated in (False, True):
        tlines.append(f"| rl level 4 {'**gated**' if gated else 'ungated'} | "
                      + " | ".join(f"{mean(tilt[(n, gated)]):+.2f}" for n in thirds) + " |")
    body = [
        "## Never worse: rl",
        "",
        f"`python benchmarks/rl_never_worse.py --threads {a.threads}` on {machine()}, commit {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s. `rl` deconvolves the whole image at the level it is told; gated "
        "(`never_worse=True`, the default) its change is weighted by DelpNet's map as the learned methods' is "
        "(`methods/gated.py`); ungated = `never_worse=False`.",
        "",
        f"Held-out fields {sources} (`synthetic_test_set`, one level each, 520x696): mean PSNR gain (dB) over the "
        "input, rl told the true level (level 0 at L0) or its default level 5 whatever the truth.",
        "",
        *lines,
        "",
        "Tilted sample (each held-out field; left third in focus, then level 0 -> 8 across the other two thirds), "
        "rl at level 4: PSNR gain on each third.",
        "",
        *tlines,
        "",
        "The bundled in-focus field (`infocus_image()`), rl at its default level 5, output against input: "
        f"ungated {infocus[False][0]:.1f} dB (max |difference| {infocus[False][1]:.0f} counts), gated "
        f"{infocus[True][0]:.1f} dB (max |difference| {infocus[True][1]:.3g} counts).",
    ]
    if real:
        body += ["", "Real planes near focus (DFNN mitochondria stack, whole planes, no optics given), rl at level 5, "
                 "PSNR gain against the in-focus plane, planes from focus: " + "; ".join(
                     f"{dz:+d}: ungated {u:+.2f} dB, gated {g:+.2f} dB"
                     for (dz, u), (_, g) in zip(real[False], real[True])) + "."]
    if bbbc:
        body += ["", "Real BBBC006 planes, rl at level 10 (20 um) unless said, gated: share of pixels changed, min..max "
                 "over the planes: " + "; ".join(f"{k} ({len(v)} planes) {min(v):.0%}..{max(v):.0%}" for k, v in bbbc.items())
                 + "."]
    publish("never-worse-rl", body, write=not a.no_write)


if __name__ == "__main__":
    main()
