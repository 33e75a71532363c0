"""Calibration (issue 14, 2.): accuracy of the fitted NA on simulated bead and thin-sample
stacks (background, Poisson and read noise), the time of a 21-plane 256x256 fit, and the fit
of the real bead in ../shared/data/pyotf_bead_stack. Writes BENCHMARKS.md "calibration".

    python benchmarks/calibration.py [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import SHARED_DATA, git_rev, machine, publish  # noqa: E402

WL = 520.0
BEADS = [(0.3, 1.0, 0.4, 1.0), (0.75, 1.0, 0.17, 0.4), (0.95, 1.0, 0.13, 0.3), (1.4, 1.515, 0.09, 0.2)]
THIN = [(0.5, 1.0, 0.2, 1.0, 1.15), (0.75, 1.0, 0.15, 0.5, 1.1), (1.2, 1.33, 0.1, 0.3, 0.9)]
REAL_BEAD = SHARED_DATA / "pyotf_bead_stack" / "fixtures" / "BIL113_zstack_z300nm_current.tif"


def flagged_by(r) -> str:
    """Which of the quality rules flagged a fit (short names), or "-"."""
    names = []
    for reason in r.reasons:
        names.append("residual" if reason.startswith("residual") else "bound" if "at the bound" in reason
                     else "free-scale check" if "explained far better" in reason else "undersampled"
                     if "undersampled" in reason else reason[:20])
    return ", ".join(names) or "-"


def main(argv=None):
    import torch

    torch.set_num_threads(1)
    from napari_refocus.core.calibration_sim import bead_stack, thin_stack
    from napari_refocus.core.optics import Optics
    from napari_refocus.core.progress import drain
    from napari_refocus.io.calibration import iter_calibrate
    from napari_refocus.io.samples import infocus_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only-wrong", action="store_true", help="only the wrong pixel size / z-step table, printed")
    a = ap.parse_args(argv)

    def fit(stack, **kw):
        t = time.perf_counter()
        r = drain(iter_calibrate(stack, wavelength_nm=kw.pop("wavelength_nm", WL), **kw))
        return r, time.perf_counter() - t

    def o(na, n, px, s=1.0):
        return Optics(na=na, refractive_index=n, pixel_um=px, wavelength_nm=WL, psf_model="exact", defocus_scale=s)

    def wrong_table():
        """The stacks of the first tables, fitted with a wrong pixel size or z-step."""
        out = ["", "**Wrong pixel size or z-step** (the stacks above, 0.75 air bead and 0.5 air thin sample, fitted "
               "with a wrong pixel size or z-step): the plausible fit (scale within 0.6..1.67) and the free-scale check "
               "(scale free within 0.1..10; `core.calibration.iter_free_scale`):", "",
               "| stack | given | fitted NA / scale | residual | free-scale fit: NA / scale | its residual | quality | "
               "flagged by | s |", "|---|---|---|---|---|---|---|---|---|"]
        wrong = {"pixel x2": (2.0, 1.0), "pixel x0.5": (0.5, 1.0), "z-step x2": (1.0, 2.0)}
        for kind, (na, n, px, dz, sc) in (("bead", (0.75, 1.0, 0.17, 0.4, 1.0)), ("thin", THIN[0])):
            if kind == "bead":
                st = bead_stack(o(na, n, px), n_planes=21, z_step_um=dz, focal_plane=9.6, size=64, seed=1)
            else:
                st = thin_stack(cells[130:258, 230:358], o(na, n, px, sc), n_planes=15, z_step_um=dz, focal_plane=6.7,
                                seed=1)
            for label, (fp, fz) in wrong.items():
                r, s = fit(st, bead=kind == "bead", z_step_um=dz * fz, pixel_um=px * fp, refractive_index=n)
                fr = r.free_scale_fit
                out.append(f"| {kind}, NA {na}, scale {sc} | {label} | {r.na:.3f} / {r.defocus_scale:.3f} | "
                          f"{r.residual:.4f} | {fr['na']:.3f} / {fr['defocus_scale']:.2f} | {fr['residual']:.4f} | "
                          f"{r.quality} | {flagged_by(r)} | {s:.1f} |")
                print(out[-1], flush=True)
        return out

    cells = np.asarray(infocus_image(), dtype=np.float64)
    if a.only_wrong:
        print(f"`python benchmarks/calibration.py --only-wrong` at `{git_rev()}`; {machine()}; load average "
              f"{os.getloadavg()[0]:.1f}")
        print("\n".join(wrong_table()))
        return
    md = ["## Calibration", "", f"`python benchmarks/calibration.py` at `{git_rev()}`; {machine()}; load average "
          f"at the start {os.getloadavg()[0]:.1f} (the machine is shared: times are upper bounds).", "",
          "Simulated stacks: the exact (non-paraxial) model, pixel-integrated, bead at a random sub-pixel "
          "position, 100 counts background, Poisson noise, read noise 2 counts; the fit starts from a grid, "
          "never from the true values. Thin sample: the real in-focus BBBC006 field as the object.", "",
          "| stack | true NA | fitted NA | error | true / fitted scale | focal plane true / fitted | residual | "
          "free-scale check: scale | quality | s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for na, n, px, dz in BEADS:
        st = bead_stack(o(na, n, px), n_planes=21, z_step_um=dz, focal_plane=9.6, size=64, seed=1)
        r, s = fit(st, bead=True, z_step_um=dz, pixel_um=px, refractive_index=n)
        md.append(f"| bead 21x64x64, n {n} | {na} | {r.na:.4f} | {100 * (r.na - na) / na:+.1f} % | 1.00 / "
                  f"{r.defocus_scale:.3f} | 9.60 / {r.focal_plane_index:.2f} | {r.residual:.4f} | "
                  f"{r.free_scale_fit['defocus_scale']:.3f} | {r.quality} | {s:.1f} |")
        print(md[-1], flush=True)
    for na, n, px, dz, sc in THIN:
        st = thin_stack(cells[130:258, 230:358], o(na, n, px, sc), n_planes=15, z_step_um=dz, focal_plane=6.7, seed=1)
        r, s = fit(st, bead=False, z_step_um=dz, pixel_um=px, refractive_index=n)
        md.append(f"| thin 15x128x128, n {n} | {na} | {r.na:.4f} | {100 * (r.na - na) / na:+.1f} % | {sc} / "
                  f"{r.defocus_scale:.3f} | 6.70 / {r.focal_plane_index:.2f} | {r.residual:.4f} | "
                  f"{r.free_scale_fit['defocus_scale']:.3f} | {r.quality} | {s:.1f} |")
        print(md[-1], flush=True)
    md += wrong_table()
    md += ["", "**A 21-plane 256x256 stack** (NA 0.5 air, pixel 0.325 µm, 1 µm steps, true scale 1.15):", "",
           "| fit | fitted NA | scale | residual | loss evaluations | s |", "|---|---|---|---|---|---|"]
    t = time.perf_counter()
    st = thin_stack(cells[100:356, 200:456], o(0.5, 1.0, 0.325, 1.15), n_planes=21, z_step_um=1.0, focal_plane=10.3,
                    seed=2)
    sim_s = time.perf_counter() - t
    r, s = fit(st, bead=False, z_step_um=1.0, pixel_um=0.325, refractive_index=1.0)
    md.append(f"| thin sample | {r.na:.4f} | {r.defocus_scale:.3f} | {r.residual:.4f} | {r.evaluations} | {s:.1f} |")
    bead = bead_stack(o(0.5, 1.0, 0.325), n_planes=21, z_step_um=1.0, focal_plane=10.3, size=256, seed=2)
    r, s = fit(bead, bead=True, z_step_um=1.0, pixel_um=0.325, refractive_index=1.0)
    md.append(f"| bead | {r.na:.4f} | {r.defocus_scale:.3f} | {r.residual:.4f} | {r.evaluations} | {s:.1f} |")
    md += ["", f"Baseline in the same run: simulating the 21-plane 256x256 thin stack took {sim_s:.1f} s.", ""]
    if REAL_BEAD.exists():
        import tifffile

        real = tifffile.imread(REAL_BEAD)
        md += ["**The real bead** (`pyotf_bead_stack`, 21 x 128 x 128, 0.3 µm steps, 6.5 µm / 74.4 = 0.0873 µm "
               "pixels; NA, immersion and emission are not stated: assumed water 1.33 and ~600 nm, and air for "
               "comparison):", "",
               "| assumed | fitted NA | defocus scale | focal plane | residual | free-scale check: NA / scale / residual | "
               "quality | s |", "|---|---|---|---|---|---|---|---|"]
        for wl, n in ((600.0, 1.33), (580.0, 1.33), (600.0, 1.0)):
            r, s = fit(real, bead=True, z_step_um=0.3, pixel_um=6.5 / 74.41745, refractive_index=n, wavelength_nm=wl)
            fr = r.free_scale_fit
            md.append(f"| {wl:g} nm, n {n} | {r.na:.3f} | {r.defocus_scale:.3f} | {r.focal_plane_index:.2f} | "
                      f"{r.residual:.3f} | {fr['na']:.3f} / {fr['defocus_scale']:.2f} / {fr['residual']:.3f} | "
                      f"{r.quality} | {s:.1f} |")
            print(md[-1], flush=True)
    publish("calibration", md, write=not a.no_write)


if __name__ == "__main__":
    main()
