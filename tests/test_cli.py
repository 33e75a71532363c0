import json

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.cli import main
from napari_refocus.core.forward import cast_like
from napari_refocus.methods import get_method


@pytest.fixture
def files(tmp_path, infocus_crop):
    gt = tmp_path / "gt.tif"
    nr.write_image(gt, infocus_crop, pixel_um=0.65)
    return tmp_path, gt


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_simulate_deconvolve_evaluate(files, capsys):
    d, gt = files
    rc, out, _ = run(capsys, "simulate", gt, "-o", d / "blur.tif", "--level", 5, "--seed", 3)
    assert rc == 0 and json.loads(out)["level"] == 5
    blurred, info = nr.read_image(d / "blur.tif")
    assert blurred.dtype == np.uint16 and info["pixel_um"] == pytest.approx(0.65)
    rc, out, _ = run(capsys, "deconvolve", d / "blur.tif", "-o", d / "dec.tif", "--level", 5, "-q")
    assert rc == 0
    grid = nr.patch_grid(blurred.shape)
    nr.write_image(d / "map.tif", np.full(grid.shape, 5, np.uint8))
    rc, out, _ = run(capsys, "deconvolve", d / "blur.tif", "-o", d / "dv.tif", "--level-map", d / "map.tif",
                     "--iterations", 10, "--device", "cpu", "-q")
    assert rc == 0
    rc, out, _ = run(capsys, "evaluate", "--gt", gt, "--pred", d / "dec.tif", "--input", d / "blur.tif")
    report = json.loads(out)
    assert rc == 0 and report["gain"]["psnr"] > 0.5
    assert report["pred"] == nr.compare(nr.read_image(gt)[0], nr.read_image(d / "dec.tif")[0])["pred"]
    # a real pair: registered and intensity-matched, the JSON says how
    rc, out, _ = run(capsys, "evaluate", "--gt", gt, "--pred", d / "dec.tif", "--input", d / "blur.tif", "--register")
    report = json.loads(out)
    assert rc == 0 and set(report["registration"]) == {"shift_px", "intensity", "box"}
    assert report["pred"] == pytest.approx(nr.compare(nr.read_image(gt)[0], nr.read_image(d / "dec.tif")[0],
                                                      nr.read_image(d / "blur.tif")[0], register=True)["pred"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["deconvolve", "{gt}", "-o", "{gt}", "--level", "3"], "refusing to write over an input"),
        (["deconvolve", "{d}/missing.tif", "-o", "{d}/x.tif", "--level", "3"], "no such file"),
        (["deconvolve", "{gt}", "-o", "{d}/x.tif", "--level", "11"], "level"),
        (["deconvolve", "{gt}", "-o", "{d}/x.tif"], "exactly one"),
        (["deconvolve", "{gt}", "-o", "{d}/x.tif", "--level-map", "{gt}"], "patch grid"),
        (["deconvolve", "{gt}", "-o", "{d}/x.tif", "--level", "3", "--device", "tpu"], "unknown device"),
        (["simulate", "{gt}", "-o", "{gt}", "--level", "3", "--overwrite"], "refusing"),
        (["evaluate", "--gt", "{gt}", "--pred", "{d}/missing.tif"], "no such file"),
        (["refocus", "{gt}", "-o", "{d}/o", "--method", "rl", "--level", "3", "--tta"], "does not take --tta; its options: --level, --iterations"),
        (["refocus", "{gt}", "-o", "{gt}", "--method", "rl", "--overwrite"], "refusing to write over an input"),
        (["batch", "{gt}", "-o", "{d}/out.tif"], "looks like a file name"),
        (["train", "delpnet", "--out", "{d}/w", "--lr", "0.1", "--set", "a=1"], "--set only apply"),
        (["train", "h2t-msunet", "--out", "{d}/w", "--objectives"], "--objectives and --consistency are for delpnet"),
        (["train", "h2t-msunet", "--out", "{d}/w", "--consistency", "1"], "--consistency are for delpnet"),
        (["train", "delpnet", "--out", "{d}/w", "--consistency", "-1"], "consistency must be >= 0"),
        (["train", "delpnet", "--out", "{d}/w", "--init", "{gt}"], "not a safetensors file"),
        (["train", "h2t-msunet", "--out", "{d}/w", "--epochs", "3"], "--epochs is for delpnet"),
        (["train", "h2t-msunet", "--out", "{d}/w", "--width", "64"], "--width, --data-workers and --precision are for delpnet"),
        (["train", "delpnet", "--out", "{d}/w", "--width", "0"], "width must be a whole number >= 1"),
        (["train", "delpnet", "--out", "{d}/w", "--data-workers", "-1"], "data_workers must be a whole number >= 0"),
    ],
)
def test_errors_are_one_line(files, capsys, argv, message):
    d, gt = files
    before = gt.read_bytes()
    rc, out, err = run(capsys, *[a.format(d=d, gt=gt) for a in argv])
    assert rc != 0
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert gt.read_bytes() == before


