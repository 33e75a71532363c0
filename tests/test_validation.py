"""Hostile input: every bad option, keyword and weights file is one clear error before any work.

One test per case of issue 16: ``--pixel-um 0`` (and the other sizes and ranges) on the command
line, unknown keywords of the API and of a method's parameters, and corrupt, truncated, empty,
pickled or wrong-architecture weights files through the API and the CLI.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import napari_refocus as nr
from napari_refocus.cli import main
from napari_refocus.core.validation import (
    RULES,
    check_keywords,
    check_optics_mapping,
    check_options,
    check_value,
)

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_refocus" / "weights"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "refocus-unet.safetensors").exists(),
                                   reason="shipped weights missing")


@pytest.fixture
def image(infocus_crop):
    return infocus_crop[:168, :252]


@pytest.fixture
def tif(tmp_path, image):
    path = tmp_path / "x.tif"
    nr.write_image(path, image, pixel_um=0.65)
    return path


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- the rules
@pytest.mark.parametrize("name, bad", [("pixel_um", 0), ("pixel_um", -0.1), ("wavelength_nm", 0), ("na", 0),
                                       ("iterations", 0), ("stride", 0), ("stride", 85), ("batch_size", 0),
                                       ("workers", 0), ("level", -1), ("level", 2.5), ("psf_size", 36),
                                       ("gain", float("nan")), ("overlap", -1), ("min_level", 10.5), ("seed", -1)])
def test_rules_refuse_bad_values_naming_the_option(name, bad):
    with pytest.raises(ValueError, match=name):
        check_value(name, bad)


def test_rules_accept_good_values_and_cross_check_na():
    assert check_options({"pixel_um": 0.1, "iterations": 15.0, "stride": 84, "level": 0, "name": "x"}) == \
        {"pixel_um": 0.1, "iterations": 15, "stride": 84, "level": 0, "name": "x"}
    assert isinstance(check_value("iterations", 15.0), int)
    with pytest.raises(ValueError, match=r"na \(1.4\) must be smaller than refractive_index \(1.0\)"):
        check_options({"na": 1.4, "refractive_index": 1.0})
    assert set(RULES) >= {"pixel_um", "wavelength_nm", "na", "iterations", "stride", "batch_size", "workers"}


def test_unknown_keywords_name_the_valid_ones():
    with pytest.raises(ValueError, match="f has no parameter 'zz'; valid: a, b"):
        check_keywords({"a": 1, "zz": 2}, ("a", "b"), where="f")
    with pytest.raises(ValueError, match="optics has no parameter 'pixel_size'; valid: wavelength_nm, na"):
        check_optics_mapping({"pixel_size": 0.3})


# ------------------------------------------------------------------------------ the CLI
def test_cli_pixel_um_zero_is_a_one_line_error_exit_2(tmp_path, tif, capsys):
    for command in ("refocus", "batch"):
        out_dir = tmp_path / f"out_{command}"
        rc, out, err = cli(capsys, command, tif, "-o", out_dir, "--method", "rl", "--level", 3, "--pixel-um", 0, "-q")
        assert rc == 2 and out == ""
        assert err.strip().splitlines() == ["napari-refocus: error: pixel_um must be a positive number, got 0.0"]
        assert not out_dir.exists()  # refused before any work


@pytest.mark.parametrize("argv, message", [
    (["batch", "{tif}", "-o", "{d}/o", "--method", "rl", "--workers", "0"], "workers must be >= 1"),
    (["defocus-map", "{tif}", "-o", "{d}/o", "--stride", "0"], "stride must be >= 1"),
    (["deconvolve", "{tif}", "-o", "{d}/o.tif", "--level", "3", "--iterations", "0"], "iterations must be >= 1"),
    (["refocus", "{tif}", "-o", "{d}/o", "--method", "rl", "--na", "1.2"], "na (1.2) must be smaller than"),
    (["refocus", "{tif}", "-o", "{d}/o", "--method", "rl", "--wavelength-nm", "-500"], "wavelength_nm must be a positive"),
    (["refocus", "{tif}", "-o", "{d}/o", "--method", "refocus-unet", "--batch-size", "0"], "batch_size must be >= 1"),
    (["refocus", "{tif}", "-o", "{d}/o", "--method", "rl", "--optics", "{d}/nope.json"], "no such file"),
    (["simulate", "{tif}", "-o", "{d}/s.tif", "--level", "3", "--gain", "0"], "gain must be a positive"),
    (["batch", "{tif}", "-o", "{d}/o", "--method", "rl", "--min-level", "12"], "min_level must be <= 10"),
])
def test_cli_bad_options_are_one_line_errors(tmp_path, tif, capsys, argv, message):
    rc, out, err = cli(capsys, *[a.format(tif=tif, d=tmp_path) for a in argv])
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


# ------------------------------------------------------------------------------ the API
def test_api_unknown_keyword_is_a_value_error_naming_the_valid_ones(image):
    import dask.array as da

    for img, extra in ((image, {}), (da.from_array(image), {}), (np.stack([image, image]), {"axes": "ZYX"})):
        with pytest.raises(ValueError, match="method 'rl' has no parameter 'iteration'; valid: level, iterations"):
            nr.refocus(img, method="rl", level=3, iteration=5, **extra)
    with pytest.raises(ValueError, match="optics has no parameter 'pixel_size'; valid: wavelength_nm"):
        nr.refocus(image, method="rl", level=3, optics={"pixel_size": 0.3})
    with pytest.raises(ValueError, match="defocus_map has no parameter 'strides'; valid: weights, device, stride"):
        nr.defocus_map(image, strides=42)
    with pytest.raises(ValueError, match="has no parameter 'bogus'; valid: level, iterations"):
        nr.get_method("rl").parse(bogus=1)  # what the widgets go through


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "rl", "level": 3, "pixel_um": 0}, "pixel_um must be a positive number, got 0"),
    ({"method": "rl", "level": 3, "iterations": 0}, "iterations must be >= 1"),
    ({"method": "rl", "level": 3, "optics": {"na": 0.9, "refractive_index": 0.8}}, "na .* must be smaller"),
    ({"method": "lbdvd", "stride": 0}, "stride must be >= 1"),
    ({"method": "refocus-unet", "overlap": -8}, "overlap must be >= 0"),
    # a 20 um pixel at NA 0.5 would have the map enlarge the image 31x a side (137 s here before)
    ({"method": "lbdvd", "pixel_um": 20.0}, r"pixel 20 um is 30.8x coarser than the defocus map reads \(0.65 um"),
])
def test_api_bad_values_are_value_errors(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nr.refocus(image, **kwargs)


def test_negative_intensities_are_refused_saying_what_to_do(image):
    """A background-subtracted float image: every method refuses it in one line (the methods
    model photon counts), naming the minimum and the two usual fixes."""
    shifted = image.astype(np.float32) - float(image.mean())
    for method, extra in (("lbdvd", {}), ("rl", {"level": 3}), ("refocus-unet", {})):
        with pytest.raises(ValueError, match=r"negative values \(min -.*\); intensities must be >= 0: add back the "
                                             r"background offset or clip"):
            nr.refocus(shifted, method=method, **extra)


def test_a_map_that_is_not_a_defocus_map_is_a_value_error(image):
    """The level array alone (what a user might keep of an earlier map) was an AttributeError."""
    with pytest.raises(ValueError, match="defocus_map must be a DefocusMap from napari_refocus.defocus_map"):
        nr.refocus(image, method="lbdvd", defocus_map=np.zeros((3, 3), np.int64))


# ------------------------------------------------------------------------- weights files
class _Trap:
    """Unpickling this touches a file: the proof that a pickle was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _hostile_files(folder: Path) -> dict:
    import torch
    from safetensors.torch import save_file

    shipped = (WEIGHTS / "refocus-unet.safetensors").read_bytes()
    files = {
        "empty": (b"", "is empty"),
        "corrupt": (b"\x93NUMPY" + bytes(range(256)) * 4, "is not a safetensors file"),
        "truncated": (shipped[: len(shipped) // 2], "is truncated"),
        "cut header": (shipped[:40], "is truncated"),
    }
    out = {}
    for name, (data, message) in files.items():
        path = folder / f"{name.replace(' ', '_')}.safetensors"
        path.write_bytes(data)
        out[name] = (path, message)
    pickled = folder / "pickled.safetensors"
    torch.save({"state": torch.zeros(3), "trap": _Trap(folder / "UNPICKLED")}, pickled)
    out["pickle"] = (pickled, "is a PyTorch torch.save archive, which napari-refocus never loads")
    wrong = folder / "wrong_arch.safetensors"
    wrong.write_bytes((WEIGHTS / "delpnet.safetensors").read_bytes())
    out["wrong architecture"] = (wrong, "holds a DelpNet network, but refocus-unet needs a ResNetUNet")
    no_meta = folder / "no_meta.safetensors"
    save_file({"w": torch.zeros(3)}, str(no_meta))
    out["no metadata"] = (no_meta, "has no napari-refocus metadata")
    return out


@needs_weights
def test_hostile_weights_files_are_one_line_errors_naming_the_file(tmp_path, image, tif, capsys):
    from napari_refocus.models.loader import load_fresh

    for case, (path, message) in _hostile_files(tmp_path).items():
        # the API
        with pytest.raises(ValueError) as info:
            nr.refocus(image, method="refocus-unet", weights=str(path), device="cpu")
        text = str(info.value)
        assert "\n" not in text and str(path) in text and message in text, (case, text)
        # the CLI: one line on stderr, exit status 2, nothing written
        rc, out, err = cli(capsys, "refocus", tif, "-o", tmp_path / "out", "--method", "refocus-unet",
                           "--weights", path, "-q")
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, (case, err)
        assert "Traceback" not in err and "SafetensorError" not in err
        # the loader itself (training, custom code), except the architecture it cannot know
        if case != "wrong architecture":
            with pytest.raises(ValueError, match=message):
                load_fresh(path)
    assert not (tmp_path / "UNPICKLED").exists()  # the pickle was never unpickled


@needs_weights
def test_weights_of_another_method_and_wrong_tensors(tmp_path, image):
    import torch
    from safetensors.torch import save_file

    from napari_refocus.models.loader import load_fresh, load_model, read_metadata

    with pytest.raises(ValueError, match="holds a ResNetUNet network, but delpnet needs a DelpNet"):
        nr.defocus_map(image, weights=str(WEIGHTS / "refocus-unet.safetensors"))
    with pytest.raises(ValueError, match="holds a HeadToTailUNet network, but delpnet needs a DelpNet"):
        nr.refocus(image, method="lbdvd", weights=str(WEIGHTS / "h2t-msunet.safetensors"))
    with pytest.raises(ValueError, match="holds a DelpNet network, but m-deblurgan needs"):
        load_model(WEIGHTS / "delpnet.safetensors", like="m-deblurgan")
    # the metadata names the right network, the tensors are another's
    meta = read_metadata(WEIGHTS / "refocus-unet.safetensors")
    odd = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(3)}, str(odd), metadata={"napari_refocus": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"do not fit the ResNetUNet it names: \d+ missing .*; 1 unexpected \(w\)"):
        load_fresh(odd)
    # a good custom file still loads and runs
    good = tmp_path / "copy.safetensors"
    good.write_bytes((WEIGHTS / "refocus-unet.safetensors").read_bytes())
    assert load_model(good, like="refocus-unet").meta["architecture"] == "ResNetUNet"


@pytest.mark.parametrize("call", ["deconvolve", "simulate"])
def test_unknown_keyword_of_deconvolve_and_simulate_is_a_value_error(call):
    import napari_refocus as nr

    image = np.ones((64, 64), np.float32)
    with pytest.raises(ValueError, match="unknown optics parameter.*foo.*valid: wavelength_nm"):
        getattr(nr, call)(image, level=2, foo=1)


def test_lbdvd_and_the_map_refuse_another_networks_weights():
    from napari_refocus.core.resources import weights_dir

    img = (np.random.default_rng(0).random((256, 256)) * 1000 + 100).astype(np.uint16)
    other = str(weights_dir() / "h2t-msunet.safetensors")
    with pytest.raises(ValueError, match="needs a DelpNet"):
        nr.refocus(img, method="lbdvd", weights=other)
    with pytest.raises(ValueError, match="needs a DelpNet"):
        nr.defocus_map(img, weights=other)


def test_an_image_below_one_patch_is_mapped_mirrored_in_memory_and_lazily(image):
    """lbdvd on a crop below one patch: once refused in memory while the same crop as a dask
    array came back unchanged without a word; then one error for both; now both run on the crop
    mirrored to one patch, with the same numbers and a note. The map alone is still refused."""
    da = pytest.importorskip("dask.array")
    import dask

    for crop in (image[:20, :20], image[:83, :200]):
        crop = np.ascontiguousarray(crop)
        eager = nr.refocus(crop, method="lbdvd")
        assert eager.image.shape == crop.shape and eager.defocus_map is None
        assert any("mirrored to one DelpNet patch" in n for n in eager.notes)
        with dask.config.set(scheduler="synchronous"):
            lazy = np.asarray(nr.refocus(da.from_array(crop, chunks=(37, 41)), method="lbdvd").image)
        np.testing.assert_array_equal(lazy, eager.image)
        with pytest.raises(ValueError, match=r"image is \d+x\d+ pixels; DelpNet needs at least 84x84 .*larger region"):
            nr.defocus_map(crop)


@pytest.mark.parametrize("method", ["lbdvd", "rl", "comi-cyclegan"])
def test_a_read_only_float_image_runs_without_warnings_and_is_left_alone(image, method):
    # a memory-mapped file or a napari layer's array may be read-only: the result is the
    # writable array's, with no torch warning about non-writable arrays, and the input unchanged
    import warnings

    params = {"level": 4} if method == "rl" else {}
    writable = np.asarray(image, np.float32)
    frozen = writable.copy()
    frozen.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = nr.refocus(frozen, method=method, device="cpu", **params).image
    np.testing.assert_array_equal(got, nr.refocus(writable, method=method, device="cpu", **params).image)
    np.testing.assert_array_equal(frozen, writable)
