"""Patch grids over 2-D images: extraction with real-neighbour context, and seam-free montage.

Geometry (all in pixels of the image): patch ``(i, j)`` covers rows
``origin_y + i*stride .. + patch`` and columns ``origin_x + j*stride .. + patch``. The grid
covers the whole image; the last row/column of patches may hang over the bottom/right edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PATCH = 84
STRIDE = 42
CONTEXT = 13  # 84 + 2*13 = 110, the padded patch size of LB-DVD


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of a grid lie on an image of ``image_shape`` (y, x)."""

    image_shape: tuple[int, int]
    patch: int = PATCH
    stride: int = STRIDE
    origin: tuple[int, int] = (0, 0)

    @property
    def shape(self) -> tuple[int, int]:
        """Number of patches along (y, x)."""
        return tuple(
            max(1, math.ceil((n - o - self.patch) / self.stride) + 1)
            for n, o in zip(self.image_shape, self.origin)
        )

    @property
    def extent(self) -> tuple[int, int]:
        """Size (y, x) of the area the grid covers, from the origin; >= the image."""
        return tuple((n - 1) * self.stride + self.patch for n in self.shape)

    def corners(self) -> np.ndarray:
        """Top-left pixel (y0, x0) of every patch, shape ``(rows, cols, 2)``."""
        ys = self.origin[0] + self.stride * np.arange(self.shape[0])
        xs = self.origin[1] + self.stride * np.arange(self.shape[1])
        return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1)

    def layer_transform(self, scale=(1.0, 1.0), translate=(0.0, 0.0)):
        """(scale, translate) that put one grid cell per patch over its image in napari.

        Cell ``(i, j)`` is drawn ``stride`` pixels wide, centred on the centre of patch
        ``(i, j)``; with the stride at half the patch this is the patch's central part,
        the area whose pixels take most of their value from that patch.
        """
        scale = tuple(float(s) for s in scale)
        out_scale = tuple(s * self.stride for s in scale)
        # napari centres pixel k of a layer at translate + k*scale. Patch centre in image
        # pixel coordinates is origin + i*stride + (patch-1)/2.
        out_translate = tuple(
            float(t) + s * (o + (self.patch - 1) / 2)
            for t, s, o in zip(translate, scale, self.origin)
        )
        return out_scale, out_translate

    def as_dict(self) -> dict:
        """Plain-dict form (for metadata and CSV headers)."""
        return {
            "image_shape": list(self.image_shape),
            "patch": self.patch,
            "stride": self.stride,
            "origin": list(self.origin),
            "grid_shape": list(self.shape),
        }


def patch_grid(image_shape, *, patch: int = PATCH, stride: int = STRIDE) -> PatchGrid:
    """The patch grid of an image of ``image_shape`` (y, x)."""
    if patch < 1 or stride < 1 or stride > patch:
        raise ValueError(f"need 1 <= stride <= patch, got patch={patch}, stride={stride}")
    return PatchGrid(tuple(int(n) for n in image_shape[-2:]), patch=patch, stride=stride)


def _pad_amounts(grid: PatchGrid, context: int):
    """(top, bottom, left, right) padding so every context-padded patch lies inside."""
    (h, w), (eh, ew) = grid.image_shape, grid.extent
    return context, context + eh - h, context, context + ew - w


def pad_image(image_t, grid: PatchGrid, context: int, mode: str = "zeros"):
    """Pad a (..., H, W) tensor so each patch plus ``context`` is inside.

    ``mode="zeros"`` is the paper's rule (zeros where there are no real neighbours);
    ``"reflect"`` mirrors the image instead (``"replicate"`` where the image is too small
    to mirror).
    """
    import torch.nn.functional as F

    top, bottom, left, right = _pad_amounts(grid, context)
    if mode == "zeros":
        return F.pad(image_t, (left, right, top, bottom))
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"unknown padding mode {mode!r}; choose 'zeros' or 'reflect'")
    h, w = image_t.shape[-2:]
    if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        mode = "replicate"
    flat = image_t.reshape(-1, 1, h, w)
    out = F.pad(flat, (left, right, top, bottom), mode=mode)
    return out.reshape(*image_t.shape[:-2], *out.shape[-2:])


