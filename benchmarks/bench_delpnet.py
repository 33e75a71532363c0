"""DelpNet inference speed and the whole LB-DVD method on one BBBC006-sized image.

    python benchmarks/bench_delpnet.py

Patches per second of the shipped DelpNet (weights/delpnet.safetensors) in batches of 256
84x84 patches, against the paper's claim of 500 patches in under a second (GTX 1060), i.e. a
baseline of 500 patches/s; then `napari_refocus.refocus(image, method="lbdvd")` on a real
520x696 BBBC006 image (defocus map + depth-variant RL), split into its two stages; then the
training cost per Adam step (batch 128) of the shipped width against the paper's 2.3 M-parameter
width (baseline: the shipped width), and what 80 epochs x 100 steps would take.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of, git_rev, machine, write_section  # noqa: E402

import napari_refocus as nr  # noqa: E402
from napari_refocus.methods.defocus import SCALE  # noqa: E402
from napari_refocus.models.delpnet import autocast, to_input  # noqa: E402
from napari_refocus.models.loader import load_model  # noqa: E402

PAPER_PATCHES_PER_S = 500.0


def patches_per_second(device, n=2048, batch=256, seconds=5.0):
    model = load_model("delpnet", device)
    x = torch.rand(batch, 84, 84) * 2000 / SCALE
    with torch.no_grad():
        for _ in range(2):
            with autocast(device):
                model(to_input(x, device))
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or done < n:
            with autocast(device):
                model(to_input(x, device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            done += batch
    return done / (time.perf_counter() - t0)


def train_step_seconds(width, device, batch=128, steps=5):
    """Median seconds per Adam step (forward + backward + update) on random patches, after a warm-up."""
    from napari_refocus.models.delpnet import DelpNet, prepare
    from napari_refocus.training.train_delpnet import train_step

    model = prepare(DelpNet(width=width), device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, 84, 84) * 2000 / SCALE
    y = torch.randint(0, 12, (batch,), device=device)

    def step():
        train_step(model, opt, x, y, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    from napari_refocus.io.samples import infocus_image

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    lines = [f"Command: `python benchmarks/bench_delpnet.py` (commit {git_rev()}); machine: {machine()}.", "",
             "| device | DelpNet patches/s (batch 256) | vs paper's 500 patches/s (GTX 1060) |", "|---|---|---|"]
    for dev in devices:
        rate = patches_per_second(dev)
        lines.append(f"| {dev.type} | {rate:,.0f} | {rate / PAPER_PATCHES_PER_S:.1f}x |")
    image = nr.simulate(infocus_image(), level_field=nr.tilted_level_field((520, 696), low=0, high=8), seed=0)
    nr.refocus(image, method="lbdvd", device="cpu")  # warm-up: weights, PSF and OTF banks
    t_map = best_of(lambda: nr.defocus_map(image, device="cpu"))
    dmap = nr.defocus_map(image, device="cpu")
    t_rl = best_of(lambda: nr.deconvolve(image, level_map=dmap.levels, device="cpu"))
    t_all = best_of(lambda: nr.refocus(image, method="lbdvd", device="cpu"))
    n = dmap.levels.size
    todo = int(np.count_nonzero((dmap.levels > 0) & (dmap.levels < 11)))
    lines += ["", f"LB-DVD on a 520x696 image (shipped BBBC006 sample, tilted defocus 0-16 um), CPU, best of 3: "
              f"whole method **{t_all:.2f} s** = defocus map of {n} patches {t_map:.2f} s + depth-variant RL of "
              f"{todo} patches {t_rl:.2f} s (the rest are level 0 or background and left as they are)."]
    from napari_refocus.models.delpnet import PAPER_WIDTH, SHIPPED_WIDTH, DelpNet, n_parameters

    lines += ["", "Training cost per Adam step (median of 5; batch 128 patches, random data; data synthesis not included):", "",
              "| device | width | parameters | s/step | vs shipped width | 80 epochs x 100 steps |", "|---|---|---|---|---|---|"]
    for dev in devices:
        base = None
        for width in (SHIPPED_WIDTH, PAPER_WIDTH):
            sec = train_step_seconds(width, dev)
            base = base or sec
            lines.append(f"| {dev.type} | {width} | {n_parameters(DelpNet(width=width)):,} | {sec:.3f} | "
                         f"{sec / base:.1f}x | {sec * 8000 / 3600:.1f} h |")
    text = "\n".join(lines)
    print(text)
    write_section("bench_delpnet", "## DelpNet speed and the whole LB-DVD method\n\n" + text)


if __name__ == "__main__":
    main()
