"""Batch over many images on dask: outputs, report, restart after a kill, external scheduler."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.io.batch import expand_inputs, run_batch
from napari_refocus.core.forward import cast_like

RL = {"level": 3, "iterations": 5}


@pytest.fixture
def folder(tmp_path, infocus):
    """Six small real images (crops of the shipped BBBC006 image)."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):
        nr.write_image(src / f"img_{k}.tif", np.ascontiguousarray(infocus[k * 40 : k * 40 + 168, :252]), pixel_um=0.65)
    return src


def _pixels(outdir):
    return {p.name: nr.read_image(p)[0] for p in sorted(Path(outdir).glob("*_refocused.tif"))}


def test_expand_inputs(folder):
    assert len(expand_inputs([folder])) == 6
    assert len(expand_inputs([str(folder / "img_[0-2].tif"), folder / "img_1.tif"])) == 3
    with pytest.raises(ValueError, match="no such file"):
        expand_inputs([folder / "nope.tif"])


def test_batch_local_cluster(folder, tmp_path):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    report = run_batch([folder], tmp_path / "out", method="rl", workers=2, params=RL, progress=False)
    assert report["done"] == 6 and report["failed"] == 0 and report["workers"] == 2
    out = _pixels(tmp_path / "out")
    assert len(out) == 6
    ref = nr.deconvolve(nr.read_image(folder / "img_0.tif")[0], level=3, iterations=5)
    np.testing.assert_array_equal(out["img_0_refocused.tif"], cast_like(ref, np.uint16))
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("input,output,status")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs untouched
    again = run_batch([folder], tmp_path / "out", method="rl", workers=1, params=RL, progress=False)
    assert again["done_before"] == 6 and again["done"] == 0


def test_kill_and_restart_gives_the_same_outputs(folder, tmp_path):
    ref = run_batch([folder], tmp_path / "ref", method="rl", workers=1, params=RL, progress=False)
    assert ref["done"] == 6
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_refocus.cli", "batch", str(folder), "-o", str(out),
           "--method", "rl", "--level", "3", "--iterations", "5", "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("*_refocused.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its dask worker processes
    proc.wait()
    finished = len(list(out.glob("*_refocused.json")))
    assert 2 <= finished < 6, finished
    # a partial file as a kill during a write would leave it
    (out / ".img_5_refocused.tif.abc.tmp").write_bytes(b"partial")
    rc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["done_before"] >= finished and report["done"] + report["done_before"] == 6
    assert not list(out.glob(".*.tmp"))
    got, want = _pixels(out), _pixels(tmp_path / "ref")
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_external_dask_scheduler(folder, tmp_path):
    pytest.importorskip("distributed")
    sched_file = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    scheduler = subprocess.Popen([str(bindir / "dask"), "scheduler", "--scheduler-file", str(sched_file),
                                  "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen([str(bindir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                   "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        report = run_batch([folder], tmp_path / "out", method="rl", scheduler=address, params=RL, progress=False)
        assert report["done"] == 6 and report["scheduler"] == address
        # the work ran in the separately started worker, not in this process
        assert all(not r["worker"].endswith(f":{os.getpid()}") for r in report["records"])
        assert len(_pixels(tmp_path / "out")) == 6
    finally:
        for p in (worker, scheduler):
            if p is not None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)


WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "delpnet.safetensors"


@pytest.mark.skipif(not WEIGHTS.exists(), reason="weights/delpnet.safetensors missing")
def test_triage_copies_in_focus_images_and_restores_defocused_ones(tmp_path, infocus):
    from napari_refocus.io.batch import below_threshold_untouched, process_image

    crop = np.ascontiguousarray(infocus[:252, :336])
    nr.write_image(tmp_path / "sharp.tif", crop, pixel_um=0.65)
    nr.write_image(tmp_path / "blurred.tif", nr.simulate(crop, level=8, seed=0), pixel_um=0.65)
    out = tmp_path / "out"
    sharp = process_image(tmp_path / "sharp.tif", out, method="lbdvd", min_level=4)
    blurred = process_image(tmp_path / "blurred.tif", out, method="lbdvd", min_level=4)
    assert sharp["focus_level"] < 4 <= blurred["focus_level"]
    assert sharp["action"].startswith("copied") and blurred["action"] == "restored"
    np.testing.assert_array_equal(nr.read_image(out / "sharp_refocused.tif")[0], crop)
    assert not np.array_equal(nr.read_image(out / "blurred_refocused.tif")[0], nr.read_image(tmp_path / "blurred.tif")[0])
    # patch-level triage: patches below the threshold become level 0 (left untouched)
    dmap = nr.defocus_map(nr.read_image(tmp_path / "blurred.tif")[0], device="cpu")
    kept = below_threshold_untouched(dmap, 9)
    assert ((kept.levels == 0) | (kept.levels >= 9)).all()
    assert (kept.levels[dmap.levels == 11] == 11).all()