def read_region(source, y0: int, y1: int, x0: int, x1: int, *, mirror: bool | None = None) -> np.ndarray:
    """``source[y0:y1, x0:x1]`` (numpy, dask, zarr: only the rows and columns needed are read) as
    float32, mirrored outside the image as :func:`pad_image` mirrors it (numpy "reflect" = torch
    "reflect": the edge not repeated), even where the region holds fewer rows or columns inside the
    image than it reaches past the edge (a thin last block). ``mirror=False``: every pixel past the
    edge is the edge's (``"replicate"``, pad_image's fallback for an image too small to mirror);
    None: mirrored unless some pixel lies farther than ``n - 1`` past an edge (cannot be mirrored
    once), replicated then. Inside the image the result is the source's own float32 (a view of a
    float32 source, no copy)."""
    h, w = source.shape[-2:]
    ys, xs = np.arange(y0, y1), np.arange(x0, x1)
    if mirror is None:
        mirror = _mirrorable(ys, h) and _mirrorable(xs, w)
    if mirror:
        ys, xs = _reflect(ys, h), _reflect(xs, w)
    else:
        ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    a, c = int(ys.min()), int(xs.min())
    inside = np.asarray(source[a:int(ys.max()) + 1, c:int(xs.max()) + 1], dtype=np.float32)
    if ys[0] == a and xs[0] == c and np.all(np.diff(ys) == 1) and np.all(np.diff(xs) == 1):
        return inside  # inside the image: no copy
    return inside[np.ix_(ys - a, xs - c)]


def _mirrorable(i: np.ndarray, n: int) -> bool:
    return not (len(i) and (i.min() < -(n - 1) or i.max() > 2 * (n - 1)))


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    return np.where(i < 0, -i, np.where(i >= n, 2 * (n - 1) - i, i))


class MirroredImage:
    """A 2-D image as :func:`pad_image` pads it for ``grid`` and ``context`` (``"reflect"``, or
    ``"replicate"`` where the image is too small to mirror), without making the padded copy.

    ``region[y0:y1, x0:x1]`` (coordinates of the padded frame) is read from ``image`` (any real
    dtype) by :func:`read_region` as a float32 tensor, the values the padded float32 tensor holds
    there. Depth-variant Richardson-Lucy reads its frames this way: the padded copy was a float32
    image (~4.5 B/px) held through the whole deconvolution, with a float32 copy of the input
    (4 B/px) to make it.
    """

    def __init__(self, image, grid: PatchGrid, context: int):
        top, bottom, left, right = _pad_amounts(grid, context)
        h, w = image.shape[-2:]
        self.image, self.top, self.left = image, top, left
        self.mirror = max(top, bottom) < h and max(left, right) < w  # as pad_image decides, for the whole frame
        self.shape = (h + top + bottom, w + left + right)

    def __getitem__(self, key):
        import torch

        ys, xs = key
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        window = read_region(self.image, y0 - self.top, y1 - self.top, x0 - self.left, x1 - self.left,
                             mirror=self.mirror)
        # a copy where it is a view of a read-only array (a memory-mapped file, a napari layer):
        # only read here, but torch warns about such arrays
        return torch.from_numpy(window if window.flags.writeable else window.copy())


def reflect_fill(out, h: int, w: int):
    """``out[:h, :w]`` (a 2-D array) mirrored into the rest of ``out``, in place: what
    :func:`pad_image` ``"reflect"`` gives for padding at the bottom and right (the edge not
    repeated; the padding must be smaller than the image, else it replicates). For a buffer
    whose interior was written first, so the image and its padded copy never coexist."""
    eh, ew = out.shape[-2:]
    if eh - h >= h or ew - w >= w:
        raise ValueError(f"reflect padding of {eh - h}x{ew - w} px needs an image larger than {h}x{w}")
    # columns first, then whole rows: the corners are mirrored in both directions
    out[:h, w:] = out[:h, w - 2 - np.arange(ew - w)]
    out[h:, :] = out[h - 2 - np.arange(eh - h), :]
    return out


def extract_patches(image_t, grid: PatchGrid, *, context: int = CONTEXT, mode: str = "zeros"):
    """All patches of a 2-D tensor with ``context`` real-neighbour pixels on each side.

    Returns a tensor ``(rows*cols, patch+2*context, patch+2*context)`` in row-major grid order.
    """
    import torch.nn.functional as F

    padded = pad_image(image_t, grid, context, mode)
    size = grid.patch + 2 * context
    cols = F.unfold(padded[None, None], kernel_size=size, stride=grid.stride)
    return cols[0].T.reshape(-1, size, size)


def weight_window(patch: int, kind: str = "triangular"):
    """Montage weight of one patch, shape (patch, patch).

    "triangular": separable tent with base = patch (bilinear blend of neighbours, no seams);
    "rectangular": all ones (non-overlapping montage; shows seams, kept for comparison).
    """
    import torch

    if kind == "rectangular":
        return torch.ones(patch, patch)
    if kind == "triangular":
        x = torch.arange(patch, dtype=torch.float64) + 0.5
        tent = 1.0 - (x - patch / 2).abs() / (patch / 2)
        return torch.outer(tent, tent).float()
    raise ValueError(f"unknown montage weights {kind!r}; choose 'triangular' or 'rectangular'")


