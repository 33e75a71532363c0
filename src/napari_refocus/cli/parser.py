"""The argument parser: every command, its options and the parents they share."""

from __future__ import annotations

import argparse

from .commands import cmd_batch, cmd_deconvolve, cmd_defocus_map, cmd_demo, cmd_evaluate, cmd_methods, cmd_refocus, cmd_simulate, cmd_train, cmd_triage
from .calibrate import add_calibrate
from .export import add_export_command
from .common import checked, _parent, _common, _optics_options, _many_images, PROG


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations anywhere: "--level" must never silently mean "--level-step-um"
    p = argparse.ArgumentParser(prog=PROG, description="Refocus out-of-focus microscopy images.",
                                allow_abbrev=False)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = _parent(_common)
    device = _parent(lambda q: q.add_argument("--device", default="auto", help="auto | cpu | cuda | mps"))
    quiet = _parent(lambda q: q.add_argument("-q", "--quiet", action="store_true", help="no progress bar"))
    overwrite = _parent(lambda q: q.add_argument("--overwrite", action="store_true",
                                                 help="replace existing outputs (never an input)"))
    float32 = _parent(lambda q: q.add_argument("--float32", action="store_true",
                                               help="write float32 instead of the input dtype"))
    optics, images = _parent(_optics_options), _parent(_many_images)
    fmt = _parent(lambda q: q.add_argument(
        "--format", dest="fmt", choices=("tiff", "ome-zarr"), default=None,
        help="output format: tiff (default) or ome-zarr (<stem>_...ome.zarr: NGFF 0.4 with a pyramid, the "
             "input's axes and pixel sizes, written block by block, resumed when run again after a kill)"))

    def command(name, func, help, *parents):
        c = sub.add_parser(name, help=help, allow_abbrev=False, parents=[common, *parents])
        c.set_defaults(func=checked(func))  # every option checked (core.validation) before it runs
        return c

    s = command("simulate", cmd_simulate, "defocus an in-focus image (Born-Wolf PSF + Poisson noise)",
                overwrite, optics)
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--level", type=int, required=True, help="defocus level 0..10 (2 um each)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--gain", type=float, default=1.0, help="photon counts per intensity unit (1)")
    s.add_argument("--no-noise", action="store_true")

    d = command("deconvolve", cmd_deconvolve, "Richardson-Lucy with a level or a per-patch level map",
                device, float32, overwrite, quiet, optics)
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--level", type=int, help="one defocus level 0..10 for the whole image")
    d.add_argument("--level-map", help="TIFF of levels on the 84/42 patch grid (11 = background)")
    d.add_argument("--iterations", type=int, default=15)
    d.add_argument("--montage", default="triangular", choices=["triangular", "rectangular"])
    d.add_argument("--padding", default="reflect", choices=["reflect", "zeros"])

    e = command("evaluate", cmd_evaluate, "PSNR / SSIM / PCC against a ground truth (JSON)")
    e.add_argument("--gt", required=True)
    e.add_argument("--pred", required=True)
    e.add_argument("--input", help="the degraded input, to report its metrics and the gains")
    e.add_argument("--data-range", type=float, default=None, help="default: gt.max() - gt.min()")
    e.add_argument("--register", action="store_true",
                   help="a real pair: shift each image onto the ground truth and fit its intensities (a*x+b) "
                        "on the region all cover before the metrics; the JSON adds the shifts and fits")

    command("methods", cmd_methods, "list restoration methods, their weights, options and device", device)

    dm = command("defocus-map", cmd_defocus_map, "DelpNet defocus class and defocus (um) per patch", device,
                 overwrite, quiet, optics, fmt)
    dm.add_argument("inputs", nargs="+", help="files, folders or globs")
    dm.add_argument("-o", "--outdir", required=True)
    dm.add_argument("--stride", type=int, default=42)
    dm.add_argument("--tta", action="store_true",
                    help="average DelpNet over the 8 flips/rotations of each patch (8x slower, more accurate)")

    rf = command("refocus", cmd_refocus, "restore images (stacks plane by plane, RGB per channel) with a method",
                 images, device, float32, overwrite, quiet, optics, fmt)
    rf.add_argument("--chunked", action="store_true",
                    help="read lazily and write a tiled TIFF block by block (automatic when a run in memory "
                         "would not fit the memory available)")

    b = command("batch", cmd_batch, "refocus many images on a dask cluster (restartable)",
                images, device, quiet, optics, fmt)
    b.set_defaults(device="cpu")
    b.add_argument("--scheduler", help="address of a dask.distributed scheduler (default: a local cluster)")
    b.add_argument("--workers", type=int, default=1, help="local cluster worker processes (1)")
    b.add_argument("--min-level", type=float, default=None,
                   help="triage: copy images whose focus level is below this instead of restoring them")
    b.add_argument("--patch-min-level", type=int, default=None,
                   help="triage: leave patches below this level untouched")

    tg = command("triage", cmd_triage, "best-focus plane of a z-stack, per channel", device)
    tg.add_argument("input")
    tg.add_argument("--z-axis", type=int, default=None, help="default: the Z of the file's axes (OME/ImageJ), else 0")
    tg.add_argument("--channel-axis", type=int, default=None, help="default: the C of the file's axes, if any")
    tg.add_argument("--no-delpnet", action="store_true", help="only the model-free sharpness measure")

    tr = command("train", cmd_train, "train a model (delpnet or a generator) and write its weights", device)
    tr.add_argument("model", help="delpnet, or a learned method: comi-cyclegan, refocus-unet, m-deblurgan, h2t-msunet")
    tr.add_argument("--out", default="weights", help="output folder for <model>.safetensors")
    tr.add_argument("--epochs", type=int, default=None, help="delpnet: training epochs (80)")
    tr.add_argument("--width", type=int, default=None,
                    help="delpnet: channels of the first block (16: the shipped weights; 64: the paper's 2.3 M)")
    tr.add_argument("--data-workers", dest="data_workers", type=int, default=None,
                    help="delpnet: draw whole epochs of patches ahead in this many processes (the same patches; "
                    "for a GPU)")
    tr.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                    help="delpnet: the training steps' arithmetic (auto: float16 on CUDA, else float32 unless torch "
                    "reports bf16; bf16: also on a CPU with AMX)")
    tr.add_argument("--psf-model", dest="psf_model", choices=("paraxial", "exact"),
                    help="delpnet: the PSF of its training blur (paraxial: LB-DVD eq. 2, the shipped weights)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--data-root", help="folder with the shared data sets (default ../shared/data)")
    tr.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    tr.add_argument("--minutes", type=float, help="generators: training time budget")
    tr.add_argument("--steps", type=int, help="generators: optimiser steps")
    tr.add_argument("--from-zstack", dest="from_zstack", help="generators: fine-tune on real pairs from this z-stack")
    tr.add_argument("--init", help="start from these weights (.safetensors): a fine-tune")
    tr.add_argument("--lr", type=float, help="peak learning rate (default: the method's; delpnet 0.003)")
    tr.add_argument("--object-scales", dest="object_scales", action="store_true",
                    help="delpnet: also draw patches from sources shrunk to 1/1.5, 1/2 and 1/2.5 of their size "
                    "(objects as small as a high-NA image's in the map's pixels)")
    tr.add_argument("--objectives", action="store_true",
                    help="delpnet: also draw patches blurred by five other objectives (exact PSF), each class at "
                    "the defocus where the --init network reads it (the weights delpnet-objectives)")
    tr.add_argument("--consistency", type=float, metavar="WEIGHT",
                    help="delpnet: each crop seen by two cameras (other exposure and noise); their answers' "
                    "symmetric KL divergence is added to the loss with this weight (0: off)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="generators: override a training setting, e.g. --set adv_weight=0.005 (JSON values)")
    tr.add_argument("--threads", dest="num_threads", type=int, help="torch CPU threads (default: all cores)")
    tr.add_argument("--optics", metavar="OPTICS.json", help="generators, with --from-zstack: the stack's calibration "
                    "(napari-refocus calibrate): its focal plane, and synthetic pairs blurred with the fitted PSF")

    add_export_command(command, overwrite)

    m = command("demo", cmd_demo, "open napari with the sample pair (or --headless: run on it)", device)
    m.add_argument("--headless", action="store_true", help="no GUI: write results to --out, print metrics")
    m.add_argument("--out", default="refocus-demo", help="output folder for --headless")
    m.add_argument("--screenshot", help="render the window to this PNG and exit")
    add_calibrate(command)
    return p
