"""Refactor check: every method's output (in memory, with and without TTA, and block by block)
saved on one commit and compared on another.

    git worktree add /tmp/old <old-commit> && (cd /tmp/old && pip install -e . -q)
    python benchmarks/equivalence.py save /tmp/ref.npz        # on the old commit
    python benchmarks/equivalence.py compare /tmp/ref.npz     # on the new one

Input: the bundled tilted-defocus sample pair's blurred image, cropped to 384x448; blocks of
168 px (336 for methods whose halo is larger). "identical" means bit-identical; for block runs
the distance of each commit's block result to the (old) in-memory result is printed too.
"""

import sys
import time

import numpy as np

import napari_refocus as nr

METHODS = ["lbdvd", "rl", "comi-cyclegan", "refocus-unet", "m-deblurgan", "h2t-msunet"]


def sample():
    try:
        from napari_refocus.io.samples import synthetic_pair
    except ImportError:  # before the layered package
        from napari_refocus.samples import synthetic_pair
    blurred = synthetic_pair()[0]
    return np.ascontiguousarray(blurred[:384, :448])


def lazy(src, method):
    try:
        from napari_refocus.bigimage import lazy_method
        from napari_refocus.methods import get_method

        block = 168 if get_method(method).halo <= 168 else 336
    except ImportError:  # before the layered package
        from napari_refocus.chunked import lazy_method

        block = 168
    return lazy_method(src, method, device="cpu", block=block)


def outputs() -> dict:
    import dask.array as da

    img = sample()
    out = {}
    for m in METHODS:
        for tta in (False, True):
            if m == "rl" and tta:
                continue
            t = time.time()
            out[f"{m}|mem|tta={tta}"] = np.asarray(nr.refocus(img, method=m, device="cpu", **({"tta": True} if tta else {})).image)
            print(f"{m} in memory, tta={tta}: {time.time() - t:.1f} s", file=sys.stderr)
        out[f"{m}|blocks"] = np.asarray(lazy(da.from_array(img, chunks=(192, 224)), m).compute())
    return out


def compare(ref: dict, new: dict) -> None:
    for k in ref:
        a, b = ref[k], new[k]
        d = np.abs(a.astype(np.float64) - b)
        rng = float(a.max() - a.min()) or 1.0
        line = f"{k:28s} identical={np.array_equal(a, b)} max|diff|={d.max():.3g} ({d.max() / rng:.1e} of range)"
        if k.endswith("|blocks"):
            mem = ref[k.replace("|blocks", "|mem|tta=False")]
            e0, e1 = np.abs(a.astype(np.float64) - mem), np.abs(b.astype(np.float64) - mem)
            line += (f"; |block - in-memory| old: max {e0.max():.3g} mean {e0.mean():.3g}, "
                     f"new: max {e1.max():.3g} mean {e1.mean():.3g}")
        print(line)


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "save":
        np.savez_compressed(path, **outputs())
    else:
        ref = np.load(path)
        compare({k: ref[k] for k in ref.files}, outputs())
