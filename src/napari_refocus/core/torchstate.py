"""Context managers for torch's process-wide settings: set for a block, then put back.

Library code never leaves a global setting changed: a caller who chose flush-to-zero or a
thread count keeps it after a napari-refocus call returns (or raises).
"""

from __future__ import annotations

import contextlib


def denormals_flushed() -> bool:
    """True when this thread's CPU flushes subnormal floats to zero.

    torch has no getter for :func:`torch.set_flush_denormal`, so this probes: 1e-30 * 1e-10
    is subnormal in float32 and comes out as exactly 0 only when flushing is on.
    """
    import torch

    return (torch.full((1,), 1e-30, dtype=torch.float32) * 1e-10).item() == 0.0


@contextlib.contextmanager
def flush_denormal(enabled: bool = True):
    """Flush subnormal floats to zero on the CPU inside the block, then restore the old mode.

    Yields whether the mode is in effect (False where the CPU cannot flush, or when
    ``enabled`` is False, in which case nothing is touched). The setting is per thread, as
    :func:`torch.set_flush_denormal` is.
    """
    import torch

    if not enabled:
        yield False
        return
    before = denormals_flushed()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported and not before:
            torch.set_flush_denormal(False)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` intra-op CPU threads inside the block (None or 0: leave it as it is)."""
    import torch

    if not n:
        yield torch.get_num_threads()
        return
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
