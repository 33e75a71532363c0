"""Batch refocusing of many images on a dask cluster (local by default), restartable.

Each image is one task: read, defocus map, restore (or copy, when triage says it is already
in focus), write ``<stem>_refocused.tif`` atomically, then a ``<stem>_refocused.json``
sidecar with its record. A killed batch restarted with the same command skips every image
whose sidecar exists, removes temporary files left by the kill, and ends with the same
outputs and report as an uninterrupted run. Inputs are never written.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
from pathlib import Path

from ..core.torchstate import torch_threads
from .pipeline import below_threshold_untouched  # noqa: F401  (re-exported: batch triage)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
REPORT_FIELDS = [
    "input", "output", "status", "action", "method", "focus_level", "focus_certainty",
    "seconds_read", "seconds_map", "seconds_restore", "seconds_write", "seconds_total", "worker", "axes",
]


def expand_inputs(inputs) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a sorted list of files."""
    files: list[Path] = []
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif any(ch in item for ch in "*?["):
            files += sorted(Path(q) for q in glob.glob(item) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"no such file: {item}")
    seen, out = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    if not out:
        raise ValueError("no input images found")
    return out


def output_paths(path: Path, outdir: Path):
    """(image, sidecar) output paths of one input."""
    stem = Path(path).stem
    return outdir / f"{stem}_refocused.tif", outdir / f"{stem}_refocused.json"


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def clean_partial(outdir: Path) -> list[Path]:
    """Remove temporary files a killed run left in ``outdir``; returns them."""
    removed = []
    for tmp in Path(outdir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def process_image(path, outdir, *, method="lbdvd", device="cpu", min_level=None, patch_min_level=None,
                  threads=None, params=None, axes=None, pixel_um=None, optics=None, optics_file=None) -> dict:
    """Refocus one image file into ``outdir`` and return its record (runs on a worker).

    The work is :func:`napari_refocus.io.pipeline.refocus_file` (stacks plane by plane, RGB
    channel by channel; ``min_level`` / ``patch_min_level``: focus triage); the record is also
    written to the image's sidecar, which marks it done for a restarted batch.
    """
    import socket

    from .pipeline import refocus_file

    path, outdir = Path(path), Path(outdir)
    out, sidecar = output_paths(path, outdir)
    if sidecar.exists() and out.exists():
        record = json.loads(sidecar.read_text())
        record["status"] = "done-before"
        return record
    with torch_threads(threads):
        record = refocus_file(path, out, method=method, device=device, params=params, axes=axes,
                              pixel_um=pixel_um, optics=optics, optics_file=optics_file, min_level=min_level,
                              patch_min_level=patch_min_level, chunked=False, overwrite=True)
    record["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    _atomic_json(sidecar, record)
    return record


def common_optics(records) -> dict:
    """The optics and their sources, when every image that has them used the same; else a
    pointer to the per-image records."""
    seen = {json.dumps([r["optics"], r["optics_source"]], sort_keys=True) for r in records if "optics" in r}
    if len(seen) == 1:
        optics, sources = json.loads(seen.pop())
        return {"optics": optics, "optics_source": sources}
    return {"optics": "per image: see report.json"} if seen else {}


def _client(scheduler, workers):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_batch(inputs, outdir, *, method="lbdvd", scheduler=None, workers=None, device="cpu", min_level=None,
              patch_min_level=None, params=None, axes=None, pixel_um=None, optics=None, optics_file=None,
              progress=True, on_record=None) -> dict:
    """Refocus every input on a dask cluster; write ``report.csv`` and ``report.json``.

    ``scheduler``: address of a running ``dask.distributed`` scheduler (e.g.
    ``tcp://127.0.0.1:8786``); None starts a local cluster of ``workers`` processes.
    ``params``, ``axes``, ``pixel_um``, ``optics``, ``optics_file``, ``min_level``,
    ``patch_min_level``: as for :func:`process_image` (and
    :func:`~napari_refocus.io.pipeline.refocus_file`). Returns the report dict (records in input order, totals).
    """
    from dask.distributed import as_completed

    from .optics import load_optics_file
    from .pipeline import method_params

    method_params(method, params)  # fail early on a wrong name or parameter, or a bad optics file
    optics_file = load_optics_file(optics_file) if optics_file else None  # read here: workers may be elsewhere
    files = expand_inputs(inputs)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.resolve().parent == outdir.resolve() and f.stem.endswith("_refocused"):
            raise ValueError(f"{f} looks like an output of an earlier run; keep inputs and outputs apart")
    removed = clean_partial(outdir)
    n_cpu = os.cpu_count() or 1
    threads = max(1, n_cpu // int(workers or 1)) if not scheduler else None
    t0 = time.perf_counter()
    client, cluster = _client(scheduler, workers)
    records: dict[str, dict] = {}
    bar = None
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        futures = {
            client.submit(process_image, f, outdir, method=method, device=device, min_level=min_level,
                          patch_min_level=patch_min_level, threads=threads, params=params, axes=axes,
                          pixel_um=pixel_um, optics=optics, optics_file=optics_file,
                          key=f"refocus-{i}-{f.name}", pure=False): f
            for i, f in enumerate(files)
        }
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(files), desc=f"batch {method}", unit="image")
        for fut in as_completed(futures):
            f = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed image is reported, the batch goes on
                rec = {"input": str(f), "output": "", "status": "failed", "action": f"{type(exc).__name__}: {exc}"}
            records[str(f)] = rec
            if on_record:
                on_record(rec)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [records[str(f)] for f in files]
    report = {
        "method": method,
        "outdir": str(outdir),
        "images": len(files),
        "done": sum(r["status"] == "done" for r in ordered),
        "done_before": sum(r["status"] == "done-before" for r in ordered),
        "failed": sum(r["status"] == "failed" for r in ordered),
        "workers": n_workers,
        "scheduler": scheduler or "local",
        "seconds": round(time.perf_counter() - t0, 3),
        "temporary_files_removed": [str(p) for p in removed],
        **common_optics(ordered),
        "records": ordered,
    }
    _atomic_json(outdir / "report.json", report)
    tmp = outdir / ".report.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=REPORT_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(ordered)
    os.replace(tmp, outdir / "report.csv")
    return report

