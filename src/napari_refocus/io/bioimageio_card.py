"""The text and the description (``ModelDescr``, format 0.5) of a bioimage.io package.

:func:`documentation` writes the package's README: what the exported module does (the
plugin's processing baked in), its limits, how it was made, then the network's model card
``weights/<name>.md`` unchanged. :func:`model_description` builds the validated description.
"""

from __future__ import annotations

from urllib.parse import quote_plus

#: the project's licence (pyproject.toml); the weights were trained by the project
LICENSE_ID = "BSD-3-Clause"

TITLES = {
    "comi-cyclegan": "COMI CycleGAN generator",
    "refocus-unet": "ReFocus U-Net generator",
    "m-deblurgan": "M-Deblurgan generator (x2)",
    "h2t-msunet": "Head-to-tail multi-scale U-Net generator",
    "delpnet": "DelpNet defocus classifier",
}


def _search(title: str) -> str:
    return "https://scholar.google.com/scholar?q=" + quote_plus(f'"{title}"')


#: the seed papers (``../shared/seeds``): a DOI or URL where the seed text gives one; for the
#: two whose text gives none, a search for the exact title (said so in the citation text)
SEEDS = {
    "comi-cyclegan": ("Zhang C, Jiang H, Liu W, Li J, Tang S, Juhas M, Zhang Y. Correction of out-of-focus "
                      "microscopic images by deep learning (COMI). Code: github.com/jiangdat/COMI.",
                      {"url": "https://github.com/jiangdat/COMI"}),
    "refocus-unet": ("Tian Y. ReFocus: Making Out-of-Focus Microscopy Images In-Focus Again (blog post). "
                     "The seed text gives no address; the link searches for the title.",
                     {"url": _search("ReFocus: Making Out-of-Focus Microscopy Images In-Focus Again")}),
    "m-deblurgan": ("M-Deblurgan: deblurring and x2 super-resolution for microscopes (deblurring "
                    "encoder-decoder, optimal approximation and SR modules). The seed text gives no address; "
                    "the link searches for the name.",
                    {"url": _search("M-Deblurgan")}),
    "h2t-msunet": ("Defocus Deblur Microscopy via head-to-tail cross-scale fusion. The seed text gives no "
                   "address; the link searches for the title.",
                   {"url": _search("Defocus Deblur Microscopy via head-to-tail cross-scale fusion")}),
    "delpnet": ("He D, Cai D, Zhou J, Luo J, Chen S-L. Restoration of Out-of-Focus Fluorescence Microscopy "
                "Images Using Learning-Based Depth-Variant Deconvolution. IEEE Photonics Journal 12(2), 2020.",
                {"doi": "10.1109/JPHOT.2020.2974766"}),
}
BBBC006 = ("Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy image sets for "
           "validation. Nature Methods 9(7):637, 2012 (BBBC006v1: training images and the test image).",
           {"doi": "10.1038/nmeth.2083"})


def _what(name: str, shape) -> str:
    if name == "delpnet":
        return """\
- **Input** `input`: one 2-D widefield fluorescence image `(batch=1, channel=1, y, x)`, float32 in its own
  units (e.g. 16-bit counts), `y` and `x` = 84 + 42 n pixels, taken at DelpNet's training sampling
  (0.65 um pixels, NA 0.5, 451 nm; other objectives: resample first, as napari-refocus does).
- **Outputs**: `probabilities` `(1, 12, rows, cols)`: DelpNet's softmax per 84x84 patch on a 42-px grid
  (classes 0..10 = defocus 0, 2, ..., 20 um; 11 = background); `levels` `(1, 1, rows, cols)` uint8: the
  class per patch after napari-refocus's background rule (11 = background).
- **Baked into the TorchScript module** (the spec's processing ops cannot express it): the image's
  robust range (1st..99.8th percentile) mapped to 150..1150 counts (clipped at 0), divided by 65535;
  84x84 patches every 42 px; softmax; the relative background rule (a patch whose canonical maximum is
  below 230 and whose range is below max(30, 6 noise sigmas) is background). This is
  `napari_refocus.defocus_map(image)` with the default (training) optics, stride 42 and no TTA;
  napari-refocus computes the percentiles from a regular subsample above 4 Mpx, the module from every
  pixel."""
    up = "2 x" if name == "m-deblurgan" else "the same size as"
    return f"""\
- **Input** `input`: 2-D widefield fluorescence images `(batch, channel=1, y, x)`, float32 in their own
  units (e.g. 16-bit counts), each side >= 128 px (a multiple of the network's `multiple`: the spec's
  `step`), at the training sampling (0.65 um pixels, NA 0.5, 451 nm) for the best result.
- **Output** `output`: the refocused image, {up} the input, float32 in the input's units.
- **Baked into the TorchScript module** (the spec's `scale_range` has no inverse, so the plugin's
  normalisation cannot be written as pre/post-processing): per image, `(x - p1) / (p99.8 - p1)` with its
  1st/99.8th percentiles, a 48-px mirrored margin and mirror padding to the network's multiple, the
  network, the crop, and `y * (p99.8 - p1) + p1` back to the input's units. This is exactly what
  `napari_refocus.refocus(image, method="{name}", tile=1024)` does for an image that fits in one 1024-px tile
  (up to 928 px a side; 1024 px is the plugin's default tile for the x1 generators, 512 for m-deblurgan's
  x2). Larger images: napari-refocus cuts tiles that overlap by 96 px, blends
  them with triangular weights and normalises them all with the whole image's percentiles; a tool that
  tiles this package itself normalises each tile by its own percentiles, which can differ.
- **Not in the package**: TTA, the resampling to the training sampling for other objectives, and a
  per-patch gate of the change by DelpNet's map (`never_worse`, in napari-refocus versions that
  have it): the package is the network alone, as `refocus(image, method="{name}", never_worse=False)`."""


