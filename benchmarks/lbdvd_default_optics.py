"""lbdvd with the default optics (exact PSF, DelpNet's classes matched to it) against
``psf_model="paraxial"`` (the behaviour before the default changed), on the held-out synthetic
set of ``eval_never_worse.py`` (paraxial blur, both test fields, levels 0..10), gated and not.

    python benchmarks/lbdvd_default_optics.py [--threads 1]

Prints one markdown row per variant: mean PSNR gain (dB) per level and the mean over levels 2..10.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    import napari_refocus as nr
    from napari_refocus.core.metrics import metrics
    from napari_refocus.core.optics import Optics
    from napari_refocus.training.pairs import synthetic_test_set

    t0 = time.perf_counter()
    items = synthetic_test_set(list(range(11)))
    gains = {}
    for it in items:
        gt, inp = it["gt"], it["input"]
        dr = float(gt.max() - gt.min())
        base = metrics(inp.astype(np.float32), gt, data_range=dr)["psnr"]
        for name, kw in (("default", {}), ("paraxial", {"optics": Optics(psf_model="paraxial")})):
            for gated in (True, False):
                out = nr.refocus(inp, method="lbdvd", device="cpu", never_worse=gated, **kw).image
                gains.setdefault((name, gated, it["level"]), []).append(metrics(out, gt, data_range=dr)["psnr"] - base)
    print("| lbdvd optics | " + " | ".join(f"L{lv}" for lv in range(11)) + " | mean 2..10 |")
    print("|---|" + "---|" * 12)
    for name in ("default", "paraxial"):
        for gated in (True, False):
            g = [float(np.mean(gains[(name, gated, lv)])) for lv in range(11)]
            print(f"| {name}, {'gated' if gated else 'ungated'} | " + " | ".join(f"{v:+.2f}" for v in g)
                  + f" | {np.mean(g[2:]):+.2f} |")
    print(f"{time.perf_counter() - t0:.0f} s, {len(items)} images, {a.threads} thread(s)")


if __name__ == "__main__":
    main()
