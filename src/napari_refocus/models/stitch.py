"""The tile grid of tiled inference, in the whole image's coordinates.

Where the tiles lie depends only on the whole image's shape and the tiling options, never on
which part of the result is wanted: so any window of the result (a block of a big image) can be
made from exactly the tiles that touch it, each read from the source with the same pixels
(mirrored only at the true image border) and blended with the same weights in the same order,
which gives the same float32 numbers as the whole image in memory.

* Layout (:func:`tile_layout`): as few tiles of at most ``tile`` pixels as overlap by at least
  ``overlap``, shrunk to the smallest multiple of the network's ``multiple`` that still covers
  the image mirrored by ``overlap // 2`` on every side (so no image pixel is restored from a
  tile's edge).
* Weights: triangular (tent) per tile, ``outer(tent_y, tent_x)``, made a strip of rows at a
  time; the normaliser (their sum over the tiles) is separable, ``den_y(y) * den_x(x)``, made
  of 1-D sums in tile order.
* Reading: a tile's pixels by index from the source (numpy "reflect" at the image border, or
  "edge" for an image one pixel thin), so no mirrored copy of the image is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.lru import LRU


def round_up(n: int, m: int) -> int:
    return math.ceil(n / m) * m


def axis_tiles(n: int, tile: int, overlap: int, multiple: int):
    """(size, starts) of the tiles along one axis of length ``n``: as few tiles of at most
    ``tile`` pixels as give >= ``overlap`` overlap, shrunk to the smallest multiple of
    ``multiple`` that still covers ``n``. Starts are multiples of ``multiple`` (a network with
    pooling is only shift-equivariant for such shifts), the last tile may hang over ``n``."""
    if n <= tile:
        return round_up(n, multiple), [0]
    k = math.ceil((n - overlap) / (tile - overlap))
    while True:
        size = min(tile, round_up(math.ceil((n + (k - 1) * overlap) / k), multiple))
        stride = (size - overlap) // multiple * multiple
        if stride > 0 and (k - 1) * stride + size >= n:
            return size, [i * stride for i in range(k)]
        k += 1


def tile_layout(shape, tile: int, overlap: int, multiple: int):
    """((tile_y, tile_x), margin, list of (y0, x0)) covering an image of ``shape``.

    The image is mirrored by ``margin`` = overlap // 2 on every side (so no image pixel is
    restored from a tile edge) and further on the bottom/right to fill the last tile; the
    corners are in that mirrored image's coordinates.
    """
    h, w = shape
    margin = overlap // 2
    t = round_up(max(tile, 2 * overlap + multiple), multiple)
    ty, ys = axis_tiles(h + 2 * margin, t, overlap, multiple)
    tx, xs = axis_tiles(w + 2 * margin, t, overlap, multiple)
    return (ty, tx), margin, [(y, x) for y in ys for x in xs]


def tent(n: int) -> np.ndarray:
    """Triangular weights of ``n`` pixels (float32), highest in the middle, > 0 at the ends."""
    x = np.arange(n, dtype=np.float64) + 0.5
    return (1.0 - np.abs(x - n / 2) / (n / 2)).astype(np.float32)


def mirror_index(index, n: int, mode: str = "reflect") -> np.ndarray:
    """Indices ``index`` (any integers) folded into ``0..n-1`` as numpy's ``np.pad`` ``mode``
    ("reflect": mirrored without repeating the edge, periodic beyond; "edge": clipped)."""
    index = np.asarray(index, dtype=np.int64)
    if n == 1 or mode == "edge":
        return np.clip(index, 0, n - 1)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m >= n, period - m, m)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one whole image: ``starts_y``/``starts_x`` are the tiles' first pixels in
    the image's coordinates (negative or past the end: mirrored), ``tile`` their size, and the
    network's output is ``upscale`` x its input."""

    shape: tuple[int, int]
    tile: tuple[int, int]
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]
    upscale: int = 1

    @classmethod
    def plan(cls, shape, *, tile: int | None, overlap: int, multiple: int = 1, upscale: int = 1) -> TileGrid:
        """The grid of an image of ``shape`` (``tile`` <= 0 or None: one tile for the whole image)."""
        h, w = (int(n) for n in shape[-2:])
        if tile is None or tile <= 0:
            tile = round_up(max(h, w) + overlap, multiple)
        overlap = min(int(overlap), int(tile) // 2)
        (ty, tx), margin, corners = tile_layout((h, w), int(tile), overlap, int(multiple))
        ys = sorted({c[0] - margin for c in corners})
        xs = sorted({c[1] - margin for c in corners})
        return cls((h, w), (ty, tx), tuple(ys), tuple(xs), int(upscale))

    @property
    def reach(self) -> int:
        """Image pixels beyond a window that the tiles touching it read (on every side)."""
        return max(self.tile) - 1

    def tiles(self, out_box) -> list[tuple[int, int]]:
        """``(row, column)`` of every tile whose output touches ``out_box = (y0, y1, x0, x1)``
        (the output's coordinates, ``upscale`` x the image's), row by row."""
        r, (ty, tx) = self.upscale, self.tile
        rows = [i for i, s in enumerate(self.starts_y) if s * r < out_box[1] and (s + ty) * r > out_box[0]]
        cols = [j for j, s in enumerate(self.starts_x) if s * r < out_box[3] and (s + tx) * r > out_box[2]]
        return [(i, j) for i in rows for j in cols]

    def _indices(self, i: int, j: int):
        h, w = self.shape
        mode = "reflect" if min(h, w) > 1 else "edge"
        rows = mirror_index(np.arange(self.starts_y[i], self.starts_y[i] + self.tile[0]), h, mode)
        cols = mirror_index(np.arange(self.starts_x[j], self.starts_x[j] + self.tile[1]), w, mode)
        return rows, cols

    def read_box(self, out_box) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the image pixels that the tiles touching ``out_box`` read."""
        todo = self.tiles(out_box)
        ys = [self._indices(i, 0)[0] for i in sorted({i for i, _ in todo})]
        xs = [self._indices(0, j)[1] for j in sorted({j for _, j in todo})]
        return (int(min(r.min() for r in ys)), int(max(r.max() for r in ys)) + 1,
                int(min(c.min() for c in xs)), int(max(c.max() for c in xs)) + 1)

    def read(self, source, i: int, j: int, stats) -> np.ndarray:
        """Tile ``(i, j)`` of ``source`` (anything sliced in the whole image's coordinates),
        normalised ``(x - lo) / scale`` in float32, mirrored outside the image."""
        rows, cols = self._indices(i, j)
        y0, x0 = int(rows.min()), int(cols.min())
        region = np.asarray(source[y0:int(rows.max()) + 1, x0:int(cols.max()) + 1])
        lo, scale = (np.float32(v) for v in stats)
        return (region[np.ix_(rows - y0, cols - x0)].astype(np.float32) - lo) / scale

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The 1-D tent weights ``(tent_y, tent_x)`` of one tile's output (float32); the 2-D
        weights are their outer product, made a strip at a time by :func:`add_tile`."""
        r = self.upscale
        return tent(self.tile[0] * r), tent(self.tile[1] * r)

    def normaliser(self, axis: int, start: int, stop: int) -> np.ndarray:
        """The sum of the tiles' 1-D tents at output pixels ``start..stop`` along ``axis``
        (float32, added in tile order: the same numbers for any window)."""
        r = self.upscale
        size = self.tile[axis] * r
        starts = self.starts_y if axis == 0 else self.starts_x
        w, out = tent(size), np.zeros(stop - start, np.float32)
        for s in starts:
            a, b = max(s * r, start), min(s * r + size, stop)
            if a < b:
                out[a - start:b - start] += w[a - s * r:b - s * r]
        return out


#: rows of a tile blended at a time by :func:`add_tile`: the weights and the weighted
#: prediction exist for these rows only, not as two tile-sized float32 arrays (4 MB each for a
#: 1024-px tile; 8 B/px of a 1 Mpx image, BENCHMARKS.md "Memory", stop 33)
ADD_ROWS = 64


def add_tile(out, out_box, grid: TileGrid, i: int, j: int, prediction, weights) -> None:
    """``out`` (the window ``out_box`` of the output) += ``outer(*weights)`` * prediction of
    tile ``(i, j)`` on the pixels they share (``weights``: :meth:`TileGrid.weights`), a strip of
    :data:`ADD_ROWS` rows at a time (the same float32 products as the whole tile's)."""
    r, (ty, tx) = grid.upscale, grid.tile
    y, x = grid.starts_y[i] * r, grid.starts_x[j] * r
    a, b = max(y, out_box[0]), min(y + ty * r, out_box[1])
    c, d = max(x, out_box[2]), min(x + tx * r, out_box[3])
    if a < b and c < d:
        wy, wx = weights
        wx = wx[c - x:d - x]
        for s in range(a, b, ADD_ROWS):
            e = min(b, s + ADD_ROWS)
            w = np.outer(wy[s - y:e - y], wx)
            out[s - out_box[0]:e - out_box[0], c - out_box[2]:d - out_box[2]] += prediction[s - y:e - y, c - x:d - x] * w


def finish(out, out_box, grid: TileGrid, stats, rows: int = 256) -> np.ndarray:
    """``out`` (weighted sums) divided by the weights' sum and brought back to the input's units
    ``* scale + lo``, in place, a strip of ``rows`` rows at a time (no whole-size temporaries)."""
    den_y = grid.normaliser(0, out_box[0], out_box[1])
    den_x = grid.normaliser(1, out_box[2], out_box[3])
    lo, scale = (np.float32(v) for v in stats)
    tiny = np.finfo(np.float32).tiny
    for a in range(0, out.shape[0], rows):
        strip = out[a:a + rows]
        strip /= np.maximum(den_y[a:a + rows, None] * den_x[None, :], tiny)
        strip *= scale
        strip += lo
    return out


class TileCache:
    """Tile predictions kept between the blocks of one image, so that a tile touching several
    blocks runs once (least recently used out first). A block's result does not change: the
    cached prediction is the one it would compute. Keep one cache per image (the key is the
    tile's place on the grid): :mod:`napari_refocus.bigimage` makes one block runner per image.

    ``capacity(grid)``: two rows of the grid's tiles (the tiles that cross a line: the overlap is
    less than the stride) plus a block's 3 x 3, so blocks at least a tile high, taken row by row,
    reuse every tile they share with the block before and the row above."""

    def __init__(self):
        self._lru = LRU(max_items=0)

    def __len__(self) -> int:
        return len(self._lru)

    def capacity(self, grid: TileGrid) -> None:
        self._lru.max_items = max(self._lru.max_items, 2 * len(grid.starts_x) + 9)

    def get(self, key):
        return self._lru.get(key)

    def put(self, key, value) -> None:
        self._lru.put(key, value)
