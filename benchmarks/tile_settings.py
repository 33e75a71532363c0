"""The learned methods' tiling: tile size and tiles per forward pass, quality and time.

For each generator, on the held-out synthetic fields (test and validation split, whole 520x696
images, levels 2, 5, 8; never-worse gate off, so the network's own output is compared): PSNR
gain over the input, the mean |difference| from the default setting's output (fraction of the
range) and the summed wall time, for 1024-px tiles four per pass (the default until be1ea9a),
1024-px tiles one per pass (the default since), and 768- and 512-px tiles one per pass. Then each
network alone on random tiles: megapixels per second at each setting (2 threads, 4 s each).

    python benchmarks/tile_settings.py [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import git_rev, machine, publish, threads_args  # noqa: E402

SETTINGS = {"1024 px, 4 per pass": (1024, 4), "1024 px, 1 per pass": (1024, 1), "768 px, 1 per pass": (768, 1),
            "512 px, 1 per pass": (512, 1)}
GENERATORS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")


def megapixels_per_second(name, tile, batch, seconds=4.0):
    import torch

    from napari_refocus.models.loader import load_model

    model = load_model(name, "cpu")
    x = torch.rand(batch, 1, tile, tile)
    with torch.inference_mode():
        model(x)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
    return batch * tile * tile * n / (time.perf_counter() - t0) / 1e6


def main(argv=None):
    import napari_refocus as nr
    from napari_refocus.core.metrics import metrics
    from napari_refocus.training.evaluation import bin_output
    from napari_refocus.training.pairs import synthetic_test_set

    a = threads_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), argv, threads=2)
    t_start = time.perf_counter()
    items = synthetic_test_set((2, 5, 8))
    rows = []
    for m in GENERATORS:
        r = 2 if m == "m-deblurgan" else 1
        gain = {k: [] for k in SETTINGS}
        diff = {k: [] for k in SETTINGS}
        secs = dict.fromkeys(SETTINGS, 0.0)
        for it in items:
            inp, gt = it["input"], it["gt"]
            dr = float(gt.max() - gt.min())
            before = metrics(inp.astype(np.float32), gt, data_range=dr)["psnr"]
            ref = None
            for k, (tile, batch) in SETTINGS.items():
                t0 = time.perf_counter()
                out = nr.refocus(inp, method=m, device="cpu", never_worse=False, tile=tile, batch_size=batch).image
                secs[k] += time.perf_counter() - t0
                gain[k].append(metrics(bin_output(out, r), gt, data_range=dr)["psnr"] - before)
                ref = out if ref is None else ref
                diff[k].append(float(np.abs(out - ref).mean() / dr))
        for k, (tile, batch) in SETTINGS.items():
            rows.append(f"| {m} | {k} | {np.mean(gain[k]):+.3f} | {np.mean(diff[k]):.1e} | {secs[k]:.1f} | "
                        f"{megapixels_per_second(m, tile, batch):.2f} |")
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - t_start
    head = (f"Command: `python benchmarks/tile_settings.py --threads {a.threads}` (git {git_rev()}; {machine()}; "
            f"{seconds:.0f} s).")
    what = (f"Held-out fields ({', '.join(sorted({it['source'] for it in items}))}) at levels 2, 5, 8, the gate off. "
            "Mean |difference| from the first setting's output as a fraction of the range; time: the "
            f"{len(items)} images in all; Mpx/s: the network alone on tiles of that size and batch (not counting "
            "the tiles' overlap, which grows as tiles shrink).")
    lines = ["## Learned methods: tile size and tiles per pass", "", head, "", what, "",
             "| method | tiles | PSNR gain (dB) | mean abs diff from 1024 px x 4 | time (s) | network Mpx/s |",
             "|---|---|---|---|---|---|", *rows]
    publish("tile-settings", lines, write=not a.no_write)


if __name__ == "__main__":
    main()
