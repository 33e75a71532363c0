"""Batch refocusing of many images on a dask cluster (local by default), restartable.

Each image is one task: read, defocus map, restore (or copy, when triage says it is already
in focus), write ``<stem>_refocused.tif`` atomically, then a ``<stem>_refocused.json``
sidecar with its record. Outputs mirror the input tree below the inputs' common folder
(``a/x.tif`` and ``b/x.tif`` give ``out/a/x_refocused.tif`` and ``out/b/x_refocused.tif``;
same-stem files of one folder, ``x.tif`` and ``x.png``, get ``x_tif_refocused.tif`` and
``x_png_refocused.tif``), so no two inputs ever share an output.

The sidecar holds ``job_hash``: a SHA-256 of the method, its parameters (defaults filled in),
the optics flags and optics file, the axes and triage options, the SHA-256 of every weights file
the method loads, the package version, and the input file's size and modification time. A
restarted batch skips an image only when its sidecar's hash is this run's and its output
exists with the size the sidecar recorded; any other image (never finished, changed options or
weights, a damaged output) is computed again. Temporary files left by a kill are removed, so a
killed and restarted batch ends with the same outputs and report as an uninterrupted run.
Inputs are never written.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import time
from pathlib import Path

from ..core.torchstate import torch_threads
from .pipeline import below_threshold_untouched  # noqa: F401  (re-exported: batch triage)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".czi", ".nd2", ".lif", ".zarr")  # .zarr: OME-Zarr stores (folders)
REPORT_FIELDS = [
    "input", "output", "status", "action", "method", "focus_level", "focus_certainty",
    "seconds_read", "seconds_map", "seconds_restore", "seconds_write", "seconds_total", "worker", "axes",
    "job_hash",
]


def expand_inputs(inputs) -> list[Path]:
    """Files, folders (the images directly inside them, sorted) and glob patterns (``**``
    reaches into subfolders) -> a sorted list of files."""
    files: list[Path] = []
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir() and p.suffix.lower() != ".zarr":
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES
                            and (q.is_file() or q.suffix.lower() == ".zarr"))
        elif any(ch in item for ch in "*?["):
            files += sorted(Path(q) for q in glob.glob(item, recursive=True)
                            if Path(q).suffix.lower() in IMAGE_SUFFIXES and Path(q).is_file())
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
        nested = [str(item) for item in inputs if Path(item).is_dir() and Path(item).suffix.lower() != ".zarr"]
        hint = (f"; a folder's subfolders are not searched: for a whole tree give a glob such as "
                f"'{Path(nested[0]) / '**' / '*.tif'}'") if nested else ""
        raise ValueError(f"no input images found{hint}")
    return out


def output_paths(path: Path, outdir: Path, fmt: str = "tiff", *, name: str | None = None):
    """(image, sidecar) output paths of one input (``fmt``: "tiff" or "ome-zarr"):
    ``outdir/<name>_refocused.tif`` (or ``.ome.zarr``) and ``.json``; ``name`` defaults to
    the input's stem."""
    from .formats import output_name, output_stem

    if name is None:
        return Path(outdir) / output_name(path, "_refocused", fmt), Path(outdir) / f"{output_stem(path)}_refocused.json"
    suffix = output_name("x", "", fmt)[1:]  # checks fmt
    return Path(outdir) / f"{name}_refocused{suffix}", Path(outdir) / f"{name}_refocused.json"


def output_map(files, outdir, fmt: str = "tiff") -> dict[Path, tuple[Path, Path]]:
    """``{input: (image, sidecar)}``: outputs mirror the inputs' folders below their common
    folder, and inputs of one folder that share a stem (``x.tif``, ``x.png``) are told apart
    by their extension (``x_tif``, ``x_png``). Raises ValueError when an output would be an
    input, or an input looks like an output of an earlier run inside ``outdir``."""
    from .formats import output_stem

    outdir = Path(outdir)
    resolved = [Path(f).resolve() for f in files]
    try:
        root = Path(os.path.commonpath([r.parent for r in resolved]))
    except ValueError:  # different drives: no common folder; keep each input's full path
        root = None
    folders = [outdir / (r.parent.relative_to(root) if root else Path(*r.parent.parts[1:])) for r in resolved]
    stems = [output_stem(r) for r in resolved]
    count: dict[tuple, int] = {}
    for folder, stem in zip(folders, stems):
        count[(folder, stem.lower())] = count.get((folder, stem.lower()), 0) + 1
    out = {}
    for f, folder, stem, r in zip(files, folders, stems, resolved):
        unique = count[(folder, stem.lower())] == 1
        name = stem if unique else f"{stem}_{r.name[len(stem):].lstrip('.').replace('.', '_').lower()}"
        out[Path(f)] = output_paths(r, folder, fmt, name=name)
    inputs = set(resolved)
    out_root = outdir.resolve()
    for f, r, stem in zip(files, resolved, stems):
        if out[Path(f)][0].resolve() in inputs:
            raise ValueError(f"the output of {f} would be an input ({out[Path(f)][0]}); choose another outdir")
        if stem.endswith("_refocused") and out_root in r.parents:
            raise ValueError(f"{f} looks like an output of an earlier run; keep inputs and outputs apart")
    return out


