"""GPU timings (issue 16): LB-DVD and rl on a 2048² image, DelpNet patches/s, the generators' Mpx/s,
each on the accelerator and, as the baseline in the same run, on the same machine's CPU; then the
accelerator's real out-of-memory fallback (a memory cap on the process).

    python benchmarks/gpu_timings.py                   # on a machine with a CUDA GPU
    python benchmarks/gpu_timings.py --json gpu.json --no-write   # numbers to a file only
    python benchmarks/gpu_timings.py --from-json gpu.json         # write the section from that file

The image: the shipped BBBC006 field defocused with a tilt (0..16 um, the "LB-DVD speed" field of
``memory_speed.py``), tiled to the size, uint16. Each timing is the best of ``--repeat`` calls after one
warm-up call (which loads the weights and, on the GPU, the kernels). ``napari_refocus.refocus``
returns a numpy array, so a timing includes the copy back. DelpNet runs as the map runs it: the
fused network, under the package's autocast (float16 on CUDA). The GPU's peak memory is
``torch.cuda.max_memory_allocated`` of the timed calls.

Out of memory: the process's GPU memory is capped (``torch.cuda.set_per_process_memory_fraction``)
at half of what lbdvd and refocus-unet took, then at 4 MiB; the run must halve its batches or tiles,
go on to the CPU where even those fail, say so in ``RefocusResult.notes``, and give the uncapped
result. Without a GPU the
script says so and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of, git_rev, machine, publish, tiled  # noqa: E402
from memory_speed import patches_per_second  # noqa: E402

GENERATORS = ("refocus-unet", "comi-cyclegan", "h2t-msunet", "m-deblurgan")
#: the out-of-memory check: each method under a GPU memory cap of half its measured peak (its batches
#: or tiles halved, on the GPU) and of 4 MiB (nothing fits: the CPU)
OOM_METHODS = ("lbdvd", "refocus-unet")
TINY_CAP_MB = 4


def tilted_image(size: int, field=None) -> np.ndarray:
    """``size`` x ``size`` uint16: an in-focus field (the shipped one, or the image file ``field``)
    with a 0..16 um tilt of defocus, tiled."""
    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image

    gt = infocus_image() if field is None else nr.read_image(field)[0]
    tile = nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=8), seed=0)
    return tiled(np.clip(tile, 0, 65535).astype(np.uint16), size)


def _timed(fn, repeat: int, device: str):
    """(best seconds of ``repeat`` calls after a warm-up, the warm-up's result, GPU peak MiB)."""
    import torch

    result = fn()
    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = best_of(fn, repeat)
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    return seconds, result, peak


def measure(size: int, repeat: int, cpu_repeat: int, generators_on_cpu, field=None, accelerator=None) -> dict:
    import torch

    import napari_refocus as nr

    gpu = accelerator or ("cuda" if torch.cuda.is_available() else None)
    if gpu is None:
        raise SystemExit("gpu_timings: no CUDA GPU here; nothing measured (the CPU numbers are memory_speed.py's)")
    image = tilted_image(size, field)
    mpx = image.size / 1e6
    cuda = gpu.startswith("cuda")
    out = {"size": size, "machine": machine(), "gpu": torch.cuda.get_device_name(0) if cuda else gpu, "rev": git_rev(),
           "cpu_threads": torch.get_num_threads(), "cases": {}, "oom": {}}
    results = {}
    for method in ("lbdvd", "rl", *GENERATORS):
        params = {"level": 5} if method == "rl" else {}
        row = {}
        for role, device, rep in (("gpu", gpu, repeat), ("cpu", "cpu", cpu_repeat)):
            if role == "cpu" and method in GENERATORS and method not in generators_on_cpu:
                continue
            t0 = time.perf_counter()
            seconds, res, peak = _timed(lambda: nr.refocus(image, method=method, device=device, **params), rep,
                                        device)
            row[role] = {"seconds": seconds, "mpx_per_s": mpx / seconds, "gpu_peak_mb": peak,
                         "ran_on": res.device, "notes": list(res.notes), "wall_s": time.perf_counter() - t0}
            results[method, role] = res
            print(json.dumps({method: {role: row[role]}}), flush=True)
        if "cpu" in row:  # the same image through both devices: how far apart the outputs are
            a, b = results[method, "gpu"], results[method, "cpu"]
            row["max_abs_diff"] = float(np.abs(a.image - b.image).max())
            row["out_max"] = float(np.abs(b.image).max())
            if a.defocus_map is not None and b.defocus_map is not None:
                row["classes_equal"] = float(np.mean(a.defocus_map.levels == b.defocus_map.levels))
        out["cases"][method] = row
    from napari_refocus.methods.canonical import delpnet  # the map's network, fused

    out["delpnet"] = {f"{role}|{b}": patches_per_second(delpnet(None, torch.device(dev)), repeat, b, dev)
                      for role, dev, b in (("gpu", gpu, 256), ("gpu", gpu, 4096), ("cpu", "cpu", 256))}
    print(json.dumps(out["delpnet"]), flush=True)

    # the real out-of-memory fallback: caps below each case's measured need
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    for method in OOM_METHODS if cuda else ():
        for cap_mb in (out["cases"][method]["gpu"]["gpu_peak_mb"] / 2, TINY_CAP_MB):
            key = f"{method}|{cap_mb:.0f}"
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(cap_mb * 2**20 / total)
            try:
                t0 = time.perf_counter()
                res = nr.refocus(image, method=method, device=gpu)
                seconds = time.perf_counter() - t0
                ref = results[method, "gpu"]
                out["oom"][key] = {"method": method, "cap_mb": cap_mb, "seconds": seconds, "ran_on": res.device,
                                   "notes": list(res.notes), "max_abs_diff": float(np.abs(res.image - ref.image).max()),
                                   "out_max": float(np.abs(ref.image).max())}
            except Exception as exc:  # noqa: BLE001 - recorded: the check failed
                out["oom"][key] = {"method": method, "cap_mb": cap_mb, "error": f"{type(exc).__name__}: {exc}"[:300]}
            finally:
                torch.cuda.set_per_process_memory_fraction(1.0)
                torch.cuda.empty_cache()
            print(json.dumps({"oom": {key: out["oom"][key]}}), flush=True)
    return out


def lines(r: dict, command: str) -> list[str]:
    size = r["size"]
    head = [f"Command: `{command}` (git {r['rev']}); machine: {r['machine']}; the CPU baseline on the same machine "
            f"with {r['cpu_threads']} threads. Image: the tilted field (0..16 um), {size}x{size} uint16; best of the "
            "timed calls after a warm-up; `refocus()` as a user calls it (never-worse gate on).", "",
            "| method | GPU (s) | GPU Mpx/s | GPU peak (MiB) | CPU (s) | CPU Mpx/s | GPU / CPU speed-up | "
            "max abs diff GPU vs CPU (counts) | classes equal |", "|---|---|---|---|---|---|---|---|---|"]
    for method, row in r["cases"].items():
        g, c = row["gpu"], row.get("cpu")
        peak = "" if g["gpu_peak_mb"] is None else f"{g['gpu_peak_mb']:.0f}"
        cells = [f"**{g['seconds']:.3f}**", f"{g['mpx_per_s']:.1f}", peak]
        cells += ([f"{c['seconds']:.2f}", f"{c['mpx_per_s']:.2f}", f"{c['seconds'] / g['seconds']:.0f}x",
                   f"{row['max_abs_diff']:.3g} (of {row['out_max']:.0f})",
                   f"{row['classes_equal']:.1%}" if "classes_equal" in row else ""] if c else ["", "", "", "", ""])
        head.append(f"| {method} | " + " | ".join(cells) + " |")
    d = r["delpnet"]
    cpu256 = d["cpu|256"]
    head += ["", f"- DelpNet (the map's fused network, float16 autocast on the GPU): GPU batch 256 "
             f"**{d['gpu|256']:,.0f}** patches/s, batch 4096 **{d['gpu|4096']:,.0f}** patches/s; "
             f"the same machine's CPU, batch 256: {cpu256:,.0f} patches/s."]
    for o in r["oom"].values():
        method = o["method"]
        if "error" in o:
            head.append(f"- Out of memory, {method} with the GPU capped at {o['cap_mb']:.0f} MiB: **failed**: {o['error']}")
            continue
        notes = "; ".join(o["notes"]) or "no notice"
        head.append(f"- Out of memory, {method} with the GPU capped at {o['cap_mb']:.0f} MiB "
                    "(`torch.cuda.set_per_process_memory_fraction`): "
                    f"{o['seconds']:.2f} s, ran on {o['ran_on']}, notice: \"{notes}\"; max abs diff from the "
                    f"uncapped GPU result {o['max_abs_diff']:.3g} counts (of {o['out_max']:.0f}).")
    return head


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cpu-repeat", type=int, default=2)
    ap.add_argument("--generators-on-cpu", nargs="*", default=list(GENERATORS), choices=GENERATORS)
    ap.add_argument("--field", help="the in-focus field (an image file; default: the shipped BBBC006 plane)")
    ap.add_argument("--accelerator", help=argparse.SUPPRESS)  # a dry run of the script on another device
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--from-json", help="write the section from a file this script wrote (no measuring)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.from_json:
        r = json.loads(Path(a.from_json).read_text())
    else:
        r = measure(a.size, a.repeat, a.cpu_repeat, a.generators_on_cpu, a.field, a.accelerator)
        r["command"] = "python benchmarks/gpu_timings.py" + (f" --size {a.size}" if a.size != 2048 else "")
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=1))
    publish("gpu-timings", lines(r, r["command"]), write=not a.no_write)


if __name__ == "__main__":
    main()
