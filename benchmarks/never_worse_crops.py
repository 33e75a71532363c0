"""Never worse on crops smaller than one DelpNet patch (84 px at the paper's sampling): a biologist
who crops one cell and clicks Refocus.

* in focus: crops of the bundled real in-focus BBBC006 field (48 and 64 px, three places each),
  PSNR of each method's output against the crop itself (inf: returned unchanged; an x2 output
  is binned 2x2 and compared with the crop resampled x2 and binned, as the gate sizes it);
* blurred: the same crops cut from the field blurred at levels 1, 3, 5, 8 (``nr.simulate``,
  Poisson noise), PSNR gain against the in-focus crop, gate on (the default) / off.

* real (``--real``, needs ``../shared/data``): 64x64 crops of the DFNN mitochondria stack's 11
  held-out planes (eval_quality's protocol: rows from 65 %, the four crops of most structure in
  the in-focus plane) against the same crop of its in-focus plane, `core.metrics.compare`.

Printed only (no section is rewritten): the numbers go into BENCHMARKS.md "Never worse" by hand.

    python benchmarks/never_worse_crops.py [--real]
"""

from __future__ import annotations

import argparse

import numpy as np
from eval_real import binned

METHODS = ("lbdvd", "comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet")
PLACES = ((200, 300), (100, 100), (300, 500))


def _psnr(x, gt, data_range=None):
    from napari_refocus.core.metrics import metrics

    return metrics(x, gt, data_range=data_range)["psnr"]


def main(argv=None):
    import torch

    import napari_refocus as nr
    from napari_refocus.io.samples import infocus_image
    from napari_refocus.methods.gate import base_like

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="also the DFNN stack's held-out planes, cropped")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    field = infocus_image().astype(np.float32)
    print("| crop | method | in focus: PSNR against itself, min over places (dB) |")
    print("|---|---|---|")
    def run(img, method, **kw):  # None where a method refuses the crop (lbdvd before stop 34)
        try:
            return nr.refocus(img, method=method, device="cpu", **kw).image
        except ValueError:
            return None

    for s in args.sizes:
        for m in METHODS:
            worst = []
            for y, x in PLACES:
                gt = np.ascontiguousarray(field[y:y + s, x:x + s])
                out = run(gt, m)
                if out is None:
                    break
                # against the crop as the gate sizes it (x2: resampled and binned), the crop's range
                ref = binned(base_like(gt, out.shape), gt.shape)
                worst.append(_psnr(binned(out, gt.shape), ref, data_range=float(np.ptp(gt))))
            print(f"| {s}x{s} | {m} | {min(worst):.1f} |" if worst else f"| {s}x{s} | {m} | refused |", flush=True)
    print()
    print("| level | crop | " + " | ".join(f"{m} gated / ungated (dB)" for m in METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for level in (1, 3, 5, 8):
        blurred = nr.simulate(field, level=level, seed=0)
        for s in args.sizes:
            cells = []
            for m in METHODS:
                g = []
                for y, x in PLACES:
                    gt = field[y:y + s, x:x + s]
                    b = np.ascontiguousarray(blurred[y:y + s, x:x + s])
                    on, off = run(b, m), run(b, m, never_worse=False)
                    if on is None or off is None:
                        break
                    on, off = binned(on, gt.shape), binned(off, gt.shape)
                    g.append((_psnr(on, gt) - _psnr(b, gt), _psnr(off, gt) - _psnr(b, gt)))
                if not g:
                    cells.append("refused")
                    continue
                g = np.mean(g, axis=0)
                cells.append(f"{g[0]:+.2f} / {g[1]:+.2f}")
            print(f"| {level} | {s}x{s} | " + " | ".join(cells) + " |", flush=True)
    if args.real:
        real_crops(run)


def real_crops(run, side=64, n_crops=4):
    """PSNR gain of each method on ``side``-px crops of the real DFNN stack's held-out planes."""
    from napari_refocus.core.metrics import compare
    from napari_refocus.training.pairs import dfnn_stack_dir, read_zstack, zstack_pairs, zstack_split

    stack, _ = read_zstack(dfnn_stack_dir())
    focus = zstack_pairs(stack)["focus"]
    _, held = zstack_split(stack.shape[0], focus, every=3)
    r0 = int(stack.shape[1] * 0.65)
    gt = stack[focus, r0:].astype(np.float32)
    corners = [(y, x) for y in range(0, gt.shape[0] - side, side // 2) for x in range(0, gt.shape[1] - side, side // 2)]
    corners = sorted(corners, key=lambda c: -gt[c[0]:c[0] + side, c[1]:c[1] + side].std())[:n_crops]
    print(f"\nDFNN held-out planes {len(held)}, {side}x{side} crops at {corners} (rows from {r0})")
    print("| method | PSNR gain, mean (min) over the crops (dB) |\n|---|---|")
    for m in METHODS:
        gains = []
        for z in held:
            for y, x in corners:
                ref = gt[y:y + side, x:x + side]
                inp = np.ascontiguousarray(stack[z, r0 + y:r0 + y + side, x:x + side])
                out = run(inp, m)
                if out is None:
                    break
                c = compare(ref, binned(out, ref.shape), inp.astype(np.float32))
                gains.append(c["pred"]["psnr"] - c["input"]["psnr"])
        print(f"| {m} | {np.mean(gains):+.3f} ({min(gains):+.3f}) |" if gains else f"| {m} | refused |", flush=True)


if __name__ == "__main__":
    main()
