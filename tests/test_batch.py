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
from napari_refocus.core.forward import cast_like
from napari_refocus.io.batch import expand_inputs, run_batch

# never_worse off: these crops are in focus, and the gate gives them back as they are; the tests
# compare the outputs with Richardson-Lucy of their own input, so that a mixed-up file shows
RL = {"level": 3, "iterations": 5, "never_worse": False}


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
    # a plate folder with one subfolder per well: a folder is read one level deep, and the
    # error names the glob that reaches the whole tree
    plate = folder.parent / "plate"
    (plate / "A01").mkdir(parents=True)
    (folder / "img_0.tif").rename(plate / "A01" / "img_0.tif")
    with pytest.raises(ValueError, match=r"no input images found; a folder's subfolders are not searched: .*"
                                         r"plate/\*\*/\*\.tif"):
        expand_inputs([plate])
    assert expand_inputs([str(plate / "**" / "*.tif")]) == [plate / "A01" / "img_0.tif"]


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
           "--method", "rl", "--level", "3", "--iterations", "5", "--workers", "1", "--no-never-worse", "-q"]
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


# ------------------------------------------------------------ outputs never mixed; restart by hash
def _deconvolved(path, iterations=5):
    image = nr.read_image(path)[0]
    return cast_like(nr.deconvolve(image, level=3, iterations=iterations), image.dtype)


