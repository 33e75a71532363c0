"""Running long work off the GUI thread: a Run/Cancel button, a progress bar, a status line.

:class:`JobPanel` runs a generator function (it yields
:class:`~napari_refocus.core.progress.Progress` and returns a value) in a napari
``thread_worker``. Cancel calls ``worker.quit()``, which takes effect at the job's next
``yield``; the job also runs under a :class:`~napari_refocus.core.progress.CancelToken`, so
it raises :class:`~napari_refocus.core.progress.Cancelled` at its next checkpoint in between
(every RL iteration, chunk of patches or tiles, network layer). The same progress shows in the dock and,
at most once a second, in napari's activity panel (``napari.utils.progress``). The job reads its layer data itself:
nothing is read on the GUI thread before it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, ProgressBar, PushButton
from psygnal import Signal
from qtpy.QtWidgets import QSizePolicy

from ..core.progress import Cancelled, CancelToken, Progress, with_cancel
from .style import ERR_STYLE, WARN_STYLE, info_label, show

STEPS = 1000  # progress bar resolution
#: the dock and the activity panel show at most one progress update per this many seconds (and
#: every change of stage): a job may yield thousands of steps, and each update repaints two
#: progress bars on the GUI thread (measured 20-170 ms a call on the shared 2-core machine,
#: benchmarks/widget_stall.py), so unthrottled updates were the viewer's most frequent stalls
PROGRESS_EVERY_S = 0.1
#: napari's activity panel gets at most one update per this many seconds (and the last step):
#: its progress bar calls ``QApplication.processEvents()`` on every value and description it is
#: given, so each update runs whatever the event loop holds inside the slot (the 75-80 ms slots
#: of benchmarks/widget_stall.py); the dock's own bar, which does not, keeps PROGRESS_EVERY_S
ACTIVITY_EVERY_S = 1.0


class JobPanel(Container):
    """A Run button that turns into Cancel while a worker runs, a progress bar and a status line.

    :meth:`start` runs ``job()`` in a worker; errors become a napari notification and the
    panel resets. ``worker`` is the running worker (None when idle); ``cancelled`` and
    ``last_error`` describe the last run.
    """

    finished = Signal()  # after success, error or cancel

    def __init__(self, run_text: str, on_run: Callable, *, what: str = "job", name: str = "panel"):
        self.button = PushButton(text=run_text, name="button")
        self.progress = ProgressBar(value=0, min=0, max=STEPS, name="progress")
        self.status = info_label("status")
        super().__init__(widgets=[self.button, self.progress, self.status], labels=False, name=name)
        self.margins = (0, 0, 0, 0)
        self.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.run_text = run_text
        self._on_run = on_run
        self._what = what
        self.worker = None
        self.last_error: BaseException | None = None
        self.cancelled = False
        self._bar = None
        self._detached = False
        self._token: CancelToken | None = None
        self._shown = self._activity = (0.0, None)  # (when, stage) of the last progress shown: dock, activity panel
        self.progress.native.setFormat("idle")
        self.button.changed.connect(self._clicked)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _clicked(self, *_):
        if self.running:
            self.cancel()
        else:
            self._on_run()

    def start(self, job: Callable, on_result: Callable[[Any], None], label: str = ""):
        """Run ``job()`` (a Progress generator function) in a thread worker; returns the worker."""
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress
        from superqt.utils import GeneratorWorker

        if self.running:
            raise RuntimeError(f"a {self._what} is already running")
        self.last_error = None
        self.cancelled = False
        # napari's create_worker adds the job to the activity panel (with its own cancel
        # button -> worker.quit); superqt's worker class, because napari's own one also relays
        # every error to the notification manager and each error would show twice.
        token = self._token = CancelToken()

        def guarded():
            return (yield from with_cancel(job(), token))

        worker = create_worker(guarded, _start_thread=False, _worker_class=GeneratorWorker, _connect={
            "yielded": self._on_progress,
            "returned": lambda value: self._on_returned(value, on_result),
            "errored": self.fail,
            "aborted": self._on_aborted,
            "finished": self._on_finished,
        })
        self.worker = worker
        self.button.text = "Cancel"
        self.button.tooltip = f"stop the running {self._what}"
        self.progress.value = 0
        self._shown = self._activity = (0.0, None)
        self.progress.native.setFormat(f"{label or 'starting'}…")
        show(self.status, "")
        self._bar = napari_progress(total=STEPS, desc=f"napari-refocus: {label or self._what}")
        worker.start()
        return worker

    def cancel(self):
        """Ask the running worker to stop at its next progress step."""
        if self.worker is not None:
            self.cancelled = True
            self.button.enabled = False
            self.button.text = "Cancelling…"
            self._stop()

    def _stop(self):
        if self._token is not None:
            self._token.cancel()  # stops the job inside a long step
        self.worker.quit()  # and at its next yield

    def detach(self):
        """The widget is going away: stop the worker and touch no widget from now on."""
        self._detached = True
        if self.worker is not None:
            self._stop()

    def _on_progress(self, item):
        if self._detached or not isinstance(item, Progress):
            return
        now = time.perf_counter()
        last, stage = self._shown
        if now - last < PROGRESS_EVERY_S and item.stage == stage and item.done < item.total:
            return  # throttled (see PROGRESS_EVERY_S); a new stage and the last step always show
        self._shown = (now, item.stage)
        value = round(STEPS * min(1.0, max(0.0, item.fraction)))
        self.progress.value = value
        self.progress.native.setFormat(f"{item.stage or self._what}: {item.done}/{item.total}  (%p%)")
        bar = self._bar  # a local: showing the description may let the worker finish meanwhile
        if bar is None or value < bar.n:
            return
        shown, described = self._activity
        if now - shown < ACTIVITY_EVERY_S and item.done < item.total:
            return  # see ACTIVITY_EVERY_S
        self._activity = (now, item.stage)
        if item.stage != described:
            bar.set_description(f"napari-refocus: {item.stage or self._what}")
        bar.update(value - bar.n)

    def _on_returned(self, value, on_result):
        if self._detached:
            return
        try:
            on_result(value)
        except Exception as exc:  # noqa: BLE001 - a failed hand-over is shown like a failed job
            self.fail(exc)
            return
        self.progress.value = STEPS
        self.progress.native.setFormat("done")

    def fail(self, exc: BaseException):
        """Show ``exc`` in the status line and as a napari notification (a failed job, or a
        check before starting one)."""
        from napari.utils import notifications

        if isinstance(exc, Cancelled):  # the token stopped the job between two yields
            self.cancelled = True
            self._on_aborted()
            return
        self.last_error = exc
        if self._detached:
            return
        show(self.status, f"{type(exc).__name__}: {exc}", ERR_STYLE)
        self.progress.native.setFormat("failed")
        notifications.show_error(f"napari-refocus: {self._what} failed: {exc}")

    def _on_aborted(self):
        if self._detached:
            return
        show(self.status, f"{self._what} cancelled", WARN_STYLE)
        self.progress.value = 0
        self.progress.native.setFormat("cancelled")

    def _on_finished(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        if self._detached:
            return
        self.button.enabled = True
        self.button.text = self.run_text
        self.button.tooltip = ""
        self.finished.emit()


def wait_for(widget_or_panel, timeout_s: float = 120.0) -> None:
    """Spin the Qt event loop until the panel's worker is done (for scripts and the demo)."""
    from qtpy.QtWidgets import QApplication

    panel = getattr(widget_or_panel, "panel", widget_or_panel)
    t_end = time.monotonic() + timeout_s
    while panel.running and time.monotonic() < t_end:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    if panel.running:
        raise TimeoutError(f"job still running after {timeout_s} s")
