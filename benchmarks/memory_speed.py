"""Peak memory per input pixel of every method, and LB-DVD / DelpNet speed (issue 16).

    python benchmarks/memory_speed.py                      # memory at 1024^2 and 3072^2, speed
    python benchmarks/memory_speed.py --sizes 1024 3072 6144 --methods lbdvd rl --baseline bb0b5dc
    python benchmarks/memory_speed.py --only speed --baseline bb0b5dc   # or --only memory
    python benchmarks/memory_speed.py --case lbdvd 3072    # one memory case (what the table runs)

**Memory.** Each (method, size) runs in a fresh subprocess: imports, the method's network loaded
and warmed up on a small image, the uint16 input made (a level-5 defocus of the shipped BBBC006
field, tiled to the size), the heap the warm-up freed handed back to the system (glibc
``malloc_trim``: since stop 34; before, a run that reused it read up to 20 MB lower, by an amount
that varied from process to process); the *baseline* is the resident set size (RSS) then. The run is
``napari_refocus.refocus(image, method=...)`` in memory with the method's defaults (rl: level
5); a thread samples the RSS every 2 ms (psutil), and the peak minus the baseline, divided by the
input's pixels, is the table's number. The kernel's high-water mark of the run alone (VmHWM,
reset at the baseline through ``/proc/self/clear_refs``; ``ru_maxrss`` where that is not
possible, which also holds the warm-up's peak) is checked as well and the larger of the two is
taken. The output array is part of the peak (4 bytes per pixel,
16 for m-deblurgan's x2 output; lbdvd's and the gated methods' gate weights, 4 more).

**Speed.** LB-DVD (``refocus(method="lbdvd")``, with the never-worse gate and without) on 520x696
BBBC006 images defocused at level 5 everywhere and with a tilted defocus (0..16 um), and DelpNet
patches/s (the run-time, fused network, batches of 256 and of the map's default batch), each in a
subprocess with 2 threads, best of N. ``--int8`` adds the same tree with DelpNet in int8 on the CPU
(``NAPARI_REFOCUS_INT8=1``), compared with the float32 map when no baseline is given.

``--baseline REV`` runs every case a second time on commit REV (``git archive`` into a
temporary folder, put first on ``PYTHONPATH``), interleaved with the current tree's cases so
both see the same load; LB-DVD's outputs are compared too. The machine is shared: the load
average is printed with every number.
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
from _report import best_of, git_rev, machine, publish, tiled  # noqa: E402

METHODS = ("lbdvd", "rl", "comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")
PARAMS = {"rl": {"level": 5}}


def test_image(size: int, level: int = 5) -> np.ndarray:
    """A ``size`` x ``size`` uint16 image: the shipped in-focus field defocused at ``level`` (2 um
    each, the default exact PSF; 14 = 28 um, beyond DelpNet's top class), tiled."""
    import napari_refocus as nr
    from napari_refocus.core.optics import Optics
    from napari_refocus.io.samples import infocus_image

    optics = Optics(n_levels=17, psf_size=81) if level > 10 else None  # levels to 32 um, a window for them
    return tiled(np.clip(nr.simulate(infocus_image(), level=level, seed=0, optics=optics), 0, 65535).astype(np.uint16),
                 size)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: the heap's freed pages handed back (nothing without glibc)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _reset_hwm() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _hwm() > 0
    except OSError:
        return False


def _hwm() -> int:
    """This process's peak RSS since the last reset (VmHWM, bytes), 0 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_case(method: str, size: int, level: int = 5, params=None) -> dict:
    """One memory case in this process (call it in a fresh one): see the module docstring.
    ``level``: the test image's defocus level; ``params``: the method's keywords (default
    :data:`PARAMS`)."""
    import resource

    import torch

    import napari_refocus as nr

    torch.set_num_threads(int(os.environ.get("MEMORY_SPEED_THREADS", "2")))
    params = PARAMS.get(method, {}) if params is None else params
    nr.refocus(test_image(256, level), method=method, device="cpu", **params)  # loads and warms the network
    image = test_image(size, level)
    # the heap the warm-up freed is handed back first: left in the baseline, a run that reuses it
    # reads lower, and by how much varied from process to process (+-5 B/px at 1024^2); done here,
    # not through the package, so that a baseline tree from before core.memory.release_free_memory
    # is measured the same way
    _malloc_trim()
    baseline = _rss()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    # the kernel's high-water mark of this run alone: Linux resets VmHWM to the current RSS when
    # "5" is written to clear_refs (ru_maxrss cannot be reset: it kept the warm-up's peak, which
    # at 1024^2 was above the run's own)
    hwm_reset = _reset_hwm()
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    result = nr.refocus(image, method=method, device="cpu", **params)
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    peak[0] = max(peak[0], _rss())
    maxrss = _hwm() if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = max(peak[0], maxrss)
    del result
    return {"method": method, "size": size, "baseline_mb": baseline / 2**20, "peak_mb": top / 2**20,
            "sampled_peak_mb": peak[0] / 2**20, "kernel_peak_mb": maxrss / 2**20, "hwm_reset": hwm_reset,
            "bytes_per_pixel": (top - baseline) / image.size, "seconds": seconds, "load": os.getloadavg()[0]}


def _case(args, src=None, extra_env=None) -> dict:
    """Run ``memory_speed.py ARGS`` in a fresh process (on the tree ``src`` when given, with
    ``extra_env`` added to the environment) and return the JSON it prints last."""
    env = {**os.environ, **(extra_env or {})}
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"tree": "baseline" if src else "now", **row}), file=sys.stderr)
    return row


def export_tree(rev: str, into: Path) -> Path:
    """``git archive`` of commit ``rev`` into ``into``; returns its ``src`` folder."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", rev], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def memory_table(sizes, methods, base_src=None, base_rev="") -> list[str]:
    rows = {}
    for method in methods:
        for size in sizes:
            rows["now", method, size] = _case(["--case", method, str(size)])
            if base_src is not None:
                rows["base", method, size] = _case(["--case", method, str(size)], base_src)
    head = "| method | tree | " + " | ".join(f"{s}² B/px (MB above; baseline MB; s)" for s in sizes) + " | <= 24 B/px |"
    lines = [head, "|" + "---|" * (len(sizes) + 3)]
    for method in methods:
        for tree in ("now", "base") if base_src is not None else ("now",):
            cells = []
            for s in sizes:
                r = rows[tree, method, s]
                cells.append(f"**{r['bytes_per_pixel']:.1f}** ({r['peak_mb'] - r['baseline_mb']:.0f}; "
                             f"{r['baseline_mb']:.0f}; {r['seconds']:.1f})")
            ok = all(rows[tree, method, s]["bytes_per_pixel"] <= 24 for s in sizes)
            name = "this commit" if tree == "now" else f"baseline {base_rev}"
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    return lines


