"""Long jobs are generators that yield :class:`Progress` and *return* their result.

The widget wraps such a generator in a napari thread worker (which can stop it between
yields), the command line drives it with a progress bar, a batch runs it inside dask tasks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps of the stage named ``stage``."""

    done: int
    total: int
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def drain(job, callback=None):
    """Run a progress generator to the end and return its result.

    ``callback(progress)`` is called with every :class:`Progress` the job yields.
    """
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value
        if callback is not None and isinstance(item, Progress):
            callback(item)



def progress_bar(desc: str = "", *, enabled: bool = True, mininterval: float = 1.0, file=None):
    """``(update, close)``: ``update(progress)`` drives a tqdm bar on stderr, ``close()`` ends it.

    The bar is redrawn at most every ``mininterval`` seconds (and at the end): a training loop
    yields thousands of times, and a log file should not grow by a line per step.
    """
    if not enabled:
        return None, lambda: None
    import sys
    import time

    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit="step", file=file or sys.stderr, leave=False, disable=None,
               mininterval=mininterval)
    last = [0.0]

    def update(p: Progress):
        if bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        now = time.monotonic()
        if now - last[0] >= mininterval or p.done >= p.total:
            if p.stage:
                bar.set_description(p.stage[:60], refresh=False)
            bar.refresh()
            last[0] = now

    return update, bar.close


def run_with_bar(job, desc: str = "", *, enabled: bool = True, mininterval: float = 1.0):
    """Drain ``job`` (a progress generator) under :func:`progress_bar`; returns its result."""
    update, close = progress_bar(desc, enabled=enabled, mininterval=mininterval)
    try:
        return drain(job, update)
    finally:
        close()
