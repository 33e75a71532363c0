"""Peak memory per input pixel of every method, and LB-DVD / DelpNet speed (issue 16).

    python benchmarks/memory_speed.py                      # memory at 1024^2 and 3072^2, speed
    python benchmarks/memory_speed.py --sizes 1024 3072 6144
    python benchmarks/memory_speed.py --only speed         # or --only memory
    python benchmarks/memory_speed.py --case lbdvd 3072    # one memory case (what the table runs)

**Memory.** Each (method, size) runs in a fresh subprocess: imports, the method's network loaded
and warmed up on a small image, the uint16 input made (a level-5 defocus of the shipped BBBC006
field, tiled to the size); the *baseline* is the resident set size (RSS) then. The run is
``napari_refocus.refocus(image, method=...)`` in memory with the method's defaults (rl: level
5); a thread samples the RSS every 2 ms (psutil), and the peak minus the baseline, divided by the
input's pixels, is the table's number. ``ru_maxrss`` (the kernel's high-water mark) is checked as
well and the larger of the two is taken. The output array is part of the peak (4 bytes per pixel,
16 for m-deblurgan's x2 output).

**Speed.** LB-DVD (``refocus(method="lbdvd")``) on 520x696 BBBC006 images defocused at level 5
everywhere and with a tilted defocus (0..16 um), best of N, on 2 threads; next to it, in the same
run, the *previous path* kept here as a reference (:func:`previous_lbdvd`: the unfused DelpNet of
``load_fresh`` under ``no_grad`` on all patches extracted at once, then every patch of the image
extracted and montaged at once, as before issue 16), and DelpNet patches/s fused vs unfused.
The machine is shared: the load average is printed with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of, git_rev, machine, publish  # noqa: E402

METHODS = ("lbdvd", "rl", "comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")
PARAMS = {"rl": {"level": 5}}


def test_image(size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint16 image: the shipped in-focus field defocused at level 5, tiled."""
    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image

    tile = np.clip(nr.simulate(infocus_image(), level=5, seed=0), 0, 65535).astype(np.uint16)
    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]))
    return np.ascontiguousarray(np.tile(tile, reps)[:size, :size])


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run_case(method: str, size: int) -> dict:
    """One memory case in this process (call it in a fresh one): see the module docstring."""
    import resource

    import torch

    import napari_refocus as nr

    torch.set_num_threads(2)
    params = PARAMS.get(method, {})
    nr.refocus(test_image(256), method=method, device="cpu", **params)  # loads and warms the network
    image = test_image(size)
    baseline = _rss()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    result = nr.refocus(image, method=method, device="cpu", **params)
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    peak[0] = max(peak[0], _rss())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = max(peak[0], maxrss)
    del result
    return {"method": method, "size": size, "baseline_mb": baseline / 2**20, "peak_mb": top / 2**20,
            "sampled_peak_mb": peak[0] / 2**20, "ru_maxrss_mb": maxrss / 2**20,
            "bytes_per_pixel": (top - baseline) / image.size, "seconds": seconds, "load": os.getloadavg()[0]}


def memory_table(sizes) -> list[str]:
    rows = {}
    for method in METHODS:
        for size in sizes:
            out = subprocess.run([sys.executable, __file__, "--case", method, str(size)], capture_output=True,
                                 text=True, check=True)
            rows[method, size] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(rows[method, size]), file=sys.stderr)
    head = "| method | " + " | ".join(f"{s}² B/px (peak MB, baseline MB)" for s in sizes) + " | <= 24 B/px |"
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for method in METHODS:
        cells = [f"**{rows[method, s]['bytes_per_pixel']:.1f}** ({rows[method, s]['peak_mb']:.0f}, "
                 f"{rows[method, s]['baseline_mb']:.0f})" for s in sizes]
        ok = all(rows[method, s]["bytes_per_pixel"] <= 24 for s in sizes)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    return lines


# --- speed -----------------------------------------------------------------------------------

def previous_lbdvd(image):
    """LB-DVD as it ran before issue 16 (the reference): the unfused network, all patches of
    the map at once, then all 110x110 patches of the image extracted and montaged at once."""
    import torch

    from napari_refocus.core.optics import BACKGROUND
    from napari_refocus.core.rl import deconvolve_patches
    from napari_refocus.core.tiling import CONTEXT, PATCH, STRIDE, extract_patches, montage, patch_grid
    from napari_refocus.methods.defocus import (N_CLASSES, SCALE, background_rule, canonical_image)
    from napari_refocus.models.delpnet import mean_softmax
    from napari_refocus.models.loader import load_fresh

    global _UNFUSED
    if "_UNFUSED" not in globals():
        _UNFUSED = load_fresh("delpnet").to(memory_format=torch.channels_last)
    data, stats = canonical_image(image, 1.0)
    grid = patch_grid(data.shape)
    patches = extract_patches(torch.from_numpy(np.ascontiguousarray(data)), grid, context=0, mode="reflect")
    with torch.no_grad():
        probs = torch.cat([mean_softmax(_UNFUSED, patches[i:i + 256] / SCALE, "cpu")
                           for i in range(0, len(patches), 256)]).numpy()
    levels = probs.reshape(*grid.shape, N_CLASSES).argmax(-1)
    levels[background_rule(patches, stats[2]).reshape(grid.shape)] = BACKGROUND
    t = torch.from_numpy(np.asarray(image, np.float32))
    rl_grid = patch_grid(image.shape, patch=PATCH, stride=STRIDE)
    padded = extract_patches(t, rl_grid, context=CONTEXT, mode="reflect")
    from napari_refocus.core.progress import drain

    restored = drain(deconvolve_patches(padded, levels.ravel(), context=CONTEXT, iterations=15, device="cpu"))
    return montage(restored, rl_grid).clamp_min(0).numpy(), levels


