"""bioimage.io packages (napari-refocus export-bioimageio): they validate and reproduce the plugin."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import napari_refocus as nr  # noqa: E402
from napari_refocus.io.bioimageio import export_bioimageio  # noqa: E402
from napari_refocus.io.samples import infocus_image, real_defocused_image  # noqa: E402


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """m-deblurgan (the x2 generator: output axes at half the pixel size) and DelpNet, exported once."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bioimageio")
    return {name: export_bioimageio(name, root / name) for name in ("m-deblurgan", "delpnet")}


@pytest.mark.parametrize("name", ["m-deblurgan", "delpnet"])
def test_exported_package_passes_bioimageio_test(packages, name):
    from bioimageio.core import test_model

    summary = test_model(packages[name]["rdf"])
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed


def test_package_records_every_file_with_its_sha256(packages):
    import yaml

    pkg = packages["m-deblurgan"]
    rdf = yaml.safe_load(Path(pkg["rdf"]).read_text(encoding="utf-8"))
    recorded = {}
    weights = rdf["weights"]
    for entry in ([rdf["documentation"]] + rdf["covers"] + rdf["attachments"] + [weights["torchscript"]]
                  + [weights["pytorch_state_dict"], weights["pytorch_state_dict"]["architecture"]]
                  + [t[k] for t in rdf["inputs"] + rdf["outputs"] for k in ("test_tensor", "sample_tensor")]):
        recorded[entry["source"]] = entry["sha256"]
    # every file of the package but the description itself, with the hash of its bytes
    assert recorded == {k: v for k, v in pkg["files"].items() if k != "rdf.yaml"}
    assert rdf["format_version"].startswith("0.5") and rdf["license"] == "BSD-3-Clause"
    assert any(c.get("doi") == "10.1038/nmeth.2083" for c in rdf["cite"])
    # output pixels are half the input's (x2), sizes follow the input's
    assert rdf["outputs"][0]["axes"][2]["scale"] == pytest.approx(rdf["inputs"][0]["axes"][2]["scale"] / 2)


@pytest.mark.parametrize("weight_format", ["torchscript", "pytorch_state_dict"])
def test_reloaded_generator_reproduces_the_plugin_on_a_real_image(packages, weight_format):
    """bioimageio.core runs the package (each weights entry) on a real field it was not tested
    with: the plugin's output to within 1e-4 of its range."""
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    from napari_refocus.io.bioimageio import plugin_params

    image = np.ascontiguousarray(real_defocused_image()[200:520, 0:448])  # 320x448, not the test crop
    plugin = nr.refocus(image, method="m-deblurgan", device="cpu", **plugin_params("m-deblurgan")).image
    descr = load_model_description(packages["m-deblurgan"]["rdf"])
    pipeline = create_prediction_pipeline(descr, weight_format=weight_format)
    sample = predict(model=pipeline, inputs={"input": image.astype(np.float32)[None, None]})
    out = np.asarray(sample.members["output"].data)[0, 0]
    assert out.shape == plugin.shape == (640, 896)
    span = float(plugin.max() - plugin.min())
    assert np.abs(out - plugin).max() <= 1e-4 * span


def test_reloaded_delpnet_reproduces_the_plugin_map(packages):
    """The in-focus sample (a field DelpNet's package was not tested with): same classes, same
    probabilities to within 1e-4."""
    from bioimageio.core import load_model_description, predict

    from unittest import mock

    image = np.ascontiguousarray(infocus_image()[:462, :588])  # 84 + 42 n on both sides
    # the package is float32; the plugin would use bf16 autocast on a CPU with native bf16
    with mock.patch("napari_refocus.models.delpnet.cpu_has_fast_bf16", return_value=False):
        plugin = nr.defocus_map(image, device="cpu")
    descr = load_model_description(packages["delpnet"]["rdf"])
    sample = predict(model=descr, inputs={"input": image.astype(np.float32)[None, None]})
    probs = np.moveaxis(np.asarray(sample.members["probabilities"].data)[0], 0, -1)
    levels = np.asarray(sample.members["levels"].data)[0, 0]
    assert probs.shape == plugin.probabilities.shape == (10, 13, 12)
    assert np.abs(probs - plugin.probabilities).max() <= 1e-4
    np.testing.assert_array_equal(levels, plugin.levels)


def test_export_refuses_an_unknown_network_and_an_existing_output(tmp_path):
    with pytest.raises(ValueError, match="choose one of: comi-cyclegan"):
        export_bioimageio("lbdvd", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists"):
        export_bioimageio("delpnet", tmp_path / "taken")


def test_percentile_and_median_match_numpy():
    import torch

    from napari_refocus.io.bioimageio_modules import median, percentile

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 1001):
        x = rng.gamma(2.0, 300.0, size=n).astype(np.float32)
        t = torch.from_numpy(x)
        for q in (0.0, 1.0, 50.0, 99.8, 100.0):
            assert float(percentile(t, q)) == pytest.approx(float(np.percentile(x, q)), rel=1e-6)
        assert float(median(t)) == pytest.approx(float(np.median(x)), rel=1e-6)


def test_cli_writes_a_zip_package_that_loads(tmp_path, capsys):
    import json

    from bioimageio.core import load_model_description

    from napari_refocus.cli import main

    out = tmp_path / "delpnet.zip"
    assert main(["export-bioimageio", "delpnet", "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["method"] == "delpnet" and report["package"] == str(out) and out.is_file()
    descr = load_model_description(out)
    assert [t.id for t in descr.outputs] == ["probabilities", "levels"]
    assert main(["export-bioimageio", "delpnet", "-o", str(out)]) == 2  # exists, no --overwrite
