"""Patch-wise defocus levels of a 2-D image with DelpNet (LB-DVD step 1).

The image is cut into 84x84 patches on the grid of :func:`napari_refocus.tiling.patch_grid`
(stride 42 by default; patches overhanging the bottom/right edge are mirror-padded), each
patch is divided by 65535 (the network was trained on raw 16-bit counts / 65535) and
classified into defocus level 0..10 or background (11).

Input intensities are taken as camera counts whatever the dtype: uint16 / integer images are
used as they are; float images are NOT rescaled (values are read as counts, so a float image
normalised to 0..1 will look like background - convert it back to counts first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.progress import Progress, drain
from ..core.validation import as_image
from ..core.optics import BACKGROUND
from ..core.tiling import PATCH, STRIDE, PatchGrid, extract_patches, patch_grid

N_CLASSES = 12
SCALE = 65535.0


@dataclass(frozen=True)
class DefocusMap:
    """DelpNet's answer for every patch of an image.

    levels : (rows, cols) int64, 0..10 or 11 (= bg)
    probabilities : (rows, cols, 12) float32 softmax (p0..p10, pbg)
    certainty : (rows, cols) float32, 1 - entropy / log(12), in [0, 1]
    grid : the PatchGrid of the patches
    weights_sha256 : SHA-256 of the weights file used (provenance)
    """

    levels: np.ndarray
    probabilities: np.ndarray
    certainty: np.ndarray
    grid: PatchGrid
    weights_sha256: str = ""

    @property
    def background(self) -> np.ndarray:
        return self.levels == BACKGROUND

    def focus_score(self) -> float:
        """Whole-image defocus level: certainty-weighted mean level of the non-bg patches
        (Yang et al. 2018). NaN when every patch is background."""
        return self.focus_score_and_certainty()[0]

    def focus_score_and_certainty(self) -> tuple[float, float]:
        """(score, certainty): score as in :meth:`focus_score`; certainty = the mean
        certainty of the non-bg patches (0 when all are bg)."""
        mask = ~self.background
        if not mask.any():
            return float("nan"), 0.0
        w = self.certainty[mask].astype(np.float64)
        lv = self.levels[mask].astype(np.float64)
        score = float((w * lv).sum() / w.sum()) if w.sum() > 0 else float(lv.mean())
        return score, float(w.mean())

    def to_rows(self) -> list[dict]:
        """One dict per patch (row-major) for a CSV: row, col, y0, x0, level (int or "bg"),
        certainty, p0..p10, pbg."""
        corners = self.grid.corners()
        rows = []
        for i in range(self.levels.shape[0]):
            for j in range(self.levels.shape[1]):
                lv = int(self.levels[i, j])
                d = {
                    "row": i,
                    "col": j,
                    "y0": int(corners[i, j, 0]),
                    "x0": int(corners[i, j, 1]),
                    "level": "bg" if lv == BACKGROUND else lv,
                    "certainty": float(self.certainty[i, j]),
                }
                for c in range(N_CLASSES - 1):
                    d[f"p{c}"] = float(self.probabilities[i, j, c])
                d["pbg"] = float(self.probabilities[i, j, BACKGROUND])
                rows.append(d)
        return rows


def _model(weights, device):
    from ..models.loader import load_model

    return load_model("delpnet" if weights is None else weights, device)


def certainty_of(probabilities: np.ndarray) -> np.ndarray:
    """1 - entropy / log(n_classes) of softmax probabilities (last axis), in [0, 1]."""
    p = np.asarray(probabilities)
    ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(-1)
    return np.clip(1.0 - ent / math.log(p.shape[-1]), 0.0, 1.0).astype(np.float32)


def iter_patch_probabilities(model, patches, device, batch_size: int = 256, tta: bool = False):
    """DelpNet softmax of ``(n, 84, 84)`` patches in raw counts, batch by batch (a generator).

    ``tta=True`` averages the softmax over the 8 flips/rotations of every patch (defocus blur
    has no orientation, so each is an equally valid view; 8x the compute). Yields
    :class:`Progress` per batch; returns an ``(n, 12)`` float32 array.
    """
    import torch

    from ..models.delpnet import mean_softmax

    n = patches.shape[0]
    probs = []
    n_batches = max(1, math.ceil(n / batch_size))
    yield Progress(0, n_batches, "defocus map")
    with torch.no_grad():
        for b in range(n_batches):
            chunk = patches[b * batch_size : (b + 1) * batch_size] / SCALE
            probs.append(mean_softmax(model, chunk, device, tta))
            yield Progress(b + 1, n_batches, "defocus map")
    if not probs:
        return np.zeros((0, N_CLASSES), np.float32)
    return torch.cat(probs).numpy().astype(np.float32)


def iter_defocus_map(image, *, weights=None, device="auto", stride: int = STRIDE,
                     batch_size: int = 256, tta: bool = False):
    """Generator form of :func:`defocus_map`: yields Progress per batch, returns a DefocusMap."""
    import torch

    from ..core.devices import resolve_device

    arr = as_image(image, name="image", ndim=2)
    if min(arr.shape) < PATCH:
        raise ValueError(
            f"image is {arr.shape[0]}x{arr.shape[1]} pixels; DelpNet needs at least {PATCH}x{PATCH}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    grid = patch_grid(arr.shape, patch=PATCH, stride=stride)
    dev = resolve_device(device)
    model = _model(weights, dev)
    data = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    patches = extract_patches(data, grid, context=0, mode="reflect")
    flat = yield from iter_patch_probabilities(model, patches, dev, batch_size, tta=tta)
    p = flat.reshape(*grid.shape, N_CLASSES)
    cert = certainty_of(p)
    levels = p.argmax(-1).astype(np.int64)
    return DefocusMap(levels=levels, probabilities=p, certainty=cert, grid=grid,
                      weights_sha256=getattr(model, "sha256", ""))


def defocus_map_array(image, *, weights=None, device="auto", stride: int = STRIDE,
                batch_size: int = 256, progress=None, tta: bool = False) -> DefocusMap:
    """Defocus level (0..10, 11 = bg) of every 84x84 patch of a 2-D image.

    Parameters
    ----------
    image : 2-D array of camera counts, at least 84x84 (see the module doc for float input).
    weights : None for the shipped ``weights/delpnet.safetensors``, or a .safetensors path.
    device : "auto" | "cpu" | "cuda" | torch.device.
    stride : grid step in pixels (1..84; 42 = half a patch, the LB-DVD default).
    batch_size : patches per forward pass.
    progress : optional callback receiving :class:`Progress`.
    tta : average DelpNet over the 8 flips/rotations of each patch (8x slower; more accurate,
        see ``weights/delpnet.md``).

    """
    return drain(iter_defocus_map(image, weights=weights, device=device, stride=stride,
                                  batch_size=batch_size, tta=tta), progress)


#: the in-memory form under its old name (``napari_refocus.defocus_map`` also takes big images)
defocus_map = defocus_map_array