def job_hash(method, params=None, *, axes=None, pixel_um=None, optics=None, optics_file=None, min_level=None,
             patch_min_level=None, fmt: str = "tiff") -> tuple[str, dict]:
    """``(SHA-256 hex, what it hashes)`` of everything besides the input that decides a batch
    image's output: the method, its parameters as parsed (defaults filled in, so naming a
    default changes nothing), the optics flags and optics file values, the axes, the triage
    levels, the output format, the SHA-256 of each weights file the method loads (shipped, or
    ``weights=``) and the package version."""
    from ..core.resources import package_version
    from ..methods.registry import get_method
    from ..methods.run import split_inputs
    from ..models.loader import file_sha256, resolve_path
    from .pipeline import method_params

    m = get_method(method)
    # the optics flags are hashed as given: folded into the defaults here they could clash with
    # a file's own metadata (an NA of 1.4 with the file's oil immersion)
    parsed = m.parse(**split_inputs(m, method_params(m, params))[0])
    custom = getattr(parsed, "weights", None)
    weights = {str(n): file_sha256(resolve_path(n)) for n in ([custom] if custom else m.weights)}
    what = {"method": m.name, "parameters": parsed.as_dict(), "optics_flags": dict(optics or {}),
            "pixel_um": pixel_um, "optics_file": optics_file, "axes": axes, "min_level": min_level,
            "patch_min_level": patch_min_level, "format": fmt, "weights_sha256": weights,
            "napari_refocus_version": package_version()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest(), what


def image_hash(job: str, path) -> str:
    """The hash of one input's job: ``job`` with the input's size and modification time (a
    replaced input is computed again)."""
    st = Path(path).stat()
    return hashlib.sha256(f"{job}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def _size(path: Path):
    return path.stat().st_size if path.is_file() else None  # an OME-Zarr store: a folder


def finished(out: Path, sidecar: Path, digest: str | None):
    """The sidecar's record when ``out`` is a complete output of the job ``digest`` (the
    sidecar's hash matches and a file output has the size it recorded); else None."""
    if not (sidecar.exists() and out.exists()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if digest is not None and record.get("job_hash") != digest:
        return None
    if record.get("output_bytes") is not None and _size(out) != record["output_bytes"]:
        return None
    return record


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def clean_partial(outdir: Path) -> list[Path]:
    """Remove temporary files a killed run left in ``outdir`` and its folders; returns them."""
    removed = []
    for tmp in Path(outdir).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def process_image(path, outdir, *, method="lbdvd", device="cpu", min_level=None, patch_min_level=None,
                  threads=None, params=None, axes=None, pixel_um=None, optics=None, optics_file=None,
                  fmt: str = "tiff", output=None, digest=None) -> dict:
    """Refocus one image file into ``outdir`` and return its record (runs on a worker).

    The work is :func:`napari_refocus.io.pipeline.refocus_file` (stacks plane by plane, RGB
    channel by channel; ``min_level`` / ``patch_min_level``: focus triage); the record is also
    written to the image's sidecar, which marks it done for a restarted batch. ``output``:
    ``(image, sidecar)`` paths (default :func:`output_paths` in ``outdir``); ``digest``: this
    image's job hash (:func:`image_hash`; None: computed from the arguments). A finished output
    of the same hash is kept (status ``done-before``); any other is computed again.
    """
    import socket

    from .pipeline import refocus_file

    path, outdir = Path(path), Path(outdir)
    out, sidecar = (Path(p) for p in (output or output_paths(path, outdir, fmt)))
    if digest is None:
        digest = image_hash(job_hash(method, params, axes=axes, pixel_um=pixel_um, optics=optics,
                                     optics_file=optics_file, min_level=min_level, patch_min_level=patch_min_level,
                                     fmt=fmt)[0], path)
    # in memory or block by block as the CLI decides (a store always by blocks, a TIFF when an
    # in-memory run would not fit: core.memory.needs_blocks), unless triage needs the image in memory
    triage = min_level is not None or bool(patch_min_level)
    before = finished(out, sidecar, digest)
    if before is not None:
        before["status"] = "done-before"
        return before
    with torch_threads(threads):
        record = refocus_file(path, out, method=method, device=device, params=params, axes=axes,
                              pixel_um=pixel_um, optics=optics, optics_file=optics_file, min_level=min_level,
                              patch_min_level=patch_min_level, chunked=False if triage else None, overwrite=True)
    record["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    record["job_hash"] = digest
    record["output_bytes"] = _size(out)
    _atomic_json(sidecar, record)
    return record


def _task(path, outdir, **kwargs) -> dict:
    """:func:`process_image` as a batch task: a failure is a ``failed`` record, not an
    exception (the worker then logs no traceback; the report and the summary say what failed)."""
    try:
        return process_image(path, outdir, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failed image is reported, the batch goes on
        out = kwargs.get("output")
        return {"input": str(path), "output": str(out[0]) if out else "", "status": "failed",
                "action": " ".join(f"{type(exc).__name__}: {exc}".split())}


def common_optics(records) -> dict:
    """The optics and their sources, when every image that has them used the same; else a
    pointer to the per-image records."""
    seen = {json.dumps([r["optics"], r["optics_source"]], sort_keys=True) for r in records if "optics" in r}
    if len(seen) == 1:
        optics, sources = json.loads(seen.pop())
        return {"optics": optics, "optics_source": sources}
    return {"optics": "per image: see report.json"} if seen else {}


def summary_line(method, images: int, *, done: int, done_before: int, failed: int, outdir) -> str:
    """The batch in one line: ``batch lbdvd: 5 done, 2 skipped (done before), 1 failed of 8
    images; report: out/report.csv``."""
    return (f"batch {method}: {done} done, {done_before} skipped (done before), {failed} failed of {images} "
            f"images; report: {Path(outdir) / 'report.csv'}")


def _client(scheduler, workers):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_batch(inputs, outdir, *, method="lbdvd", scheduler=None, workers=None, device="cpu", min_level=None,
              patch_min_level=None, params=None, axes=None, pixel_um=None, optics=None, optics_file=None,
              progress=True, on_record=None, fmt: str = "tiff") -> dict:
    """Refocus every input on a dask cluster; write ``report.csv`` and ``report.json``.

    ``scheduler``: address of a running ``dask.distributed`` scheduler (e.g.
    ``tcp://127.0.0.1:8786``); None starts a local cluster of ``workers`` processes.
    ``params``, ``axes``, ``pixel_um``, ``optics``, ``optics_file``, ``min_level``,
    ``patch_min_level``, ``fmt``: as for :func:`process_image` (and
    :func:`~napari_refocus.io.pipeline.refocus_file`). Returns the report dict (records in input order, totals).
    """
    from dask.distributed import as_completed

    from ..core.validation import check_optics_mapping, check_options
    from .optics import load_optics_file

    # every option checked before any work: a bad value is one error, not one failure per image
    check_options({"workers": workers, "min_level": min_level, "patch_min_level": patch_min_level,
                   "pixel_um": pixel_um}, where="batch")
    check_optics_mapping(optics, where="optics")
    optics_file = load_optics_file(optics_file) if optics_file else None  # read here: workers may be elsewhere
    check_optics_mapping({**(optics_file or {}), **(optics or {}), **({"pixel_um": pixel_um} if pixel_um else {})},
                         where="optics")
    # a wrong method, parameter or weights file fails here (job_hash parses and hashes them)
    digest, _ = job_hash(method, params, axes=axes, pixel_um=pixel_um, optics=optics, optics_file=optics_file,
                         min_level=min_level, patch_min_level=patch_min_level, fmt=fmt)
    files = expand_inputs(inputs)
    outdir = Path(outdir)
    targets = output_map(files, outdir, fmt)
    outdir.mkdir(parents=True, exist_ok=True)
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
            client.submit(_task, f, outdir, method=method, device=device, min_level=min_level,
                          patch_min_level=patch_min_level, threads=threads, params=params, axes=axes,
                          pixel_um=pixel_um, optics=optics, optics_file=optics_file, fmt=fmt,
                          output=targets[f], digest=image_hash(digest, f),
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
            except Exception as exc:  # noqa: BLE001 - a lost worker: reported, the batch goes on
                rec = {"input": str(f), "output": str(targets[f][0]), "status": "failed",
                       "action": " ".join(f"{type(exc).__name__}: {exc}".split())}
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
    counts = {key: sum(r["status"] == status for r in ordered)
              for key, status in (("done", "done"), ("done_before", "done-before"), ("failed", "failed"))}
    report = {
        "method": method,
        "outdir": str(outdir),
        "images": len(files),
        **counts,
        "summary": summary_line(method, len(files), **counts, outdir=outdir),
        "job_hash": digest,
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

