"""Real data: every real defocused/in-focus pair the project can reach, every method, next to
the same method on synthetic blur of the same reference (the sim-to-real gap).

Sets (``../shared/data``; each folder's SOURCE.md says what it is):

* **DFNN single shots**: the in-focus shot ``ON`` of one cell against the shots at a preset
  defocus of -/+0.1, 0.3, 0.5, 0.7 um (``--pairs all``: all 14; separate exposures: they drift
  by up to 2 px and two are ~12 % brighter);
* **DFNN stack**: six planes of the 34-plane z-stack (step 0.05 um; -0.95 .. +0.7 um) against the
  upstream in-focus plane, order 51 (``--pairs all``: all 33);
* **bead stack** (pyotf): the planes -/+0.6 and 1.2 um of a 21-plane stack of one sub-resolution
  bead (step 0.3 um) against its brightest plane (``--pairs all``: all 20).
* BBBC006: the reachable z_00 planes and in-focus planes share no field (checked below from the
  file names), so there is no BBBC006 pair.

Protocol, the same for every image compared with a reference (input, each method's output):
registered to the reference by the sub-pixel cross-correlation peak
(:func:`napari_refocus.core.align.register_translation`, 1/20 px), then intensity-matched by the
least-squares affine ``a * x + b`` fitted on the pixels all registered images cover
(:func:`~napari_refocus.core.align.match_intensity`); PSNR (data range = the reference's on that
region), SSIM and PCC against the reference; gain = method - input. Every method runs through
``napari_refocus.api.refocus`` with its defaults and the set's optics. The synthetic column is
the same reference blurred by the set's optics at the pair's distance (``simulate``, Poisson
noise at the pair's counts), through the same methods and the same protocol. The row "rl told the
known distance" is Richardson-Lucy (15 iterations) with the exact (non-paraxial) PSF at the pair's
known distance: the registered ``rl`` method given what a user with the z-stack knows and no
other method is told.

Every set runs twice: with the optics assumed for it (the sources do not state NA, emission, and
for DFNN the pixel size) and with the optics ``calibrate`` fits to its stack (``--bead`` for the
bead, the thin-sample fit for the DFNN stack, whose fit the DFNN single shots share); rows
"<set>, calibrated". ``--assumed-only`` skips the second run.

    python benchmarks/eval_real.py [--threads N] [--pairs quick|default|all] [--sets single,stack,bead]
                                   [--assumed-only] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import re
import time

import numpy as np
from _report import SHARED_DATA, git_rev, machine, publish

from napari_refocus.core.calibration import RESIDUAL_LIMIT

DFNN = SHARED_DATA / "DFNN_defocus" / "data" / "test" / "mitochondria"
BEAD = SHARED_DATA / "pyotf_bead_stack" / "fixtures" / "BIL113_zstack_z300nm_current.tif"
ORACLE = "rl told the known distance (exact PSF)"
#: rl as users get it (its never-worse gate on), told the same distance
RL_GATED = "rl told the known distance, gated (default)"
CONTROL = "control: input x2 bilinear, binned 2x2"
LBDVD_OFF = "lbdvd, never_worse off"
#: DelpNet needs 378 px at the bead's 0.087 um pixels and NA 1.1 (the map's 84 px patches at the
#: canonical lambda / NA sampling); more at a lower NA (:func:`min_side`)
MIN_SIDE = 400
#: assumed optics (the sources do not state them; see OPTICS_NOTE)
DFNN_OPTICS = dict(pixel_um=0.104, na=1.1, refractive_index=1.33, wavelength_nm=520.0, psf_model="exact")
BEAD_OPTICS = dict(pixel_um=6.5 / 74.4, na=1.1, refractive_index=1.33, wavelength_nm=600.0, psf_model="exact")
CAL_NAME = {"DFNN": "DFNN stack", "bead": "bead stack"}
OPTICS_NOTE = {
    "DFNN": "light-sheet set-up with lattice illumination, 488 nm excitation (SOURCE.md); pixel size, detection "
            "NA, immersion and emission are NOT stated. Assumed: a lattice light-sheet's 25x/1.1 water detection, "
            "0.104 um pixels, 520 nm emission (a green mitochondrial dye)",
    "bead": "0.3 um z-step, 560 nm excitation, 6.5 um camera pixels at 74.4x = 0.087 um (the instrument's "
            "settings file); detection NA, immersion and emission NOT stated. Assumed: 1.1 water, 600 nm emission",
}


def bbbc006_common_fields():
    """Fields (well_site) present both defocused (z_00) and in focus among the reachable BBBC006
    files (z_16 w2 TIFFs, near-focus w1 PNGs)."""
    def fields(paths, pattern):
        return {m.group(1) + "_" + m.group(2) for p in paths if (m := re.search(pattern, p))}

    z00 = fields(glob.glob(str(SHARED_DATA / "BBBC006_microscopeimagequality" / "**" / "00_*.tif"), recursive=True),
                 r"03212011_([a-p]\d\d)_(s\d)_w")
    sharp = fields(glob.glob(str(SHARED_DATA / "BBBC006_w2_infocus" / "**" / "*.tif"), recursive=True),
                   r"03212011_([a-p]\d\d)_(s\d)_w")
    sharp |= fields(glob.glob(str(SHARED_DATA / "BBBC006_microscopeimagequality" / "**" / "*.png"), recursive=True),
                    r"__([a-p]\d\d)__(s\d)__")
    return sorted(z00 & sharp), len(z00), len(sharp)


def dfnn_single(extent):
    import tifffile

    ref = tifffile.imread(str(DFNN / "single" / "cell2G2Dz0p3umON.tif"))
    pairs = []
    for sign, tag in ((-1, "M"), (1, "P")):
        for tenth in {"quick": (3, 7), "default": (1, 3, 5, 7), "all": range(1, 8)}[extent]:
            img = tifffile.imread(str(DFNN / "single" / f"cell2G2Dz0p3umOff{tag}0p{tenth}um.tif"))
            pairs.append((f"{sign * tenth / 10:+.1f}", sign * tenth / 10, img, ref))
    return pairs


def dfnn_stack(extent):
    import tifffile

    def plane(order):
        (path,) = glob.glob(str(DFNN / "stack" / f"*Abs{order:04d}.tif"))
        return tifffile.imread(path)

    ref = plane(51)  # the upstream in-focus plane; defocus = (order - 51) x 0.05 um
    orders = {"quick": (41, 61), "default": (32, 39, 45, 57, 63, 65),
              "all": [o for o in range(32, 66) if o != 51]}[extent]
    return [(f"{(o - 51) * 0.05:+.2f}", (o - 51) * 0.05, plane(o), ref) for o in orders]


def bead_stack(extent):
    import tifffile

    st = tifffile.imread(str(BEAD))
    focus = int(np.argmax(st.reshape(len(st), -1).max(1)))
    planes = {"quick": (focus - 4, focus + 4), "default": (focus - 4, focus - 2, focus + 2, focus + 4),
              "all": [z for z in range(len(st)) if z != focus]}[extent]
    return [(f"{(z - focus) * 0.3:+.1f}", (z - focus) * 0.3, st[z], st[focus]) for z in planes
            if 0 <= z < len(st)]


def psf_window(optics, z_um):
    """An odd PSF window (px) holding the geometric blur disc at ``z_um`` plus two lambda/NA."""
    tan = optics.na / np.sqrt(optics.refractive_index ** 2 - optics.na ** 2)
    r = (abs(z_um) * tan + 2 * optics.wavelength_nm * 1e-3 / optics.na) / optics.pixel_um
    return max(37, 2 * int(np.ceil(r)) + 1)


def at_distance(optics, z_um, **kw):
    """``optics`` whose level 1 is ``|z_um|`` from focus (a window wide enough for it)."""
    return dataclasses.replace(optics, level_step_um=abs(z_um), n_levels=2, psf_size=psf_window(optics, z_um), **kw)


def calibrate(key, optics, cache=None):
    """The optics ``calibrate`` fits to a whole stack (bead: ``--bead``; DFNN: thin sample) with
    the pixel size, wavelength and index of ``optics``; returns (Optics, the Calibration, a line
    saying the fit). ``cache``: a JSON file of earlier fits (key -> the Calibration's fields and
    the commit that made it), read when it holds this key with these given values, else written
    (the DFNN fit takes minutes to tens of minutes on a loaded machine)."""
    import json
    from pathlib import Path

    import tifffile

    from napari_refocus.core.calibration import Calibration
    from napari_refocus.core.progress import drain
    from napari_refocus.training.pairs import read_zstack

    given = dict(pixel_um=optics.pixel_um, wavelength_nm=optics.wavelength_nm,
                 refractive_index=optics.refractive_index, psf_model=optics.psf_model)
    what = {"bead": "`calibrate --bead` on the whole 21-plane stack",
            "DFNN": "`calibrate` (thin sample) on the 34-plane stack, central 256x256"}[key]
    store = json.loads(Path(cache).read_text()) if cache and Path(cache).exists() else {}
    hit = store.get(key)
    if hit and all(hit["fields"][k] == v for k, v in given.items()):
        cal = Calibration(**hit["fields"])
        fitted = dataclasses.replace(optics, na=cal.na, defocus_scale=cal.defocus_scale)
        return fitted, cal, describe(what + f" (fitted at commit {hit['commit']}, read from the cache)", optics, cal)
    t0 = time.perf_counter()
    if key == "bead":
        from napari_refocus.core.calibration_bead import iter_fit_bead

        cal = drain(iter_fit_bead(tifffile.imread(str(BEAD)), z_step_um=0.3, **given))
    else:
        from napari_refocus.core.calibration_thin import iter_fit_thin

        stack, _ = read_zstack(DFNN / "stack")
        # the central 256x256 of the cell (the whole 800x512 took 13 min on 2 loaded cores and
        # gave the same fit within 0.01 in NA and 0.03 in scale)
        cal = drain(iter_fit_thin(stack[:, 272:528, 128:384], z_step_um=0.05, **given))
    if cache:
        fields = {f.name: getattr(cal, f.name) for f in dataclasses.fields(cal)}
        store[key] = {"commit": git_rev(), "fields": fields}
        Path(cache).write_text(json.dumps(store, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    fitted = dataclasses.replace(optics, na=cal.na, defocus_scale=cal.defocus_scale)
    return fitted, cal, describe(what, optics, cal) + f", {time.perf_counter() - t0:.0f} s"


def describe(what, optics, cal) -> str:
    """One line: the fitted optics, the residual and the quality verdict with its reasons."""
    free = cal.free_scale_fit
    return (f"{what}: NA {cal.na:.3f} (assumed {optics.na}), defocus scale {cal.defocus_scale:.3f}, focal plane "
            f"{cal.focal_plane_index:.2f}, residual {cal.residual:.3f} (limit {RESIDUAL_LIMIT[cal.mode]}; quality "
            f"{cal.quality}" + (f": {'; '.join(cal.reasons)}" if cal.reasons else "") + ")"
            + (f"; free-scale check: NA {free['na']:.3f}, scale {free['defocus_scale']:.2f}, residual "
               f"{free['residual']:.3f}" if free else ""))


def binned(out, shape):
    """An ``r`` x output (m-deblurgan's x2) binned ``r`` x ``r`` back onto the input's grid."""
    r = out.shape[0] // shape[0]
    if r <= 1:
        return out
    h, w = shape
    return out[: h * r, : w * r].reshape(h, r, w, r).mean(axis=(1, 3))


def min_side(optics):
    """The side an image needs for DelpNet's map with ``optics`` (its 84-px patch in native
    pixels, at least :data:`MIN_SIDE`)."""
    from napari_refocus.methods.defocus import PATCH, map_scale

    return max(MIN_SIDE, int(np.ceil(PATCH * map_scale(optics))) + 2)


def restore_all(img, optics, z_um, methods):
    """{name: output on the input's grid} for every ``(name, method, keywords)`` in ``methods``,
    the oracle and the x2 control.

    An image smaller than DelpNet's minimum at this pixel size (the 128 px bead planes) is
    padded with its median (the empty field around a bead) to :func:`min_side` for every method
    alike, and the outputs cropped back."""
    import napari_refocus as nr
    from napari_refocus.core.resample import resample

    h, w = img.shape
    side = min_side(optics)
    ph, pw = max(0, side - h), max(0, side - w)
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    big = np.pad(img, pad, constant_values=np.median(img)) if ph or pw else img
    crop = (slice(pad[0][0], pad[0][0] + h), slice(pad[1][0], pad[1][0] + w))
    outs = {}
    for name, m, kw in methods:
        out = np.asarray(nr.refocus(big, method=m, device="cpu", optics=optics, **kw).image, dtype=np.float64)
        outs[name] = binned(out, big.shape)[crop]
    told = at_distance(optics, z_um, psf_model="exact")
    outs[ORACLE] = nr.deconvolve(img, level=1, iterations=15, device="cpu", optics=told).astype(np.float64)
    outs[RL_GATED] = np.asarray(nr.refocus(big, method="rl", level=1, device="cpu", optics=told).image,
                                dtype=np.float64)[crop]
    # what an x2 method returns where it changes nothing (the input resampled x2), binned as it
    # is: the smoothing that binning alone adds, for reading m-deblurgan's row
    up = resample(img, shape=(2 * h, 2 * w))
    outs[CONTROL] = binned(up.astype(np.float64), img.shape)
    return outs


def score(outs, img, ref):
    """{name: {psnr, ssim, pcc} gains over the input}, every image registered and
    intensity-matched to ``ref`` on the region all of them cover."""
    from napari_refocus.core.metrics import registered_metrics

    reg = registered_metrics({"input": img, **outs}, ref)
    m, shifts = reg["metrics"], reg["shift_px"]
    return {k: {q: m[k][q] - m["input"][q] for q in ("psnr", "ssim", "pcc")} for k in outs}, m["input"], shifts["input"]


def run_set(name, pairs, optics, methods, seed=0):
    """Per pair: real gains, synthetic gains, the input's metrics and shift."""
    import napari_refocus as nr

    rows = []
    for j, (label, z, img, ref) in enumerate(pairs):
        t0 = time.perf_counter()
        real, base, shift = score(restore_all(img, optics, z, methods), img, ref)
        sim_img = nr.simulate(ref, level=1, noise="poisson", seed=seed + j, optics=at_distance(optics, z))
        sim, sim_base, _ = score(restore_all(sim_img, optics, z, methods), sim_img, ref)
        rows.append(dict(label=label, z=z, real=real, sim=sim, base=base, sim_base=sim_base, shift=shift))
        print(f"{name} {label} um: input {base['psnr']:.2f} dB (sim {sim_base['psnr']:.2f}), shift "
              f"{shift[0]:+.2f},{shift[1]:+.2f} px; PSNR gain real/sim "
              + ", ".join(f"{k} {real[k]['psnr']:+.2f}/{sim[k]['psnr']:+.2f}" for k in real)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def mean(rows, kind, method, q):
    return float(np.mean([r[kind][method][q] for r in rows]))


def tables(results, names):
    """The one table (means per set and method), the per-distance PSNR table and the verdicts."""
    main = ["| set (pairs) | method | real PSNR | real SSIM | real PCC | synthetic PSNR | synthetic SSIM | "
            "synthetic PCC | gap: synthetic - real PSNR |", "|---|---|---|---|---|---|---|---|---|"]
    per = ["| set | distance (um) | input PSNR real / synthetic | " + " | ".join(names) + " |",
           "|---|---|---|" + "---|" * len(names)]
    verdict = []
    for set_name, rows in results.items():
        have = [k for k in names if k in rows[0]["real"]]
        for k in have:
            g = {(kind, q): mean(rows, kind, k, q) for kind in ("real", "sim") for q in ("psnr", "ssim", "pcc")}
            main.append(f"| {set_name} ({len(rows)}) | {k} | {g['real', 'psnr']:+.2f} | {g['real', 'ssim']:+.3f} | "
                        f"{g['real', 'pcc']:+.3f} | {g['sim', 'psnr']:+.2f} | {g['sim', 'ssim']:+.3f} | "
                        f"{g['sim', 'pcc']:+.3f} | {g['sim', 'psnr'] - g['real', 'psnr']:+.2f} |")
        for r in rows:
            per.append(f"| {set_name} | {r['label']} | {r['base']['psnr']:.2f} / {r['sim_base']['psnr']:.2f} | "
                       + " | ".join(f"{r['real'][k]['psnr']:+.2f}" if k in r["real"] else "" for k in names) + " |")
        real = {k: mean(rows, "real", k, "psnr") for k in have if k not in (ORACLE, RL_GATED, CONTROL, LBDVD_OFF)}
        best = max(real, key=real.get)
        gaps = {k: mean(rows, "sim", k, "psnr") - real[k] for k in real}
        control = mean(rows, "real", CONTROL, "psnr")
        told = mean(rows, "real", ORACLE, "psnr")
        # m-deblurgan's gain over the binning control: what the network adds beyond 2x2 averaging
        beyond = real["m-deblurgan"] - control if "m-deblurgan" in real else None
        verdict.append(f"- **{set_name}**: lbdvd (default) {real['lbdvd']:+.2f} dB "
                       f"({'meets' if real['lbdvd'] >= -0.1 else 'FAILS'} >= -0.1 dB); best method with its "
                       f"defaults {best} {real[best]:+.2f} dB ({'meets' if real[best] > 0 else 'FAILS'} > 0 dB"
                       + (f", but only by binning: the x2 control, binning alone, gives {control:+.2f}, so the "
                          f"network adds {beyond:+.2f}" if best == "m-deblurgan" and beyond <= 0.05 else
                          f"; the x2 control, binning alone, gives {control:+.2f}, so the network adds {beyond:+.2f}"
                          if best == "m-deblurgan" else "")
                       + f"); rl told the pair's distance {told:+.2f} dB ({'> 0' if told > 0 else 'not > 0'}; "
                       f"gated, as users get it, {mean(rows, 'real', RL_GATED, 'psnr'):+.2f}). "
                       f"Sim-to-real gap (synthetic - real PSNR gain) {min(gaps.values()):+.2f} .. "
                       f"{max(gaps.values()):+.2f} dB over the methods (rl told the distance "
                       f"{mean(rows, 'sim', ORACLE, 'psnr') - told:+.2f}); lbdvd with never_worse off "
                       f"{mean(rows, 'real', LBDVD_OFF, 'psnr'):+.2f} dB real, "
                       f"{mean(rows, 'sim', LBDVD_OFF, 'psnr'):+.2f} dB synthetic.")
    return main, per, verdict


def main(argv=None):
    import torch

    import napari_refocus as nr
    from napari_refocus.core.optics import Optics

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", choices=("quick", "default", "all"), default="default",
                    help="quick: 2 pairs per set; default: 4-8; all: every plane / shot")
    ap.add_argument("--sets", default="single,stack,bead", help="comma list of: single, stack, bead")
    ap.add_argument("--assumed-only", action="store_true",
                    help="skip the calibrated rows (by default every set runs again with the optics `calibrate` "
                         "fits to its stack)")
    ap.add_argument("--calibration-cache", help="a JSON file of the stacks' fits: read if it holds them (with "
                    "the same given optics), else written")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    which = set(a.sets.split(","))
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    # every registered method with its defaults (rl needs the distance: it is the known-distance
    # row), and lbdvd without the never-worse gate (what the gate holds back)
    methods = [(m.name, m.name, {}) for m in nr.list_methods() if m.name != "rl"]
    methods.append((LBDVD_OFF, "lbdvd", {"never_worse": False}))
    names = [m[0] for m in methods] + [ORACLE, RL_GATED, CONTROL]
    common, n_z00, n_sharp = bbbc006_common_fields()
    sets = {}
    if DFNN.exists() and "single" in which:
        sets["DFNN single shots"] = (dfnn_single(a.pairs), Optics(**DFNN_OPTICS), "DFNN")
    if DFNN.exists() and "stack" in which:
        sets["DFNN stack"] = (dfnn_stack(a.pairs), Optics(**DFNN_OPTICS), "DFNN")
    if BEAD.exists() and "bead" in which:
        sets["bead stack"] = (bead_stack(a.pairs), Optics(**BEAD_OPTICS), "bead")
    if not sets:
        raise SystemExit(f"no real data under {SHARED_DATA}")
    # one fit per instrument: the DFNN single shots are of the same cell on the same set-up as the
    # stack, so they get the stack's fit (assumed: nothing upstream says the shots' galvo preset
    # and the stack's steps share one calibration)
    fits, cal_lines = {}, []
    if not a.assumed_only:
        for key, optics in {key: optics for _, optics, key in sets.values()}.items():
            fits[key] = calibrate(key, optics, a.calibration_cache)
            cal_lines.append(f"- **{CAL_NAME[key]}**: {fits[key][2]}.")
            print(cal_lines[-1], flush=True)
    results = {}
    for n, (pairs, optics, key) in sets.items():
        results[n] = run_set(n, pairs, optics, methods)
        if key in fits:
            # run even when the fit is poor: what the fitted optics do is the question (the
            # fit's quality is stated with it)
            results[f"{n}, calibrated"] = run_set(f"{n}, calibrated", pairs, fits[key][0], methods)
    main_t, per_t, verdict = tables(results, names)
    optics_lines = [f"- **{n}**: {OPTICS_NOTE[key]}; run with `{optics}`." for n, (_, optics, key) in sets.items()]
    publish("real-data", [
        "## Real data",
        "",
        f"`python benchmarks/eval_real.py --threads {a.threads}{'' if a.pairs == 'default' else ' --pairs ' + a.pairs}"
        f"{'' if which == {'single', 'stack', 'bead'} else ' --sets ' + a.sets}{' --assumed-only' if a.assumed_only else ''}"
        f"` on {machine()}, "
        f"commit {git_rev()}, {time.perf_counter() - t0:.0f} s, every method with the defaults of this commit. "
        "Each image compared with the in-focus reference (the input and every output alike) is registered to it "
        "(sub-pixel cross-correlation peak, `core.align.register_translation`) and intensity-matched (least-squares "
        "affine a*x+b fitted on the region all registered images cover, `core.align.match_intensity`); PSNR (data "
        "range = the reference's), SSIM, PCC on that region; gains = method - input, mean over the pairs. "
        "Synthetic = the same reference blurred by the same optics at the pair's distance (exact PSF, Poisson "
        "noise at the image's counts) through the same methods and protocol. m-deblurgan's x2 output is binned "
        "2x2. \"rl told the known distance\" is Richardson-Lucy (15 iterations, its default) with the exact PSF "
        "at the pair's known distance: the registered `rl` method given `level_step_um` = the distance, which a "
        "user with the z-stack knows and a user with one shot does not.",
        "",
        "Assumed optics (the methods were given these in the rows without \"calibrated\"):",
        "",
        *optics_lines,
        f"- **BBBC006**: no pair. The reachable z_00 planes ({n_z00} fields, w1) and in-focus planes ({n_sharp} "
        f"fields: z_16 w2 TIFFs and near-focus w1 PNGs) have {len(common)} field(s) in common"
        f"{': ' + ', '.join(common) if common else ''}; a z_00 plane has no in-focus partner here.",
        "",
        *([("Calibrated optics (rows \"..., calibrated\"): NA, defocus scale and focal plane fitted to the whole "
            "stack by the project's own calibration (`core.calibration_bead` = `napari-refocus calibrate --bead`, "
            "`core.calibration_thin` = `napari-refocus calibrate`), with the pixel size, wavelength and index "
            "assumed above (the fit cannot tell a wrong pixel size from NA and scale: paraxially the PSF in "
            "pixels depends only on NA x pixel and scale x NA^2, so the calibrated PSF in pixels does not hinge on "
            "the assumed pixel size). The stacks' fits include the planes of the test pairs (what a user with the "
            "stack does); nothing else is fitted to the pairs. Every method (and rl at the known distance, "
            "which then blurs like scale x the distance) is run again with these optics, and the synthetic "
            "column is simulated with them:"), "", *cal_lines,
           *(["- **DFNN single shots**: the DFNN stack's fit (same cell, same set-up; that the galvo preset of the "
            "shots and the stack's steps share one defocus scale is assumed)."] if "DFNN single shots" in sets else []),
           ""] if cal_lines else []),
        "Bar (issue 14): on every real set the default method (lbdvd) >= -0.1 dB and the best method > 0 dB:",
        "",
        *verdict,
        "",
        *main_t,
        "",
        "Real PSNR gain (dB) per pair:",
        "",
        *per_t,
    ], write=not a.no_write)


if __name__ == "__main__":
    main()