def test_existing_output_needs_overwrite(files, capsys):
    d, gt = files
    (d / "out.tif").write_bytes(b"keep")
    rc, _, err = run(capsys, "simulate", gt, "-o", d / "out.tif", "--level", 2)
    assert rc == 2 and "exists" in err and (d / "out.tif").read_bytes() == b"keep"


def test_demo_headless(tmp_path, capsys):
    rc, out, _ = run(capsys, "demo", "--headless", "--out", tmp_path / "demo")
    report = json.loads(out)
    assert rc == 0
    assert report["gain"]["psnr"] > 1.0
    assert set(report["files"]) == {"ground_truth", "defocused", "refocused", "level_map"}


@pytest.mark.parametrize("name", ["comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet"])
def test_refocus_command_with_learned_method(files, capsys, name):
    import napari_refocus.methods.learned  # noqa: F401  (registers the learned methods)

    if not get_method(name).weights_present():
        pytest.skip(f"weights/{name}.safetensors not shipped")
    d, gt = files
    run(capsys, "simulate", gt, "-o", d / "blur.tif", "--level", 6, "--seed", 1)
    rc, out, _ = run(capsys, "methods")
    assert rc == 0 and name in out
    rc, out, err = run(capsys, "refocus", d / "blur.tif", "-o", d / "out", "--method", name, "-q")
    assert rc == 0, err
    rec = json.loads(out.strip().splitlines()[-1])
    assert rec["method"] == name
    res, _ = nr.read_image(d / "out" / "blur_refocused.tif")
    r = get_method(name).upscale
    ref, _ = nr.read_image(gt)
    assert res.shape == (ref.shape[0] * r, ref.shape[1] * r) and res.dtype == np.uint16
    if r > 1:
        res = res.reshape(ref.shape[0], r, ref.shape[1], r).mean(axis=(1, 3))
    assert nr.compare(ref, res, nr.read_image(d / "blur.tif")[0])["gain"]["psnr"] > 0


def test_chunked_refocus_any_method(files, capsys):
    """--chunked (automatic for huge TIFFs) runs every method block by block, with the file's
    pixel size, and gives the in-memory result here (one block)."""
    d, gt = files
    run(capsys, "simulate", gt, "-o", d / "blur.tif", "--level", 5, "--seed", 2)
    for method, extra in (("rl", ["--level", 5]), ("lbdvd", [])):
        if not get_method(method).weights_present():
            continue
        args = ["refocus", d / "blur.tif", "--method", method, *extra, "--iterations", 8, "-q"]
        rc, _, err = run(capsys, *args, "-o", d / f"mem_{method}")
        assert rc == 0, err
        rc, out, err = run(capsys, *args, "-o", d / f"blk_{method}", "--chunked")
        assert rc == 0, err
        rec = json.loads(out.strip().splitlines()[-1])
        assert rec["chunked"] is True and rec["method"] == method
        mem, _ = nr.read_image(d / f"mem_{method}" / "blur_refocused.tif")
        blk, info = nr.read_image(d / f"blk_{method}" / "blur_refocused.tif")
        assert info["pixel_um"] == pytest.approx(0.65)
        # rl: the same computation; lbdvd: the same up to float rounding before the uint16 cast
        np.testing.assert_allclose(blk.astype(float), mem.astype(float), atol=0 if method == "rl" else 1)