def test_same_named_files_in_two_folders_get_two_outputs(tmp_path, infocus):
    for k, sub in enumerate(("a", "b")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        nr.write_image(tmp_path / "in" / sub / "x.tif", np.ascontiguousarray(infocus[k * 200 : k * 200 + 168, :252]),
                       pixel_um=0.65)
    nr.write_image(tmp_path / "in" / "a" / "x.png", np.ascontiguousarray(infocus[300:468, 252:504]))
    inputs = [tmp_path / "in" / "a", tmp_path / "in" / "b"]
    report = run_batch(inputs, tmp_path / "out", method="rl", workers=1, params=RL, progress=False)
    assert report["done"] == 3 and report["failed"] == 0
    outputs = sorted(str(Path(r["output"]).relative_to(tmp_path / "out")) for r in report["records"])
    # the input tree mirrored below the common folder; one folder's x.tif and x.png told apart
    assert outputs == ["a/x_png_refocused.tif", "a/x_tif_refocused.tif", "b/x_refocused.tif"]
    np.testing.assert_array_equal(nr.read_image(tmp_path / "out/a/x_tif_refocused.tif")[0],
                                  _deconvolved(tmp_path / "in/a/x.tif"))
    np.testing.assert_array_equal(nr.read_image(tmp_path / "out/b/x_refocused.tif")[0],
                                  _deconvolved(tmp_path / "in/b/x.tif"))
    assert not np.array_equal(nr.read_image(tmp_path / "out/a/x_tif_refocused.tif")[0],
                              nr.read_image(tmp_path / "out/b/x_refocused.tif")[0])


def test_restart_recomputes_an_image_whose_options_changed_or_output_is_damaged(tmp_path, infocus):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(2):
        nr.write_image(src / f"img_{k}.tif", np.ascontiguousarray(infocus[k * 60 : k * 60 + 168, :252]), pixel_um=0.65)
    out = tmp_path / "out"
    first = run_batch([src], out, method="rl", workers=1, params=RL, progress=False)
    assert first["done"] == 2
    # the same options: nothing recomputed
    same = run_batch([src], out, method="rl", workers=1, params={**RL, "psf_size": 37},
                     progress=False)
    assert same["done_before"] == 2 and same["done"] == 0 and same["job_hash"] == first["job_hash"]
    # one more iteration: every image again, with the new result
    more = run_batch([src], out, method="rl", workers=1, params={**RL, "iterations": 6}, progress=False)
    assert more["done"] == 2 and more["done_before"] == 0 and more["job_hash"] != first["job_hash"]
    np.testing.assert_array_equal(nr.read_image(out / "img_0_refocused.tif")[0],
                                  _deconvolved(src / "img_0.tif", iterations=6))
    sidecar = json.loads((out / "img_0_refocused.json").read_text())
    assert sidecar["job_hash"] != first["records"][0]["job_hash"]
    # a damaged (truncated) output and a replaced input are computed again; the other image is kept
    data = (out / "img_0_refocused.tif").read_bytes()
    (out / "img_0_refocused.tif").write_bytes(data[: len(data) // 2])
    again = run_batch([src], out, method="rl", workers=1, params={**RL, "iterations": 6}, progress=False)
    assert [r["status"] for r in again["records"]] == ["done", "done-before"]
    np.testing.assert_array_equal(nr.read_image(out / "img_0_refocused.tif")[0],
                                  _deconvolved(src / "img_0.tif", iterations=6))


def test_job_hash_follows_the_weights_file(tmp_path):
    from napari_refocus.io.batch import job_hash
    from napari_refocus.models.loader import load_fresh, save_weights, weights_path

    custom = tmp_path / "unet.safetensors"
    model = load_fresh("refocus-unet")
    save_weights(model, custom, meta=model.meta, write_hash=False)
    before, what = job_hash("refocus-unet", {"weights": str(custom)})
    assert what["weights_sha256"][str(custom)] and job_hash("refocus-unet", {"weights": str(custom)})[0] == before
    with torch_no_grad():
        next(iter(model.parameters())).add_(0.01)  # retrained weights, same file name
    save_weights(model, custom, meta=model.meta, write_hash=False)
    assert job_hash("refocus-unet", {"weights": str(custom)})[0] != before
    # the shipped weights are hashed too
    shipped = job_hash("refocus-unet")[1]["weights_sha256"]
    assert list(shipped) == ["refocus-unet"] and len(shipped["refocus-unet"]) == 64
    assert weights_path("refocus-unet").exists()


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_a_corrupt_input_fails_alone_and_the_command_exits_non_zero(tmp_path, infocus, capsys):
    from napari_refocus.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for k in range(2):
        nr.write_image(src / f"good_{k}.tif", np.ascontiguousarray(infocus[k * 60 : k * 60 + 168, :252]), pixel_um=0.65)
    (src / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 200)  # a TIFF header, then garbage
    rc = main(["batch", str(src), "-o", str(tmp_path / "out"), "--method", "rl", "--level", "3",
               "--iterations", "5", "--workers", "1", "-q"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc == 2
    assert report["done"] == 2 and report["failed"] == 1
    lines = [line for line in err.splitlines() if line.startswith("napari-refocus")]
    assert len(lines) == 1
    assert "2 done, 0 skipped (done before), 1 failed of 3 images" in lines[0] and "bad.tif" in lines[0]
    assert len(list((tmp_path / "out").glob("good_*_refocused.tif"))) == 2
    assert not (tmp_path / "out" / "bad_refocused.tif").exists()
    # everything done: exit 0 with the summary
    (src / "bad.tif").unlink()
    rc = main(["batch", str(src), "-o", str(tmp_path / "out"), "--method", "rl", "--level", "3",
               "--iterations", "5", "--workers", "1", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0 and "0 done, 2 skipped (done before), 0 failed of 2 images" in err


def test_refocus_command_mirrors_same_named_inputs_too(tmp_path, infocus, capsys):
    from napari_refocus.cli import main

    for k, sub in enumerate(("a", "b")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        nr.write_image(tmp_path / "in" / sub / "x.tif", np.ascontiguousarray(infocus[k * 200 : k * 200 + 168, :252]))
    rc = main(["refocus", str(tmp_path / "in/a/x.tif"), str(tmp_path / "in/b/x.tif"), "-o", str(tmp_path / "out"),
               "--method", "rl", "--level", "3", "--iterations", "5", "--no-never-worse", "-q"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [Path(r["output"]).relative_to(tmp_path / "out").as_posix() for r in records] == \
        ["a/x_refocused.tif", "b/x_refocused.tif"]
    for sub in ("a", "b"):
        np.testing.assert_array_equal(nr.read_image(tmp_path / "out" / sub / "x_refocused.tif")[0],
                                      _deconvolved(tmp_path / "in" / sub / "x.tif"))