def documentation(name: str, shape, errors: dict) -> str:
    """The package README: what it does, how it was tested and made, then the model card.
    ``errors``: the module's largest difference from the plugin per output, as a fraction of
    the output's range."""
    from ..core.resources import package_version, weights_dir

    card = (weights_dir() / f"{name}.md").read_text(encoding="utf-8")
    return f"""# napari-refocus `{name}`: {TITLES[name]} (bioimage.io package)

Exported by `napari-refocus export-bioimageio {name} -o DIR` (napari-refocus {package_version()}).

## What the package does

{_what(name, shape)}

## Validation

`test_input.npy` (and `sample_input.tif`) is a {shape[0]}x{shape[1]} crop of the real out-of-focus
BBBC006 Hoechst field shipped with napari-refocus (`bbbc006_b14_s2_w1_z00_defocused.tif`, plane z_00,
32 um from focus). The test outputs were made by napari-refocus itself on the CPU. The export refuses
to write a package whose module differs from them by more than 1e-4 of their range (classes: not at
all), and the package's reproducibility tolerance is that same bound. Measured at export, largest
difference / range: {", ".join(f"`{k}` {v:.2e}" for k, v in errors.items())}. `bioimageio test rdf.yaml`
passes on every package in napari-refocus's CI (`.ci/run`). The model card below gives the network's
held-out restoration / classification metrics.

## Weights

- `pytorch_state_dict` (the original): `{name}.state_dict.pt`, the state of the wrapper (the network's
  tensors under `net.`), and `{name}_architecture.py`, generated by napari-refocus from its own
  sources: `models/layers.py` and the network's modules verbatim but for their import lines, the
  wrappers of `io/bioimageio_modules.py`, and the factory class named in `rdf.yaml`.
- `torchscript` (converted from it): `torch.jit.trace` of the network inside a `torch.jit.script`
  wrapper.
- Both float32, CPU or CUDA, and both checked against the plugin at export. napari-refocus itself
  runs the networks under fp16 autocast on CUDA (and DelpNet under bf16 on CPUs with native bf16);
  the test outputs are its float32 CPU path.

---

{card}"""