RL_ARGS = ["--method", "rl", "--level", 3, "--iterations", 4, "-q"]


@pytest.fixture
def stack_and_rgb(tmp_path, infocus):
    """A 3x128x128 uint16 Z stack (ImageJ axes, 0.65 um) and a 128x128x3 uint8 RGB TIFF."""
    import tifffile

    crops = [nr.simulate(np.ascontiguousarray(infocus[y:y + 128, 200:328]), level=3, seed=y) for y in (0, 150, 300)]
    stack = np.stack(crops)
    rgb = np.stack([c // 200 for c in crops], axis=-1).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX", "unit": "um"},
                     resolution=(1 / 0.65, 1 / 0.65))
    tifffile.imwrite(src / "rgb.tif", rgb, photometric="rgb")
    return src, {"stack.tif": (stack, "ZYX"), "rgb.tif": (rgb, "YXS")}


def _planes(arr, axes):
    return [(z,) for z in range(arr.shape[0])] if axes == "ZYX" else [(..., c) for c in range(arr.shape[-1])]


def check_plane_by_plane(outdir, inputs):
    """Every output has its input's shape, dtype and axes; each plane is the 2-D run of that plane."""
    for name, (arr, axes) in inputs.items():
        out, info = nr.read_image(outdir / name.replace(".tif", "_refocused.tif"))
        assert out.shape == arr.shape and out.dtype == arr.dtype and info["axes"] == axes
        for idx in _planes(arr, axes):
            want = nr.refocus(arr[idx], method="rl", device="cpu", level=3, iterations=4).image
            np.testing.assert_array_equal(out[idx], cast_like(want, arr.dtype))


def test_refocus_stack_and_rgb_keep_their_shape(stack_and_rgb, tmp_path, capsys):
    src, inputs = stack_and_rgb
    rc, out, err = run(capsys, "refocus", src, "-o", tmp_path / "out", *RL_ARGS)
    assert rc == 0, err
    recs = {json.loads(line)["input"]: json.loads(line) for line in out.strip().splitlines()}
    assert {r["axes"] for r in recs.values()} == {"ZYX", "YXS"}
    check_plane_by_plane(tmp_path / "out", inputs)
    # a file without axes metadata: --axes says what its dimensions are
    import tifffile

    tifffile.imwrite(tmp_path / "pages.tif", inputs["stack.tif"][0][:2])
    rc, _, err = run(capsys, "refocus", tmp_path / "pages.tif", "-o", tmp_path / "o2", "--axes", "ZYX", *RL_ARGS)
    assert rc == 0, err
    assert nr.read_image(tmp_path / "o2" / "pages_refocused.tif")[0].shape == (2, 128, 128)


def test_batch_stack_and_rgb_keep_their_shape(stack_and_rgb, tmp_path, capsys):
    src, inputs = stack_and_rgb
    rc, out, err = run(capsys, "batch", src, "-o", tmp_path / "out", "--workers", 1, *RL_ARGS)
    assert rc == 0, err
    assert json.loads(out)["done"] == 2
    check_plane_by_plane(tmp_path / "out", inputs)


def test_method_options_come_from_the_schemas(files, capsys):
    d, gt = files
    rc, out, _ = run(capsys, "methods")
    listed = {json.loads(line)["method"]: json.loads(line)["options"] for line in out.strip().splitlines()}
    assert listed["rl"] == ["--level", "--iterations", "--never-worse"] and "--tile" in listed["h2t-msunet"]
    rc, _, err = run(capsys, "refocus", gt, "-o", d / "o", "--method", "rl", "--tile", "64", "-q")
    assert rc == 2 and "does not take --tile" in err and "--level" in err and "the optics options" in err
    rc, _, err = run(capsys, "refocus", gt, "-o", d / "o", "--method", "rl", "--iterations", "0", "-q")
    assert rc == 2 and "iterations must be >= 1" in err
    with pytest.raises(SystemExit):  # a wrong choice is argparse's usage error
        main(["refocus", str(gt), "-o", str(d / "o"), "--precision", "fp64"])
    capsys.readouterr()


def test_debug_shows_the_traceback(files, capsys):
    d, gt = files
    argv = ["deconvolve", str(gt), "-o", str(d / "x.tif"), "--level", "3", "--device", "tpu"]
    assert main(argv) == 2
    with pytest.raises(ValueError, match="unknown device"):
        main(["--debug", *argv])
    with pytest.raises(ValueError, match="unknown device"):
        main([*argv, "--debug"])
    capsys.readouterr()


def test_triage_takes_its_axes_from_the_file(tmp_path, infocus_crop, capsys):
    """An ImageJ hyperstack (Z, C, Y, X) is triaged per channel with no axis flags; an RGB image
    is refused as one (it was read as a 'stack' of its rows)."""
    import tifffile

    planes = [nr.simulate(infocus_crop, level=lv, seed=lv) for lv in (4, 0, 6)]
    stack = np.stack([np.stack([p, p // 2]) for p in planes]).astype(np.uint16)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "zc.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    rc, out, _ = run(capsys, "triage", tmp_path / "zc.tif", "--no-delpnet")
    recs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [r["channel"] for r in recs] == [0, 1] and all(r["planes"] == 3 for r in recs)
    assert [r["best_plane_by_sharpness"] for r in recs] == [1, 1]
    rgb = np.stack([infocus_crop // 16] * 3, -1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    rc, _, err = run(capsys, "triage", tmp_path / "rgb.tif", "--no-delpnet")
    assert rc == 2 and "rgb.tif is an RGB image (axes YXS), not a z-stack" in err


def test_defocus_map_of_an_rgb_file_and_of_a_stack(tmp_path, infocus_crop, capsys):
    """An RGB file is mapped on its mean colour, as the Defocus map widget reads it; a stack is
    a one-line error naming the commands made for stacks (both said only 'must be 2-D')."""
    import tifffile

    grey = (infocus_crop // 16).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([grey] * 3, -1), photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    rc, out, _ = run(capsys, "defocus-map", tmp_path / "rgb.tif", tmp_path / "grey.tif", "-o", tmp_path / "m", "-q")
    rgb, plain = (json.loads(line) for line in out.splitlines())
    assert rc == 0 and rgb["focus_level"] == pytest.approx(plain["focus_level"], abs=1e-6)
    tifffile.imwrite(tmp_path / "z.tif", np.stack([infocus_crop] * 2), imagej=True, metadata={"axes": "ZYX"})
    rc, _, err = run(capsys, "defocus-map", tmp_path / "z.tif", "-o", tmp_path / "m", "-q")
    assert rc == 2 and "has axes ZYX" in err and "'napari-refocus triage' ranks a z-stack's planes" in err


def test_refocus_o_names_the_output_file_with_one_input(files, capsys):
    """``refocus x.tif -o y.tif`` writes y.tif (as simulate and deconvolve take -o), not a folder
    named y.tif; an existing folder of that name stays a folder."""
    d, gt = files
    rc, out, err = run(capsys, "refocus", gt, "-o", d / "restored.tif", "--method", "rl", "--level", 3, "-q")
    assert rc == 0, err
    assert (d / "restored.tif").is_file() and json.loads(out)["output"] == str(d / "restored.tif")
    assert nr.read_image(d / "restored.tif")[0].shape == nr.read_image(gt)[0].shape
    (d / "folder.tif").mkdir()
    rc, out, err = run(capsys, "refocus", gt, "-o", d / "folder.tif", "--method", "rl", "--level", 3, "-q")
    assert rc == 0, err
    assert (d / "folder.tif").is_dir() and json.loads(out)["output"].startswith(str(d / "folder.tif") + "/")
    other = d / "other.tif"
    other.write_bytes(gt.read_bytes())
    rc, out, err = run(capsys, "refocus", gt, other, "-o", d / "two.tif", "--method", "rl", "--level", 3, "-q")
    assert rc == 2 and "names one TIFF output: give one input" in err and not (d / "two.tif").exists()
