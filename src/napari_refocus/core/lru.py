"""One least-recently-used cache for the whole package, bounded by item count and/or bytes.

The OTF cache (:mod:`.otf`) bounds spectra by their total bytes; the tile cache of the learned
methods' block form (:mod:`napari_refocus.models.stitch`) bounds predictions by their number.
Both are the same structure: a thread-safe ordered map whose oldest-used entry leaves first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


def tensor_nbytes(value) -> int:
    """Bytes held by a torch tensor or numpy array (``element_size * nelement`` / ``nbytes``)."""
    if hasattr(value, "element_size"):
        return value.element_size() * value.nelement()
    return int(value.nbytes)


class LRU:
    """A thread-safe least-recently-used map.

    ``max_items``: at most this many entries (None: no count bound); ``max_bytes``: at most this
    many bytes in all, measured by ``nbytes(value)`` (None: no byte bound); a value larger than
    ``max_bytes`` on its own is not kept at all.
    """

    def __init__(self, *, max_items: int | None = None, max_bytes: int | None = None, nbytes=tensor_nbytes):
        self.max_items = None if max_items is None else int(max_items)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._nbytes = nbytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._nbytes(v) for v in self._items.values())

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items.pop(key, None)
            if self.max_bytes is not None and self._nbytes(value) > self.max_bytes:
                return
            self._items[key] = value
            if self.max_items is not None:
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
            if self.max_bytes is not None:
                total = sum(self._nbytes(v) for v in self._items.values())
                while total > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    total -= self._nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
