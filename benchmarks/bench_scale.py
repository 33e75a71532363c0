"""Scale-out: a 16384x16384 image under bounded memory, and a folder of 200 images on 1 vs 2 workers.

    python benchmarks/bench_scale.py                 # both parts, writes BENCHMARKS.md
    python benchmarks/bench_scale.py --size 8192     # a smaller big image
    python benchmarks/bench_scale.py --skip-big      # only the batch part

Big image: a 16384x16384 uint16 tiled TIFF mosaic of real BBBC006 cells (the shipped in-focus
image, mirrored and defocused by the simulator at levels 0..9) is refocused with
``napari-refocus refocus --chunked`` (lbdvd, read through tifffile's zarr store, written block
by block into a tiled BigTIFF) in a child process whose peak resident memory is read from
``getrusage``. A grid-aligned crop is also refocused in memory; away from the crop's own
borders (where the in-memory run sees the crop edge instead of the real neighbours) both
must agree to within rounding. Batch: 200 BBBC-sized images (the 14 in-focus BBBC006 w2 images
defocused at random levels) through ``napari-refocus batch`` with 1 and then 2 local workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import SHARED_DATA, git_rev, machine, write_section  # noqa: E402

import napari_refocus as nr  # noqa: E402

CLI = str(Path(sys.executable).parent / "napari-refocus")


def make_mosaic(path: Path, size: int, tile: int = 1024) -> None:
    """A size x size uint16 mosaic of defocused real cells, written tile by tile."""
    import tifffile

    from napari_refocus.io.samples import infocus_image

    base = infocus_image()[:512, :512]
    variants = [nr.simulate(base, level=lv % 10, seed=lv) for lv in range(10)]

    def tiles():
        for ty in range(0, size, tile):
            for tx in range(0, size, tile):
                out = np.empty((tile, tile), np.uint16)
                for y in range(0, tile, 512):
                    for x in range(0, tile, 512):
                        gy, gx = (ty + y) // 512, (tx + x) // 512
                        v = variants[(gy * 7 + gx * 3) % 10]
                        v = v[::-1] if gy % 2 else v
                        out[y:y + 512, x:x + 512] = v[:, ::-1] if gx % 2 else v
                yield out

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(tile, tile), bigtiff=True,
                     resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")


def big_image(report: list, size: int, workdir: Path) -> None:
    import tifffile
    import zarr

    src = workdir / "big.tif"
    t0 = time.perf_counter()
    make_mosaic(src, size)
    print(f"made {size}x{size} input in {time.perf_counter() - t0:.1f} s", flush=True)
    out_dir = workdir / "out"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([CLI, "refocus", str(src), "-o", str(out_dir), "--method", "lbdvd", "--chunked",
                           "--device", "cpu", "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    # crop check: grid-aligned origin; compare away from the crop border (patch + context + margin)
    y0, x0, ch, cw = 42 * 100, 42 * 150, 42 * 24, 42 * 32
    crop = np.asarray(zarr.open(tifffile.imread(src, aszarr=True), mode="r")[y0:y0 + ch, x0:x0 + cw])
    mem = nr.refocus(crop, method="lbdvd", device="cpu").image
    from napari_refocus.core.forward import cast_like

    mem = cast_like(mem, np.uint16)
    outp = out_dir / "big_refocused.tif"
    chunked = np.asarray(zarr.open(tifffile.imread(outp, aszarr=True), mode="r")[y0:y0 + ch, x0:x0 + cw])
    m = 84 + 13 + 42
    diff = np.abs(chunked[m:-m, m:-m].astype(np.int64) - mem[m:-m, m:-m].astype(np.int64))
    mpx = size * size / 1e6
    report.append("\n".join([
        f"Big image: {size}x{size} uint16 ({mpx:.0f} Mpx, {src.stat().st_size / 2**20:.0f} MiB on disk), "
        "`napari-refocus refocus big.tif -o out --method lbdvd --chunked --device cpu` (blocks of 2016x2016).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| wall time | {wall:.0f} s |",
        f"| throughput | {mpx / wall:.3f} Mpx/s |",
        f"| peak resident memory of the refocus process | {peak_kb / 2**20:.2f} GiB (limit 3 GB) |",
        f"| in-memory run on a {ch}x{cw} crop vs the chunked output (interior, {ch - 2 * m}x{cw - 2 * m}) | "
        f"max |diff| = {diff.max()} counts, {np.count_nonzero(diff)} pixels differ |",
        "",
        f"(peak RSS before the child ran: {before / 2**20:.2f} GiB; the child reported "
        f"{line.get('megapixels_per_s')} Mpx/s excluding start-up.)",
    ]))
    print(report[-1], flush=True)


def batch(report: list, n_images: int, workdir: Path) -> None:
    files = sorted((SHARED_DATA / "BBBC006_w2_infocus" / "examples" / "bbbc_subset").glob("*.tif"))
    if not files:
        report.append("Batch: ../shared/data not found; skipped.")
        return
    src = workdir / "plate"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n_images):
        gt = nr.read_image(files[k % len(files)])[0]
        nr.write_image(src / f"well_{k:03d}.tif", nr.simulate(gt, level=int(rng.integers(1, 11)), seed=k),
                       pixel_um=0.65)
    rows = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        proc = subprocess.run([CLI, "batch", str(src), "-o", str(workdir / f"out{workers}"), "--method", "lbdvd",
                               "--workers", str(workers), "-q"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr)
        rep = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((workers, wall, rep))
        print(workers, wall, rep, flush=True)
    t1 = rows[0][1]
    lines = [f"Batch: {n_images} images of 520x696 uint16 (BBBC006 w2 defocused at random levels 1..10), "
             "`napari-refocus batch plate/ -o out --method lbdvd --workers N` (local dask cluster, "
             "torch threads = cores / workers).", "",
             "| workers | wall time (s) | images/s | speed-up vs 1 worker |", "|---|---|---|---|"]
    for workers, wall, rep in rows:
        lines.append(f"| {workers} | {wall:.1f} | {n_images / wall:.2f} | {t1 / wall:.2f}x |")
    report.append("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    report = [f"Command: `python benchmarks/bench_scale.py{' --size ' + str(args.size) if args.size != 16384 else ''}` "
              f"(commit {git_rev()}); machine: {machine()}."]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        if not args.skip_big:
            big_image(report, args.size, Path(tmp))
        if not args.skip_batch:
            batch(report, args.images, Path(tmp))
    if not args.no_write:
        write_section("bench_scale", "## Scale-out: big image and batch\n\n" + "\n\n".join(report))


if __name__ == "__main__":
    main()