def model_description(name: str, staged: dict, *, sha256_of):
    """The validated ``bioimageio.spec.model.v0_5.ModelDescr`` of a staged package."""
    from bioimageio.spec.model import v0_5 as s

    from ..core.resources import package_version

    f = staged["files"]
    exp = staged["expected"]

    def file(key):
        return s.FileDescr(source=f[key], sha256=sha256_of(f[key]))

    def space(axis, size, scale):
        return s.SpaceInputAxis(id=s.AxisId(axis), size=size, unit="micrometer", scale=scale)

    def out_space(axis, scale, offset=0):
        return s.SpaceOutputAxis(id=s.AxisId(axis), unit="micrometer", scale=scale,
                                 size=s.SizeReference(tensor_id=s.TensorId("input"), axis_id=s.AxisId(axis),
                                                      offset=offset))

    pixel_um = 0.65
    if name == "delpnet":
        size = s.ParameterizedSize(min=84, step=42)
        batch = s.BatchAxis(size=1)
        outputs = [
            s.OutputTensorDescr(
                id=s.TensorId("probabilities"), test_tensor=file("probabilities"), sample_tensor=file("sample:probabilities"),
                description="DelpNet softmax per 84x84 patch, 42-px grid (classes 0..10: 0..20 um, 11: background)",
                axes=[s.BatchAxis(size=1),
                      s.ChannelAxis(channel_names=[s.Identifier(f"level{i}") for i in range(11)]
                                    + [s.Identifier("background")]),
                      out_space("y", 42 * pixel_um, -1), out_space("x", 42 * pixel_um, -1)],
                data=s.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0))),
            s.OutputTensorDescr(
                id=s.TensorId("levels"), test_tensor=file("levels"), sample_tensor=file("sample:levels"),
                description="defocus class per patch after the background rule (11 = background)",
                axes=[s.BatchAxis(size=1), s.ChannelAxis(channel_names=[s.Identifier("level")]),
                      out_space("y", 42 * pixel_um, -1), out_space("x", 42 * pixel_um, -1)],
                data=s.NominalOrOrdinalDataDescr(values=list(range(12)), type="uint8")),
        ]
        tolerances = [s.ReproducibilityTolerance(relative_tolerance=0.0, absolute_tolerance=1e-4,
                                                 output_ids=[s.TensorId("probabilities")]),
                      s.ReproducibilityTolerance(relative_tolerance=0.0, absolute_tolerance=0.0,
                                                 mismatched_elements_per_million=0, output_ids=[s.TensorId("levels")])]
    else:
        multiple = int(staged["multiple"])
        size = s.ParameterizedSize(min=max(int(staged["min_side"]), multiple), step=multiple)
        batch = s.BatchAxis()
        r = 2 if name == "m-deblurgan" else 1
        out = exp["output"]
        outputs = [s.OutputTensorDescr(
            id=s.TensorId("output"), test_tensor=file("output"), sample_tensor=file("sample:output"),
            description=f"refocused image ({r}x the input's size), in the input's intensity units",
            axes=[s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier("intensity")]),
                  out_space("y", pixel_um / r), out_space("x", pixel_um / r)],
            data=s.IntervalOrRatioDataDescr(type="float32"))]
        tolerances = [s.ReproducibilityTolerance(
            relative_tolerance=0.0, absolute_tolerance=1e-4 * float(out.max() - out.min()),
            output_ids=[s.TensorId("output")])]
    inputs = [s.InputTensorDescr(
        id=s.TensorId("input"), test_tensor=file("input"), sample_tensor=file("sample:input"),
        description="one widefield fluorescence image in its own intensity units (e.g. 16-bit counts)",
        axes=[batch, s.ChannelAxis(channel_names=[s.Identifier("intensity")]),
              space("y", size, pixel_um), space("x", size, pixel_um)],
        data=s.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[s.EnsureDtypeDescr(kwargs=s.EnsureDtypeKwargs(dtype="float32"))])]
    seed_text, seed_ref = SEEDS[name]
    torch_version = s.Version(staged["torch_version"])
    attachments = [file(k) for k in sorted(f) if k.startswith("attach:")]
    return s.ModelDescr(
        name=f"napari-refocus {name}",
        description=(f"{TITLES[name]} of napari-refocus (re-implemented from the seed paper, trained on synthetic "
                     "defocus of BBBC006 widefield images): " + (
                         "defocus class (0..20 um, background) of every 84x84 patch." if name == "delpnet" else
                         "refocuses an out-of-focus widefield fluorescence image, blind (no defocus level needed).")),
        authors=[s.Author(name="napari-refocus developers")],
        cite=[s.CiteEntry(text=seed_text, **seed_ref), s.CiteEntry(text=BBBC006[0], **BBBC006[1])],
        license=s.LicenseId(LICENSE_ID),
        documentation=file("doc"),
        covers=[file("cover")],
        attachments=attachments,
        tags=["napari-refocus", "widefield", "fluorescence", "2d", "pytorch", "bbbc006",
              "defocus" if name == "delpnet" else "deblurring", "classification" if name == "delpnet" else "restoration"],
        version=package_version(),
        inputs=inputs,
        outputs=outputs,
        weights=s.WeightsDescr(
            pytorch_state_dict=s.PytorchStateDictWeightsDescr(
                source=f["state"], sha256=sha256_of(f["state"]), pytorch_version=torch_version,
                architecture=s.ArchitectureFromFileDescr(source=f["arch"], sha256=sha256_of(f["arch"]),
                                                         callable=s.Identifier(staged["factory"]),
                                                         kwargs=staged["factory_kwargs"])),
            torchscript=s.TorchscriptWeightsDescr(
                source=f["weights"], sha256=sha256_of(f["weights"]), pytorch_version=torch_version,
                parent="pytorch_state_dict")),
        config=s.Config(bioimageio=s.BioimageioConfig(reproducibility_tolerance=tolerances)),
    )

