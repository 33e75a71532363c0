"""DelpNet weights on the exact PSF and on other objectives, patch by patch: which weights to ship?

    python benchmarks/delpnet_objectives.py NAME=WEIGHTS[@PSF_MODEL] [...] [--per-class 20] [--threads N]
        [--wheels DIR]

(``@exact`` / ``@paraxial``: the PSF a checkpoint without optics metadata was trained on.)

For each weights file (the shipped ``weights/delpnet.safetensors`` is always the first row, as the
baseline of the same run): held-out patches of the test fields (p19_s2, o24_s2; class-balanced,
``--per-class`` per class) blurred with

- the reference objective (20x/0.5 air, 0.65 um) with the *exact* PSF, and with the PSF each
  weights file was trained on (its metadata's ``psf_model``; weights before that field: paraxial),
  with the training augmentation (brightness, offset, read noise, 0.5..4 photons/count), and under
  the paper protocol (raw counts, Poisson at 1 photon/count);
- other objectives' exact PSFs at each class's matched defocus, drawn on the reference sampling
  (``training.delpnet_data.blur_levels_for``): two of the experimental training mixture and the
  two high-NA objectives the objectives benchmark evaluates (40x/0.95 air, 60x/1.4 oil).

Reported: top-1, within one class (non-background) and the mean signed class error (+: the
patches read as more defocused than they are; LB-DVD then over-deconvolves).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, delpnet_args, git_rev, machine, publish, threads_wheels  # noqa: E402

OBJECTIVES = {
    "10x/0.3 air (mixture)": {"na": 0.3, "wavelength_nm": 520.0, "pixel_um": 0.65},
    "100x/1.45 oil (mixture)": {"na": 1.45, "refractive_index": 1.515, "wavelength_nm": 520.0, "pixel_um": 0.065},
    "40x/0.95 air (held out)": {"na": 0.95, "wavelength_nm": 451.0, "pixel_um": 0.16},
    "60x/1.4 oil (held out)": {"na": 1.4, "refractive_index": 1.515, "wavelength_nm": 520.0, "pixel_um": 0.108},
}


def score(model, x, y) -> tuple[float, float, float]:
    from napari_refocus.training.evaluation import predict_proba

    p = predict_proba(model, x, "cpu").argmax(1)
    fg = y != 11
    d = (p[fg] - y[fg]).float()
    return float((p == y).float().mean()), float((d.abs() <= 1).float().mean()), float(d.mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("weights", nargs="*", help="NAME=path/to/delpnet.safetensors")
    ap.add_argument("--per-class", type=int, default=20)
    a = delpnet_args(ap, argv)
    from napari_refocus.core.optics import Optics
    from napari_refocus.models.loader import load_model, read_metadata
    from napari_refocus.training.delpnet_data import fixed_set
    from napari_refocus.training.sources import load_sources, split_sources

    t0 = time.perf_counter()
    images = [s.image for s in split_sources(load_sources(None, wheels_dir=a.wheels))["test"]]
    runs = [("shipped", ROOT / "weights" / "delpnet.safetensors")]
    for w in a.weights:  # NAME=PATH, or NAME=PATH@psf_model for a checkpoint without optics metadata
        name, _, rest = w.partition("=")
        path, _, model = rest.partition("@")
        runs.append((name, Path(path), model or None))
    runs[0] = (*runs[0], None)
    n = a.per_class
    cols = ["reference, exact PSF", "reference, its training PSF", "paper protocol, exact PSF", *OBJECTIVES]
    lines = ["| weights | trained on | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, path, given in runs:
        own = given or read_metadata(path).get("optics", {}).get("psf_model", "paraxial")
        model = load_model(str(path), "cpu")
        cells = [score(model, *fixed_set(images, n, seed=5, optics=Optics(psf_model="exact"))),
                 score(model, *fixed_set(images, n, seed=5, optics=Optics(psf_model=own))),
                 score(model, *fixed_set(images, n, seed=6, optics=Optics(psf_model="exact"), paper_protocol=True))]
        cells += [score(model, *fixed_set(images, n, seed=5, optics=Optics(psf_model="exact"),
                                          objectives=[(kw, 1.0)])) for kw in OBJECTIVES.values()]
        lines.append(f"| {name} | {own} | " + " | ".join(f"{t:.0%} / {w:.0%} / {b:+.2f}" for t, w, b in cells) + " |")
        print(lines[-1], flush=True)
    publish("delpnet-objectives", [
        "## DelpNet weights on the exact PSF and other objectives (patches)",
        "",
        f"`python benchmarks/delpnet_objectives.py {' '.join(a.weights)} --per-class {n}{threads_wheels(a)}` on "
        f"{machine()}, commit {git_rev()}, {time.perf_counter() - t0:.0f} s. Held-out test fields, "
        f"{n} patches per class; each cell: top-1 / within one class (non-background) / mean signed class error "
        "(+: read as more defocused than it is). Other objectives: their exact PSF at each class's matched "
        "defocus, drawn on the reference sampling, training augmentation.",
        "",
        *lines,
    ], write=not a.no_write)


if __name__ == "__main__":
    main()