# --- speed -----------------------------------------------------------------------------------

def speed_images():
    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image

    gt = infocus_image()
    images = {"level 5 everywhere": nr.simulate(gt, level=5, seed=0),
              "tilted 0-16 um": nr.simulate(gt, level_field=nr.tilted_level_field(gt.shape, low=0, high=8), seed=0)}
    return {k: np.clip(v, 0, 65535).astype(np.uint16) for k, v in images.items()}


def patches_per_second(model, repeat=15, batch=256, device="cpu"):
    """DelpNet ``model`` (on ``device``) on ``batch`` patches under the package's autocast, as the
    map runs it (float16 on CUDA; float32 on this CPU); best of ``repeat``."""
    import torch

    from napari_refocus.models.delpnet import autocast, to_input

    dev = torch.device(device)
    x = to_input(torch.rand(batch, 84, 84) * 2000 / 65535, dev)

    def run():
        with torch.inference_mode(), autocast(dev):
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run()
    return batch / best_of(run, repeat)


def speed_case(repeat: int, out_dir: str) -> dict:
    """One round of the speed cases in this process (2 threads): best of ``repeat`` per case;
    LB-DVD's outputs and levels saved in ``out_dir`` for comparison."""
    import torch

    import napari_refocus as nr
    from napari_refocus.models.loader import load_model

    torch.set_num_threads(2)
    out = {}
    for k, (name, img) in enumerate(speed_images().items()):
        for gate in (False, True):
            res = nr.refocus(img, method="lbdvd", device="cpu", never_worse=gate)
            out[name, gate] = best_of(lambda: nr.refocus(img, method="lbdvd", device="cpu", never_worse=gate), repeat)
            np.save(Path(out_dir) / f"{k}_{int(gate)}.npy", res.image)
        np.save(Path(out_dir) / f"{k}_levels.npy", res.defocus_map.levels)
    try:  # the network the map uses (int8 on the CPU when NAPARI_REFOCUS_INT8 asks)
        from napari_refocus.methods.canonical import delpnet

        model = delpnet(None, torch.device("cpu"))
    except ImportError:  # before methods.canonical
        model = load_model("delpnet", "cpu")
    try:
        from napari_refocus.methods.defocus import BATCH
    except ImportError:  # before the map's batch had a name
        BATCH = 256
    rates = {b: patches_per_second(model, repeat, b) for b in sorted({256, BATCH})}
    return {"lbdvd": {f"{n}|{g}": t for (n, g), t in out.items()}, "delpnet": rates, "map_batch": BATCH,
            "load": os.getloadavg()[0]}


