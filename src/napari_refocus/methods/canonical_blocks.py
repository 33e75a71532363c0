"""DelpNet's view of a big image at any sampling, a window at a time, equal to the image in memory.

In memory (:func:`.defocus.canonical_image`) the whole image is resampled to DelpNet's training
sampling (:func:`napari_refocus.core.resample.resample`), put on the canonical intensity scale
with the whole image's statistics, mirrored past its bottom/right edge to the patch grid's extent,
and cut into the 84/42 grid. :class:`CanonicalView` gives any window of that canonical image from
the native pixels under it (:func:`~napari_refocus.core.resample.resample_window`, whose output
pixels depend only on their global index), so :func:`map_patches` classifies any rectangle of the
global canonical grid with the same pixels, the same background rule and the same network as in
memory. DelpNet's answer for a patch does not depend on the other patches of its batch except
that a batch of one runs another kernel (measured: 2e-9 apart); :func:`map_patches` never makes a
batch of one unless the in-memory run did for that patch (its last batch held one patch).
"""

from __future__ import annotations

import numpy as np

from ..core.optics import BACKGROUND
from ..core.resample import input_window, resample, resample_window, resized_shape
from ..core.tiling import PATCH, STRIDE, PatchGrid, patch_grid, read_region
from .canonical import canonical_shape


def sample_stats(sample, *, scale: float, sample_stride: int = 1):
    """:func:`.canonical.canonical_stats` of the canonical image, from ``sample`` (the whole image,
    or every ``sample_stride``-th row and column of it, float32): exactly the in-memory run's
    statistics when ``sample_stride`` is 1 (the sample is resampled as the image would be)."""
    from .canonical import canonical_stats, exact_in_float32

    a = np.asarray(sample)
    factor = sample_stride / scale  # sample pixels -> canonical pixels
    if scale != 1.0 and (sample_stride == 1 or factor < 1.0):
        a = resample(a.astype(np.float32, copy=False), shape=resized_shape(a.shape, factor))
    elif not exact_in_float32(a.dtype):
        a = a.astype(np.float32)
    # else: the statistics read the pixels a band or a subsample at a time as float32 or
    # float64, the same numbers as from a float32 copy, without that copy (4 B/px)
    return canonical_stats(a)


class CanonicalView:
    """The canonical image (DelpNet's sampling and, with ``stats``, intensity scale) of a native
    2-D ``source``, sliced ``view[y0:y1, x0:x1]`` in canonical pixels (float32)."""

    def __init__(self, source, *, scale: float, stats=None):
        self.source, self.scale, self.stats = source, float(scale), stats
        self.native_shape = tuple(int(n) for n in source.shape[-2:])
        self.shape = canonical_shape(self.native_shape, self.scale)
        self.dtype = np.dtype(np.float32)

    def native_window(self, box) -> tuple[int, int, int, int]:
        """The native pixels canonical ``box = (y0, y1, x0, x1)`` is computed from."""
        if self.shape == self.native_shape:
            return tuple(int(b) for b in box)
        return input_window(full_shape=self.native_shape, out_shape=self.shape, out_box=box)

    def __getitem__(self, key):
        from .defocus import canonical_image

        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape))
        box = (y0, y1, x0, x1)
        a, b, c, d = self.native_window(box)
        region = np.asarray(self.source[a:b, c:d], dtype=np.float32)
        if self.shape != self.native_shape:
            region = resample_window(region, full_shape=self.native_shape, out_shape=self.shape, out_box=box,
                                     region_origin=(a, c))
        # the same float32 operations as the in-memory map, with the whole image's statistics
        return canonical_image(region, 1.0, normalise=self.stats is not None, stats=self.stats)[0]


def map_grid(native_shape, *, scale: float) -> PatchGrid:
    """The map's global 84/42 grid on the canonical image of a native image."""
    return patch_grid(canonical_shape(native_shape, scale), patch=PATCH, stride=STRIDE)


def patch_rows(view: CanonicalView, grid: PatchGrid, rows, cols):
    """The canonical patches ``(n, 84, 84)`` (torch) of grid rows/columns ``rows = (r0, r1)``,
    ``cols`` (inclusive), mirrored past the canonical image's edge as in memory."""
    import torch

    s, p = grid.stride, grid.patch
    top, left = rows[0] * s, cols[0] * s
    region = read_region(view, top, rows[1] * s + p, left, cols[1] * s + p)
    t = torch.from_numpy(np.ascontiguousarray(region))
    return t.unfold(0, p, s).unfold(1, p, s).reshape(-1, p, p)


def map_patches(view: CanonicalView, grid: PatchGrid, rows, cols, *, model, device, tta: bool = False,
                batch_size: int = 256):
    """``(probabilities (r, c, 12) float32, levels (r, c) int64)`` of the global grid's patch
    rows/columns ``rows``, ``cols`` (inclusive), as :func:`.defocus.iter_defocus_map` gives them
    for the whole image (background rule with the view's statistics, when it has them)."""
    import torch

    from ..core.progress import check_cancelled
    from ..models.delpnet import mean_softmax
    from .defocus import N_CLASSES, SCALE, background_rule

    patches = patch_rows(view, grid, rows, cols)
    shape = (rows[1] - rows[0] + 1, cols[1] - cols[0] + 1)
    n = shape[0] * shape[1]
    probs = np.zeros((n, N_CLASSES), np.float32)
    bg = np.zeros(n, bool)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            check_cancelled()
            batch = patches[start:start + batch_size]
            probs[start:start + len(batch)] = mean_softmax(model, batch / SCALE, device, tta).numpy()
            if view.stats is not None:
                bg[start:start + len(batch)] = background_rule(batch, view.stats[2])
    levels = probs.argmax(-1).astype(np.int64)
    levels[bg] = BACKGROUND
    return probs.reshape(*shape, N_CLASSES), levels.reshape(shape)
