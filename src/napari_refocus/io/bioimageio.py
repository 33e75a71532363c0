"""bioimage.io model packages (format 0.5) of the shipped networks, for Fiji, ilastik, deepImageJ...

:func:`export_bioimageio` writes one package per network: the four learned generators and
DelpNet. Each package holds a TorchScript module that takes the raw image and returns what the
plugin returns (:mod:`.bioimageio_modules`: the plugin's intensity normalisation, padding and
background rule are baked in, because the spec's standard processing ops cannot express them),
test tensors made by the plugin itself from the bundled real BBBC006 sample, the model card
(``weights/<name>.md``) with notes on what the package does and does not do, the seed papers'
citations, the licence and the SHA-256 of every file.

``bioimageio.spec`` / ``bioimageio.core`` (the optional extra ``napari-refocus[bioimageio]``)
are imported inside the functions, so the plugin works without them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

GENERATORS = ("comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")
EXPORTABLE = (*GENERATORS, "delpnet")
#: the generators' test image: a 256x256 crop of the bundled real out-of-focus BBBC006 field
GENERATOR_CROP = (slice(132, 388), slice(220, 476))
#: DelpNet's: 504x672 px of the same field (84 + 42 n on both sides: the grid fits exactly)
DELPNET_CROP = (slice(0, 504), slice(0, 672))
#: smallest side a generator package accepts (the reflected margin and padding need it)
MIN_SIDE = 128


def _require_bioimageio():
    import importlib.util

    try:
        missing = [m for m in ("bioimageio.core", "bioimageio.spec") if importlib.util.find_spec(m) is None]
    except ModuleNotFoundError:  # no bioimageio namespace at all
        missing = ["bioimageio"]
    if missing:  # pragma: no cover - depends on the environment
        raise ImportError("exporting bioimage.io packages needs the optional extra: "
                          "pip install 'napari-refocus[bioimageio]'")


def sha256_of(path) -> str:
    """Hex SHA-256 of a file (the weights loader's)."""
    from ..models.loader import file_sha256

    return file_sha256(path)


def test_image(name: str) -> np.ndarray:
    """The real image patch a package's test input is made from (uint16, the bundled sample)."""
    from .samples import real_defocused_image

    return np.ascontiguousarray(real_defocused_image()[DELPNET_CROP if name == "delpnet" else GENERATOR_CROP])


def plugin_outputs(name: str, image) -> dict:
    """What the plugin returns for ``image`` on the CPU (the packages' expected test outputs).

    Generators: ``{"output": (1, 1, rH, rW) float32}`` from ``napari_refocus`` ``refocus``;
    DelpNet: ``{"probabilities": (1, 12, rows, cols) float32, "levels": (1, 1, rows, cols)
    uint8}`` from its defocus map (training optics, stride 42, no TTA).
    """
    if name == "delpnet":
        from unittest import mock

        from ..methods.defocus import defocus_map_array

        # the plugin runs DelpNet under bf16 autocast on CPUs that report native bf16
        # (models.delpnet.autocast); the package is float32, so its test outputs are the plugin's
        # float32 path on every machine
        with mock.patch("napari_refocus.models.delpnet.cpu_has_fast_bf16", return_value=False):
            dm = defocus_map_array(image, device="cpu")
        return {"probabilities": np.ascontiguousarray(np.moveaxis(dm.probabilities, -1, 0)[None], np.float32),
                "levels": dm.levels.astype(np.uint8)[None, None]}
    from ..api import refocus

    out = refocus(image, method=name, device="cpu", **plugin_params(name)).image
    return {"output": out.astype(np.float32)[None, None]}


def plugin_params(name: str) -> dict:
    """The method parameters the package reproduces: the defaults, but the network alone, without a
    per-patch gate by DelpNet's map (``never_worse``, where the method has it), on the whole image
    as one tile up to 928 px a side (``tile=1024``: m-deblurgan's default is 512-px tiles)."""
    import dataclasses

    from ..methods.registry import get_method
    from ..models.predict import DEFAULT_TILE

    fields = {f.name for f in dataclasses.fields(get_method(name).schema)}
    return {**({"never_worse": False} if "never_worse" in fields else {}),
            **({"tile": DEFAULT_TILE} if "tile" in fields else {})}


def _network(name: str):
    """``(eval-mode network, its wrapper class, the wrapper's settings, the factory's name)``."""
    from ..models.loader import load_fresh
    from .bioimageio_modules import DelpNetModule, GeneratorModule

    net = load_fresh(name).eval()
    if name == "delpnet":
        from ..core.tiling import PATCH, STRIDE
        from ..methods import canonical as d

        return net, DelpNetModule, dict(
            patch=PATCH, stride=STRIDE, span=d.SPAN, offset=d.OFFSET, intensity_scale=d.SCALE,
            bg_above=d.BG_ABOVE, bg_range=d.BG_RANGE, bg_sigmas=d.BG_SIGMAS), "ExportedDelpNet"
    from ..models.predict import DEFAULT_OVERLAP

    return net, GeneratorModule, dict(multiple=int(net.multiple), upscale=int(net.upscale),
                                      margin=DEFAULT_OVERLAP // 2), "ExportedGenerator"


def build_module(name: str):
    """The scripted TorchScript module of a network (see :mod:`.bioimageio_modules`)."""
    import warnings

    import torch

    net, wrapper, settings, _ = _network(name)
    example = torch.zeros((4, 1, 84, 84) if name == "delpnet" else (1, 1, 2 * MIN_SIDE, 2 * MIN_SIDE))
    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic: the output is checked
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=False)
    module = torch.jit.script(wrapper(traced, **settings))
    return module


def build_state(name: str):
    """``(state_dict, architecture source, factory name, factory kwargs)`` of the
    ``pytorch_state_dict`` entry: the eager wrapper's state (the network under ``net.``) and the
    generated architecture file (:mod:`.bioimageio_arch`) whose factory rebuilds the wrapper."""
    from .bioimageio_arch import architecture_source

    net, wrapper, settings, factory = _network(name)
    state = {k: v.detach().clone() for k, v in wrapper(net, **settings).state_dict().items()}
    architecture = net.meta["architecture"]
    kwargs = {"architecture": architecture, "kwargs": dict(net.meta["kwargs"]), **settings}
    return state, architecture_source(architecture), factory, kwargs


def load_state_module(arch_file, factory: str, kwargs: dict, state):
    """The module a bioimage.io tool builds from the ``pytorch_state_dict`` entry (for checking it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("napari_refocus_bioimageio_architecture", arch_file)
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    module = getattr(source, factory)(**kwargs)
    module.load_state_dict(state, strict=True)
    return module.eval()


def run_module(module, image) -> dict:
    """Outputs of a built module for a 2-D image (numpy, the same keys as :func:`plugin_outputs`)."""
    import torch

    x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    with torch.inference_mode():
        out = module(x)
    if isinstance(out, tuple):
        return {"probabilities": out[0].numpy(), "levels": out[1].to(torch.uint8).numpy()}
    return {"output": out.numpy()}


def _cover(path, image, outputs) -> None:
    """input | output (the levels map for DelpNet) side by side, 2:1, 8-bit grey PNG."""
    import imageio.v3 as iio
    from skimage.transform import resize

    lo, hi = np.percentile(image, (1.0, 99.8))
    grey = lambda a: (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)  # noqa: E731
    if "levels" in outputs:
        lv = outputs["levels"][0, 0].astype(np.float32)
        right = (resize(lv, image.shape, order=0, preserve_range=True) / 11.0 * 255).astype(np.uint8)
    else:
        right = grey(resize(outputs["output"][0, 0], image.shape, order=1, preserve_range=True, anti_aliasing=True))
    left = grey(image.astype(np.float32))
    both = np.concatenate([left, right], axis=1)
    if both.shape[1] != 2 * both.shape[0]:  # the spec asks for 2:1 covers
        both = resize(both, (both.shape[1] // 2, both.shape[1]), order=1, preserve_range=True).astype(np.uint8)
    iio.imwrite(path, both)


def _stage(name: str, folder: Path) -> dict:
    """Write the package's files into ``folder``; return what the description needs."""
    import tifffile
    import torch

    from ..core.resources import weights_dir
    from .bioimageio_card import documentation

    image = test_image(name)
    expected = plugin_outputs(name, image)
    files = {"weights": folder / f"{name}.torchscript.pt", "state": folder / f"{name}.state_dict.pt",
             "arch": folder / f"{name}_architecture.py", "input": folder / "test_input.npy",
             "cover": folder / "cover.png", "doc": folder / "README.md"}
    module = build_module(name)
    module.save(str(files["weights"]))
    state, arch_source, factory, factory_kwargs = build_state(name)
    torch.save(state, files["state"])
    files["arch"].write_text(arch_source, encoding="utf-8")
    # both entries as a bioimage.io tool loads them must reproduce the plugin, or nothing is written
    errors = {}
    for fmt, loaded in (("torchscript", torch.jit.load(str(files["weights"]))),
                        ("pytorch_state_dict", load_state_module(
                            files["arch"], factory, factory_kwargs,
                            torch.load(files["state"], map_location="cpu", weights_only=True)))):
        got = run_module(loaded, image)
        for key, want in expected.items():
            span = max(float(want.max() - want.min()), 1e-6)
            err = float(np.abs(got[key].astype(np.float64) - want).max())
            errors[f"{key} ({fmt})"] = err / span
            if err > (1e-4 * span if want.dtype.kind == "f" else 0):
                raise RuntimeError(f"{name}: the exported {fmt} {key} differs from the plugin's by {err:g} "
                                   f"({err / span:.2e} of its range); not writing the package")
    np.save(files["input"], image.astype(np.float32)[None, None])
    # sample tensors (FAIR: viewable files): the same arrays as 2-D TIFFs
    tifffile.imwrite(folder / "sample_input.tif", image.astype(np.float32))
    files["sample:input"] = folder / "sample_input.tif"
    for key, arr in expected.items():
        files[key] = folder / f"test_{key}.npy"
        np.save(files[key], arr)
        files[f"sample:{key}"] = folder / f"sample_{key}.tif"
        tifffile.imwrite(files[f"sample:{key}"], np.moveaxis(arr[0], 0, -1) if arr.shape[1] > 1 else arr[0, 0])
    _cover(files["cover"], image, expected)
    files["doc"].write_text(documentation(name, image.shape, errors), encoding="utf-8")
    attach = [weights_dir() / f"{name}_eval.json"] + ([weights_dir() / "delpnet_confusion.png"]
                                                       if name == "delpnet" else [])
    for src in attach:
        if src.exists():
            files[f"attach:{src.name}"] = folder / src.name
            shutil.copyfile(src, files[f"attach:{src.name}"])
    return {"files": files, "expected": expected, "torch_version": torch.__version__.split("+")[0],
            "multiple": int(factory_kwargs.get("multiple", 1)), "min_side": MIN_SIDE,
            "factory": factory, "factory_kwargs": factory_kwargs}


def describe(name: str, staged: dict):
    """The bioimageio ``ModelDescr`` of a staged package (validated on construction)."""
    from .bioimageio_card import model_description

    return model_description(name, staged, sha256_of=sha256_of)


def export_bioimageio(name: str, output, *, overwrite: bool = False) -> dict:
    """Write the bioimage.io package (format 0.5) of network ``name`` to ``output``.

    ``output`` is a folder (its ``rdf.yaml`` is what bioimage.io tools open) or a ``.zip`` file.
    The package is built and validated in a temporary place beside ``output`` and moved into
    place only when complete. Returns ``{"method", "package", "rdf", "files": {name: sha256}}``.
    Raises ValueError for an unknown name or an existing output without ``overwrite``.
    """
    if name not in EXPORTABLE:
        raise ValueError(f"cannot export {name!r}; choose one of: {', '.join(EXPORTABLE)}")
    _require_bioimageio()
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    output = Path(output)
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists (use --overwrite to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        stage = work / "stage"
        stage.mkdir()
        staged = _stage(name, stage)
        descr = describe(name, staged)
        built = work / "package"
        if output.suffix == ".zip":
            save_bioimageio_package(descr, output_path=built.with_suffix(".zip"))
            built = built.with_suffix(".zip")
        else:
            save_bioimageio_package_as_folder(descr, output_path=built)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        os.replace(built, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    listing = ({p.name: sha256_of(p) for p in sorted(output.iterdir()) if p.is_file()}
               if output.is_dir() else {output.name: sha256_of(output)})
    return {"method": name, "package": str(output),
            "rdf": str(output / "rdf.yaml") if output.is_dir() else str(output), "files": listing}