INT8_LABEL = "this commit, NAPARI_REFOCUS_INT8=1"


def speed_lines(repeat: int, base_src=None, base_rev="", int8: bool = False) -> list[str]:
    import tempfile

    trees = {"now": None}
    if int8:  # the same tree with DelpNet in int8 on the CPU (methods.canonical.INT8_ENV)
        trees["int8"] = None
    if base_src is not None:
        trees["base"] = base_src
    envs = {"int8": {"NAPARI_REFOCUS_INT8": "1"}}
    best = {t: None for t in trees}
    dirs = {t: tempfile.mkdtemp(prefix=f"lbdvd_{t}_") for t in trees}
    loads = []
    for _ in range(repeat):  # rounds alternate between the trees, so both see the same load
        for tree, src in trees.items():
            r = _case(["--speed-case", str(3), dirs[tree]], src, envs.get(tree))
            loads.append(r["load"])
            if best[tree] is None:
                best[tree] = r
            else:
                for k, v in r["lbdvd"].items():
                    best[tree]["lbdvd"][k] = min(best[tree]["lbdvd"][k], v)
                for b, v in r["delpnet"].items():
                    best[tree]["delpnet"][b] = max(best[tree]["delpnet"][b], v)
    names = list(speed_images())
    labels = {"now": "this commit", "int8": INT8_LABEL, "base": f"baseline {base_rev}"}
    ref = "base" if "base" in trees else "now"
    head = (f"| image | tree | LB-DVD, gate off (s) | LB-DVD default, gate on (s) | max abs diff from the "
            f"{'baseline' if ref == 'base' else 'float32 map'} (counts, gate on) | classes equal (share of patches) |")
    lines = [head, "|---|---|---|---|---|---|"]
    for k, name in enumerate(names):
        for tree in trees:
            t = best[tree]["lbdvd"]
            diff, same = "", ""
            if tree != ref:
                a, b = (np.load(Path(dirs[x]) / f"{k}_1.npy") for x in (tree, ref))
                diff = f"{float(np.abs(a - b).max()):.3g} (of {float(b.max()):.0f})"
                la, lb = (np.load(Path(dirs[x]) / f"{k}_levels.npy") for x in (tree, ref))
                same = f"{bool(np.array_equal(la, lb))} ({float(np.mean(la == lb)):.1%})"
            label = labels[tree]
            lines.append(f"| {name} | {label} | **{t[f'{name}|False']:.3f}** | **{t[f'{name}|True']:.3f}** | "
                         f"{diff} | {same} |")
    lines.append("")
    for tree in trees:
        rates = ", ".join(f"batch {b}: **{v:,.0f}** patches/s" for b, v in best[tree]["delpnet"].items())
        kind = "int8" if tree == "int8" else "fused"
        lines.append(f"- DelpNet ({kind}, 2 threads, best of {repeat} x 3), {labels[tree]}: {rates} (the map's "
                     f"default batch: {best[tree]['map_batch']}).")
    lines += ["", f"Load average during the rounds: {min(loads):.1f}-{max(loads):.1f}."]
    return lines