def montage(patches, grid: PatchGrid, *, weights: str = "triangular"):
    """Blend (rows*cols, patch, patch) patches back into an (H, W) image.

    Each pixel is the weighted mean of the patches covering it: the weights are divided by
    their sum, so they form a partition of unity and a constant image stays constant.
    """
    import torch
    import torch.nn.functional as F

    n = grid.shape[0] * grid.shape[1]
    if patches.shape[0] != n:
        raise ValueError(f"expected {n} patches for grid {grid.shape}, got {patches.shape[0]}")
    w = weight_window(grid.patch, weights).to(device=patches.device, dtype=patches.dtype)
    cols = (patches * w).reshape(n, -1).T[None]
    out_size = grid.extent
    num = F.fold(cols, out_size, kernel_size=grid.patch, stride=grid.stride)[0, 0]
    wcols = w.reshape(-1, 1).expand(-1, n)[None]
    den = F.fold(wcols, out_size, kernel_size=grid.patch, stride=grid.stride)[0, 0]
    h, w_ = grid.image_shape
    return (num / torch.clamp(den, min=torch.finfo(den.dtype).tiny))[:h, :w_]


def patch_view(padded, grid: PatchGrid, context: int):
    """A strided view ``(rows, cols, p+2c, p+2c)`` of every context-padded patch of ``padded``
    (:func:`pad_image`'s output): no copy, so patches can be taken a chunk at a time."""
    size = grid.patch + 2 * context
    return padded.unfold(0, size, grid.stride).unfold(1, size, grid.stride)


def take_patches(view, index):
    """Patches ``index`` (row-major grid numbers) of a :func:`patch_view`: ``(n, s, s)``, a copy
    equal to the same rows of :func:`extract_patches`."""
    import torch

    cols = view.shape[1]
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    return view[idx // cols, idx % cols]


class Accumulator:
    """The montage of :func:`montage`, built a chunk of patches at a time.

    Memory: one float32 image of the grid's extent (the weighted sum); the weights' sum is the
    outer product of two 1-D sums (the grid and the tent are separable), so it is never stored
    as an image. The result equals :func:`montage`'s up to float32 rounding (the sums are taken
    in another order).
    """

    def __init__(self, grid: PatchGrid, *, weights: str = "triangular", device="cpu"):
        import torch

        self.grid = grid
        # the 2-D window is the outer product of its 1-D profile (as weight_window makes it)
        self.window = weight_window(grid.patch, weights).to(device)
        self.profile = _tent_1d(grid.patch, weights)
        self.num = torch.zeros(grid.extent, dtype=torch.float32, device=device)

    def add(self, index, patches) -> None:
        """Add ``patches`` ``(n, p, p)`` (grid numbers ``index``) with their weights."""
        g, cols = self.grid, self.grid.shape[1]
        weighted = patches * self.window
        for k, i in enumerate(np.asarray(index).tolist()):
            y0, x0 = (i // cols) * g.stride, (i % cols) * g.stride
            self.num[y0:y0 + g.patch, x0:x0 + g.patch] += weighted[k]

    def result(self):
        """The blended ``(H, W)`` image (a view of the sum, divided in place, band by band)."""
        import torch

        g = self.grid
        dy, dx = (_axis_sum(self.profile, n, g.stride, e) for n, e in zip(g.shape, g.extent))
        dx = dx.to(self.num.device)
        tiny = torch.finfo(torch.float32).tiny
        for r0 in range(0, g.extent[0], 256):
            band = dy[r0:r0 + 256].to(self.num.device)
            self.num[r0:r0 + 256].div_(torch.clamp(torch.outer(band, dx), min=tiny))
        h, w = g.image_shape
        return self.num[:h, :w]


def _tent_1d(patch: int, kind: str):
    import torch

    if kind == "rectangular":
        return torch.ones(patch, dtype=torch.float64)
    x = torch.arange(patch, dtype=torch.float64) + 0.5
    return 1.0 - (x - patch / 2).abs() / (patch / 2)


def _axis_sum(profile, n: int, stride: int, extent: int):
    """Sum over one axis of ``n`` copies of ``profile`` ``stride`` apart (float64 -> float32)."""
    import torch

    out = torch.zeros(extent, dtype=torch.float64)
    p = profile.shape[0]
    for i in range(n):
        out[i * stride:i * stride + p] += profile
    return out.float()


class Region:
    """``data`` placed at ``origin`` in an image of ``shape``, sliced in the image's coordinates:
    a block read with its halo (one chunk of an overlapped dask array), a window read once for
    several reads. Reading outside ``data``, or with a step, is an error."""

    def __init__(self, data, origin, shape):
        self.data, self.origin, self.shape = data, tuple(int(o) for o in origin), tuple(int(n) for n in shape)
        self.dtype = data.dtype

    def __getitem__(self, key):
        (oy, ox), (ny, nx) = self.origin, self.data.shape
        (y0, y1, sy), (x0, x1, sx) = (k.indices(n) for k, n in zip(key, self.shape))
        if sy != 1 or sx != 1 or y0 < oy or x0 < ox or y1 > oy + ny or x1 > ox + nx:
            raise IndexError(f"read [{y0}:{y1}, {x0}:{x1}] outside the region at {self.origin} of {self.data.shape}")
        return self.data[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
