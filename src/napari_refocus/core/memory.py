"""How much memory a run would need, how much there is, and whether to go block by block.

One decision for the CLI, batch and the widget (:func:`needs_blocks`): an image is restored in
memory when the run's estimated peak (:func:`estimate_bytes`) fits in a share
(:data:`USABLE_SHARE`) of the memory available to this process (:func:`available_bytes`: the
smaller of the system's available memory and what the cgroup limit leaves), and block by
block otherwise. The estimate is per method: peak bytes per input pixel above the process
baseline plus a fixed working set (a network's tile activations), as measured by
``benchmarks/memory_speed.py`` (BENCHMARKS.md, "Memory"), with a margin on top.

Core knows no method: ``method`` is a name or any object with ``.name`` and ``.upscale``
(a :class:`~napari_refocus.methods.base.Method`); an unknown name gets the most demanding
built-in figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the share of the available memory an in-memory run may plan to use (the rest: the viewer,
#: other layers, other processes, the estimate's error)
USABLE_SHARE = 0.5


@dataclass(frozen=True)
class Footprint:
    """A method's working memory for one 2-D plane: ``per_pixel`` bytes per input pixel plus
    ``fixed`` bytes (independent of the image size: model activations of one batch of tiles)."""

    per_pixel: float
    fixed: float = 0.0
    upscale: int = 1


#: peak bytes above the baseline, per method, with the defaults. The learned methods (1024-px
#: tiles, one per pass since be1ea9a): the slope between the peaks measured at 3072^2 and 6144^2
#: by benchmarks/memory_speed.py (BENCHMARKS.md "Memory") plus a quarter; the output array is
#: counted in ``per_pixel``. Their fixed part (stop 32, after the full-resolution stages run in
#: bands of rows): the larger of one tile's live tensors (24-38 MB; m-deblurgan's 512-px tile 20)
#: and what the peaks measured at 1024^2 and 3072^2 leave above ``per_pixel`` (up to 27 MB),
#: plus a quarter. lbdvd and rl re-measured after issue 16's changes
#: (commit 94e31b1: lbdvd 10.5 B/px at 1024^2 and ~10.4 at 2048^2; rl 20.1 at 1024^2 and 12.5 at
#: 3072^2, i.e. ~12 B/px + ~8 MB), plus a quarter; rl's fixed part also covers frames up to
#: core.rl.WHOLE_FRAME_MAX pixels, which are transformed whole (~70 B/px, at most ~40 MB).
#: lbdvd on an image defocused beyond the top class (its second Richardson-Lucy pass,
#: methods.deep): 14.4-15.7 B/px at 3072^2 (11.5-11.8 with ``beyond_top=False``; BENCHMARKS.md
#: "Memory"), plus a quarter: 20. m-deblurgan with its 512-px default tiles (stop 28): 27.8 B/px at
#: 3072^2 and 22.0 at 6144^2 (250 and 790 MB), a slope of 19.1 B/px plus a quarter. Stop 34
#: measured against a baseline with the warm-up's freed heap handed back (what a run needs on a
#: fresh heap): every row's fixed part covers its 1024^2 peak but m-deblurgan's (56-70 MB at
#: 1024^2 in nine runs), whose fixed part is raised to 48 MB (24 + 48 = 72 MB there). rl gated by DelpNet's map
#: (stop 39): 23.7 / 11.6 / 11.3 B/px at 1024^2 / 3072^2 / 6144^2, within its figure (the map runs first)
MIB = 2**20
FOOTPRINTS = {
    "lbdvd": Footprint(20.0, 16 * MIB),
    "rl": Footprint(15.0, 40 * MIB),
    "comi-cyclegan": Footprint(17.5, 35 * MIB),
    "refocus-unet": Footprint(11.5, 35 * MIB),
    "m-deblurgan": Footprint(24.0, 48 * MIB, upscale=2),
    "h2t-msunet": Footprint(13.5, 48 * MIB),
}
#: for a method not in the table: the most demanding built-in figures
UNKNOWN = Footprint(max(f.per_pixel for f in FOOTPRINTS.values()), max(f.fixed for f in FOOTPRINTS.values()),
                    max(f.upscale for f in FOOTPRINTS.values()))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_free_bytes(root="/sys/fs/cgroup") -> int | None:
    """Bytes this process's cgroup may still allocate (limit - usage), or None without a limit.

    cgroup v2 (``memory.max``, ``memory.current``) and v1 (``memory/memory.limit_in_bytes``,
    ``memory/memory.usage_in_bytes``); a v1 "no limit" is a huge number, read as none."""
    root = Path(root)
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        if limit is None or limit >= 2**60:
            continue
        usage = _read_int(root / usage_file) or 0
        return max(0, limit - usage)
    return None


def system_available_bytes() -> int:
    """Memory the system can give without swapping (psutil, else /proc/meminfo's MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise


def available_bytes() -> int:
    """The memory available to this process: the system's available memory, capped by what
    the cgroup limit still allows (a container's limit is often far below the host's RAM)."""
    free = system_available_bytes()
    cgroup = cgroup_free_bytes()
    return free if cgroup is None else min(free, cgroup)


#: images below this many pixels (0.5 Mpx: a 696x520 BBBC006 field, not a 1024^2 image) trade
#: fixed working sets of a few MB for speed: :func:`release_free_memory` does nothing (what their
#: stages free is a few MB, and a trim is paid again as page faults when the next stage touches
#: the returned pages) and Richardson-Lucy keeps more frames in flight
#: (:func:`~napari_refocus.core.rl_groups.cpu_group_batch`). Measured on a 696x520 field, 2-core
#: Xeon: lbdvd 0.19 s without its four trims, 0.21 s with them.
SMALL_IMAGE_PIXELS = 1 << 19


def release_free_memory(*, pixels: int | None = None) -> bool:
    """Give the memory freed so far back to the operating system (glibc's ``malloc_trim(0)``).

    After a stage that allocated and freed a large working set (a batch of DelpNet activations,
    RL frames), glibc keeps the freed blocks in its heap: they are reused by later allocations
    of the same size but still count in the process's resident memory, so the next stage's
    peak sits on top of them (measured: lbdvd at 1024^2 peaked ~60 MB higher in its
    deconvolution than it does after a trim). ``pixels``: the image's size; below
    :data:`SMALL_IMAGE_PIXELS` nothing is done. Returns False where nothing was done, or where
    there is no glibc (macOS, Windows, musl)."""
    if pixels is not None and pixels < SMALL_IMAGE_PIXELS:
        return False
    fn = _malloc_trim()
    return bool(fn is not None and fn(0) >= 0)


def _malloc_trim():
    global _TRIM
    if _TRIM is False:
        import ctypes
        import ctypes.util

        _TRIM = None
        name = ctypes.util.find_library("c")
        try:
            _TRIM = getattr(ctypes.CDLL(name), "malloc_trim") if name else None
        except (OSError, AttributeError):
            _TRIM = None
    return _TRIM


_TRIM = False  # not looked up yet


def footprint(method) -> Footprint:
    """The :class:`Footprint` of a method (a name or an object with ``.name``)."""
    return FOOTPRINTS.get(getattr(method, "name", method), UNKNOWN)


def _plane_pixels(shape, axes) -> int:
    if axes is None:
        return shape[-2] * shape[-1]
    axes = str(axes).upper()
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} do not name Y and X of an image of shape {shape}")
    return shape[axes.index("Y")] * shape[axes.index("X")]