def set_constant(item: str) -> None:
    """``MODULE.NAME=JSON``: set ``napari_refocus.MODULE.NAME`` (an existing module constant) to the value."""
    import importlib

    target, _, value = item.partition("=")
    module_name, _, name = target.rpartition(".")
    if not module_name or not value:
        raise SystemExit(f"--case-set: expected MODULE.NAME=JSON, got {item!r}")
    module = importlib.import_module(f"napari_refocus.{module_name}")
    if not hasattr(module, name):
        raise SystemExit(f"--case-set: napari_refocus.{module_name} has no {name}")
    setattr(module, name, json.loads(value))


def main(argv=None):
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "SIZE"))
    ap.add_argument("--case-level", type=int, default=5,
                    help="--case: the test image's defocus level (14 = 28 um: lbdvd's pass beyond the top class)")
    ap.add_argument("--case-params", default=None, help="--case: the method's keywords as JSON")
    ap.add_argument("--case-set", action="append", default=[], metavar="MODULE.NAME=JSON",
                    help="--case: set a constant of a napari_refocus module first (repeatable), e.g. "
                         "methods.gated.BLEND_STRIP_BYTES=262144: what-ifs without editing the package")
    ap.add_argument("--speed-case", nargs=2, metavar=("REPEAT", "OUT_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1024, 3072])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--baseline", metavar="REV", help="also run every case on this commit, interleaved")
    ap.add_argument("--only", choices=("memory", "speed"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--int8", action="store_true", help="speed: also the same tree with NAPARI_REFOCUS_INT8=1")
    ap.add_argument("--memory-threads", type=int, default=2,
                    help="torch threads of the memory cases (1 on a machine too loaded for 2)")
    args = ap.parse_args(argv)
    os.environ["MEMORY_SPEED_THREADS"] = str(args.memory_threads)
    if args.case:
        params = json.loads(args.case_params) if args.case_params else None
        for item in args.case_set:
            set_constant(item)
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.case_level, params)))
        return
    if args.speed_case:
        print(json.dumps(speed_case(int(args.speed_case[0]), args.speed_case[1])))
        return
    head = (f"Command: `python benchmarks/memory_speed.py {' '.join(sys.argv[1:])}`".rstrip() + f"` (commit "
            f"{git_rev()}); machine: {machine()}; load average at the start {os.getloadavg()[0]:.1f} (the "
            "machine is shared with other jobs).").replace("` `", " ").replace("`` ", "` ")
    with tempfile.TemporaryDirectory() as tmp:
        base_src = export_tree(args.baseline, Path(tmp)) if args.baseline else None
        if args.only != "speed":
            t0 = time.perf_counter()
            table = memory_table(args.sizes, args.methods, base_src, args.baseline or "")
            publish("memory", ["## Memory", "", head, "",
                               "Peak resident memory above the baseline per input pixel (uint16 input) of an in-memory "
                               "`refocus` with the method's defaults, each case in a fresh process; baseline = RSS "
                               "after the imports, the network loaded and warmed up, the input made and the warm-up's "
                               "freed heap handed back (glibc `malloc_trim`; the input is part of the baseline, the "
                               "output part of the peak). Target: <= 24 B/px.", "", *table,
                               "", f"{time.perf_counter() - t0:.0f} s in all."], write=not args.no_write)
        if args.only != "memory":
            publish("lbdvd-speed", ["## LB-DVD speed", "", head, "",
                                    *speed_lines(args.repeat, base_src, args.baseline or "", args.int8), "",
                                    "Target: LB-DVD <= 0.2 s for 696x520 on 2 cores, DelpNet >= 3,000 patches/s."],
                    write=not args.no_write)


if __name__ == "__main__":
    main()
