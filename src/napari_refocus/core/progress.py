"""Long jobs are generators that yield :class:`Progress` and *return* their result.

The widget wraps such a generator in a napari thread worker (which can stop it between
yields), the command line drives it with a progress bar, a batch runs it inside dask tasks.

Cancelling: the one mechanism is the :class:`Cancelled` exception, raised at a *checkpoint*.
Every yield of a job is one (closing the generator, or a progress callback that raises
:class:`Cancelled`, stops it there), and so is every :func:`check_cancelled` call that the
long loops make between yields: each Richardson-Lucy iteration, each chunk of
:func:`~napari_refocus.core.devices.run_chunked` and each layer of a network (once
:func:`add_module_checkpoints`: every network the loader gives). Those raise when the :class:`CancelToken` of the current thread
(set by :func:`with_cancel` / :func:`cancel_scope`) has been cancelled from another thread,
so a job stops within one such step even when it yields rarely.
"""

from __future__ import annotations

import contextlib
import threading
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


class Cancelled(Exception):
    """A job was cancelled (its :class:`CancelToken`, or a progress callback raised this)."""


class CancelToken:
    """A flag another thread sets to stop a job at its next checkpoint (thread-safe)."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop; it raises :class:`Cancelled` at its next checkpoint."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled")


_local = threading.local()


@contextlib.contextmanager
def cancel_scope(token: CancelToken | None):
    """Make ``token`` the current thread's token (what :func:`check_cancelled` reads)."""
    previous = getattr(_local, "token", None)
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def current_token() -> CancelToken | None:
    """The current thread's :class:`CancelToken` (None outside a :func:`cancel_scope`); work
    handed to other threads (dask blocks) takes it along."""
    return getattr(_local, "token", None)


def check_cancelled() -> None:
    """A checkpoint: raise :class:`Cancelled` if the current thread's token was cancelled.

    Cheap (an attribute read and an event test); long loops call it once per step."""
    token = getattr(_local, "token", None)
    if token is not None and token._event.is_set():
        raise Cancelled("cancelled")


def call_cancellable(fn, *args, poll_s: float = 0.05):
    """``fn(*args)`` run in a helper thread while this one waits for it, checking for Cancel every
    ``poll_s``: for one long call that has no checkpoints of its own (a dense LAPACK solve, which
    releases the GIL). On Cancel, :class:`Cancelled` is raised at once; the helper thread finishes
    its call in the background and its result is dropped."""
    token = getattr(_local, "token", None)
    if token is None:  # nothing can cancel this call: no thread needed
        return fn(*args)
    done, box = threading.Event(), {}

    def work():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        done.set()

    threading.Thread(target=work, daemon=True, name="napari-refocus-call").start()
    while not done.wait(poll_s):
        check_cancelled()
    if "error" in box:
        raise box["error"]
    return box["value"]


def with_cancel(job, token: CancelToken):
    """Wrap a progress generator so that it runs under ``token``: the job raises
    :class:`Cancelled` at its next checkpoint once ``token.cancel()`` is called (from any
    thread). The token is current only while the job runs (between ``next`` calls other code
    in the thread is unaffected). Returns the job's result; closing the wrapper closes the job.
    """
    try:
        while True:
            with cancel_scope(token):
                token.check()
                try:
                    item = next(job)
                except StopIteration as stop:
                    return stop.value
            yield item
    finally:
        job.close()


def add_module_checkpoints(model) -> None:
    """Make every layer of ``model`` (a torch module) a cancellation checkpoint.

    A cancelled job then stops after the layer that is running rather than after the whole
    forward pass (a 1024-px tile batch of a generator takes seconds on a CPU). The model loader
    calls this once per loaded network, so only the package's own networks carry the hooks
    (never a process-wide hook that every other library's modules would run too); the hooks
    stay for the network's life (never added and removed around a call, which would race with
    other threads running a shared cached network) and are no-ops in threads without a token.
    """
    for module in model.modules():
        module.register_forward_pre_hook(_checkpoint_hook)


def _checkpoint_hook(_module, _inputs) -> None:
    check_cancelled()


def relabel(job, stage: str):
    """``job`` (a generator yielding :class:`Progress`) with every Progress named ``stage``;
    returns what ``job`` returns (a second pass of a stage says which it is)."""
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        yield Progress(p.done, p.total, stage) if isinstance(p, Progress) else p


def counted(job, start: int, total: int):
    """``job`` (a generator yielding :class:`Progress`) as steps ``start + done`` of ``total``
    of the same stage (one part of a larger count: its zero step is dropped, the caller has
    reported it); returns what ``job`` returns."""
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        if not isinstance(p, Progress):
            yield p
        elif p.done:
            yield Progress(start + p.done, total, p.stage)


def drain(job, callback=None):
    """Run a progress generator to the end and return its result.

    ``callback(progress)`` is called with every :class:`Progress` the job yields; it may
    raise :class:`Cancelled` (or anything) to stop the job, which is then closed.
    """
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value
        if callback is not None and isinstance(item, Progress):
            try:
                callback(item)
            except BaseException:
                job.close()
                raise



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