def patches_per_second(model, repeat=15, batch=256):
    import torch

    from napari_refocus.models.delpnet import to_input

    x = to_input(torch.rand(batch, 84, 84) * 2000 / 65535, "cpu")
    with torch.inference_mode():
        model(x)
        return batch / best_of(lambda: model(x), repeat)


def speed_lines(repeat: int) -> list[str]:
    import torch

    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.models.loader import load_fresh, load_model

    torch.set_num_threads(2)
    gt = infocus_image()
    images = {"level 5 everywhere": nr.simulate(gt, level=5, seed=0),
              "tilted 0-16 um": nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=8), seed=0)}
    lines = ["| image | patches deconvolved | LB-DVD now, gate off (s) | previous path (s) | speed-up | max abs diff "
             "(counts) | classes equal | default, never-worse gate on (s) | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    off = {"never_worse": False}  # the never-worse gate (issue 14) came after the previous path
    for name, img in images.items():
        img = np.clip(img, 0, 65535).astype(np.uint16)
        res = nr.refocus(img, method="lbdvd", device="cpu", **off)
        ref, ref_levels = previous_lbdvd(img)
        t_now, t_old, t_gate = [], [], []
        for _ in range(repeat):  # interleaved, so all see the same load
            t_now.append(best_of(lambda: nr.refocus(img, method="lbdvd", device="cpu", **off), 1))
            t_old.append(best_of(lambda: previous_lbdvd(img), 1))
            t_gate.append(best_of(lambda: nr.refocus(img, method="lbdvd", device="cpu"), 1))
        lv = res.defocus_map.levels
        todo = int(np.count_nonzero((lv > 0) & (lv < 11)))
        diff = float(np.abs(res.image - ref).max())
        lines.append(f"| {name} | {todo} of {lv.size} | **{min(t_now):.3f}** | {min(t_old):.3f} | "
                     f"{min(t_old) / min(t_now):.2f}x | {diff:.3g} | {bool(np.array_equal(lv, ref_levels))} | "
                     f"{min(t_gate):.3f} | {os.getloadavg()[0]:.1f} |")
    fused, fresh = load_model("delpnet", "cpu"), load_fresh("delpnet").to(memory_format=torch.channels_last)
    rates = {"fused": [], "unfused": []}
    for _ in range(5):
        rates["fused"].append(patches_per_second(fused, 3))
        rates["unfused"].append(patches_per_second(fresh, 3))
    lines += ["", f"DelpNet, batches of 256 patches, best of 15 (interleaved), 2 threads: fused ({fused.fused}, "
              f"inference_mode, channels-last) **{max(rates['fused']):,.0f} patches/s**; unfused "
              f"{max(rates['unfused']):,.0f} patches/s ({max(rates['fused']) / max(rates['unfused']):.2f}x); load "
              f"average {os.getloadavg()[0]:.1f}."]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "SIZE"))
    ap.add_argument("--sizes", nargs="+", type=int, default=[1024, 3072])
    ap.add_argument("--only", choices=("memory", "speed"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return
    head = (f"Command: `python benchmarks/memory_speed.py {' '.join(sys.argv[1:])}`".rstrip() + f"` (commit "
            f"{git_rev()}); machine: {machine()}; load average at the start {os.getloadavg()[0]:.1f} (the "
            "machine is shared with other jobs).").replace("` `", " ").replace("`` ", "` ")
    if args.only != "speed":
        t0 = time.perf_counter()
        table = memory_table(args.sizes)
        publish("memory", ["## Memory", "", head, "",
                           "Peak resident memory above the baseline per input pixel (uint16 input) of an in-memory "
                           "`refocus` with the method's defaults, each case in a fresh process; baseline = RSS after "
                           "the imports, the network loaded and warmed up, and the input made (the input is part of "
                           "the baseline, the output part of the peak). Target: <= 24 B/px.", "", *table, "",
                           f"{time.perf_counter() - t0:.0f} s in all."], write=not args.no_write)
    if args.only != "memory":
        publish("lbdvd-speed", ["## LB-DVD speed", "", head, "", *speed_lines(args.repeat), "",
                                "Target: LB-DVD <= 0.2 s for 696x520 on 2 cores, DelpNet >= 3,000 patches/s."],
                write=not args.no_write)


if __name__ == "__main__":
    main()