def estimate_bytes(shape, dtype, method, *, axes: str | None = None, input_in_memory: bool = False) -> int:
    """Peak bytes an in-memory run of ``method`` on an image of ``shape`` would add.

    ``shape``: the image's shape, ``(..., Y, X)`` unless ``axes`` names them (e.g. "ZYX",
    "YXS"); the other axes (planes, channels) are run one plane at a time, so the work is one
    plane's and the output (float32, ``upscale`` x larger on each side) is the whole stack's.
    ``input_in_memory=False`` adds the input itself (a file about to be read); True when the
    caller already holds it (a napari layer).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"an image needs at least 2 axes (Y, X), got shape {shape}")
    plane = _plane_pixels(shape, axes)
    total = int(np.prod(shape, dtype=np.int64))
    fp = footprint(method)
    upscale = int(getattr(method, "upscale", fp.upscale) or 1)
    need = fp.per_pixel * plane + fp.fixed
    if total > plane:
        # the restored stack (float32) outgrows the one plane's output counted in per_pixel
        need += 4.0 * upscale * upscale * (total - plane)
    if not input_in_memory:
        need += np.dtype(dtype).itemsize * total
    return int(math.ceil(need))


def needs_blocks(shape, dtype, method, *, axes: str | None = None, input_in_memory: bool = False,
                 available: int | None = None) -> bool:
    """True when an in-memory run would not fit: :func:`estimate_bytes` above
    :data:`USABLE_SHARE` of ``available`` (default :func:`available_bytes`, read now).

    The one decision of the CLI, batch and the widget between an in-memory run and a block by
    block one."""
    if available is None:
        available = available_bytes()
    need = estimate_bytes(shape, dtype, method, axes=axes, input_in_memory=input_in_memory)
    return need > USABLE_SHARE * available
