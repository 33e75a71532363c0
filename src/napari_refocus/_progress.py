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
