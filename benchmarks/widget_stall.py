"""How long the viewer's GUI thread stalls while a widget job runs on a 4096x4096 image.

A real napari viewer (shown, under Xvfb: ``xvfb-run -a .venv/bin/python benchmarks/widget_stall.py``)
holds a 4096x4096 uint16 layer (the shipped BBBC006 out-of-focus field, mosaicked with mirror
flips). The Refocus widget runs its default method and the Defocus map widget its map, each
started by clicking its button. A ``QTimer`` ticks every 5 ms on the GUI thread; the gaps
between ticks are the stalls a user feels (a pan or a click waits that long). Recording runs
from the click until the result layer is added and drawn (plus 0.5 s).

For the longest gaps the script says what the GUI thread was doing: timed spans around the slots
that run there (progress updates, the hand-over of the result, ``add_image``/``add_labels``,
napari's ``on_draw``, vispy's GL command flush where textures are uploaded) and a sampling
profiler (a thread that takes the GUI thread's Python stack every 4 ms).

The baseline, in the same viewer after the widgets (``--floor``): napari itself adding a layer of
the result's size (a float32 image with its contrast limits given) and one of the map's size (a
labels layer) on the GUI thread with no job running. No widget that hands a result to napari as a
new layer can stall for less than that.

``--src DIR`` imports napari_refocus from another source tree (e.g. an export of an earlier
commit: the baseline) so that before and after run in one session::

    git archive <base> src | tar -x -C /tmp/base && ln -s $PWD/weights /tmp/base/weights
    xvfb-run -a .venv/bin/python benchmarks/widget_stall.py --src /tmp/base/src --json base.json
    xvfb-run -a .venv/bin/python benchmarks/widget_stall.py --json new.json
    .venv/bin/python benchmarks/widget_stall.py --publish base.json new.json
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

TICK_MS = 5
SAMPLE_S = 0.004


def mosaic(tile, size: int):
    """``size`` x ``size`` of ``tile`` repeated with mirror flips (no seams)."""
    import numpy as np

    row = np.concatenate([tile, tile[:, ::-1]], axis=1)
    block = np.concatenate([row, row[::-1]], axis=0)
    reps = (-(-size // block.shape[0]), -(-size // block.shape[1]))
    return np.ascontiguousarray(np.tile(block, reps)[:size, :size])


class Recorder:
    """Tick times of a 5 ms QTimer, timed spans of GUI-thread slots and stack samples."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.spans: list[tuple[str, float, float]] = []
        self.samples: list[tuple[float, tuple]] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self._main = threading.main_thread().ident
        self._on = False
        self._sampler = None

    def start(self):
        self.ticks.clear()
        self.spans.clear()
        self.samples.clear()
        self._on = True
        self.ticks.append(time.perf_counter())
        self.timer.start()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def stop(self):
        self._on = False
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        self._sampler.join()

    @staticmethod
    def _stack(frame, depth: int = 40) -> tuple:
        stack = []
        while frame is not None and len(stack) < depth:
            code = frame.f_code
            stack.append(f"{os.path.basename(code.co_filename)}:{code.co_name}")
            frame = frame.f_back
        return tuple(stack)

    def _sample(self):
        me = threading.get_ident()
        while self._on:
            frames = sys._current_frames()
            # the other threads too: after a gap in which even this thread could not run, the one that
            # held the GIL (a worker in a long C call) is where it was when the GIL came free
            others = tuple(self._stack(f, 6) for ident, f in frames.items() if ident not in (self._main, me))
            self.samples.append((time.perf_counter(), self._stack(frames.get(self._main)), others))
            time.sleep(SAMPLE_S)

    def wrap(self, owner, attr: str, label: str | None = None):
        """Time every call of ``owner.attr`` made on the GUI thread."""
        original = getattr(owner, attr)
        label = label or f"{getattr(owner, '__name__', owner)}.{attr}"
        rec = self

        def timed(*args, **kwargs):
            if not rec._on or threading.get_ident() != rec._main:
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                rec.spans.append((label, t0, time.perf_counter()))

        setattr(owner, attr, timed)

    def gaps(self):
        """(gap s, start, end) between consecutive ticks, longest first."""
        t = self.ticks
        return sorted(((b - a, a, b) for a, b in itertools.pairwise(t)), reverse=True)

    def explain(self, start: float, end: float) -> dict:
        spans = collections.defaultdict(float)
        for label, a, b in self.spans:
            overlap = min(b, end) - max(a, start)
            if overlap > 0.002:
                spans[label] += overlap
        inside = [s for t, s, _ in self.samples if start <= t <= end]
        # the first sample after the gap: where the other threads were when this one got the GIL back
        after = next((o for t, _, o in self.samples if t >= end), ())
        workers = [" < ".join(st[:3]) for st in after if st and not st[0].startswith(("threading.py:wait",
                                                                                       "queue.py", "selectors.py"))]
        leaf = collections.Counter()
        for stack in inside:
            # the innermost frame of napari, vispy, numpy, the plugin or Qt glue: what the thread was in
            own = [f for f in stack if not f.startswith(("threading.py", "widget_stall.py"))]
            leaf[" < ".join(own[:3]) if own else "(idle / C code)"] += 1
        return {"spans_ms": {k: round(v * 1e3, 1) for k, v in sorted(spans.items(), key=lambda kv: -kv[1])},
                "samples": len(inside), "stacks": leaf.most_common(3), "other_threads_after": workers[:3]}


def instrument(rec: Recorder):
    import napari.components.viewer_model as vm
    import vispy.scene.canvas as scanvas
    from napari._vispy.canvas import VispyCanvas
    from vispy.gloo import glir

    from napari_refocus.ui import jobs

    rec.wrap(vm.ViewerModel, "add_image", "viewer.add_image")
    rec.wrap(vm.ViewerModel, "add_labels", "viewer.add_labels")
    rec.wrap(jobs.JobPanel, "_on_progress", "JobPanel._on_progress")
    rec.wrap(jobs.JobPanel, "_on_returned", "JobPanel._on_returned (hand-over)")
    rec.wrap(VispyCanvas, "on_draw", "napari VispyCanvas.on_draw (layer updates)")
    rec.wrap(scanvas.SceneCanvas, "_draw_scene", "vispy SceneCanvas._draw_scene")
    rec.wrap(glir.GlirParser, "parse", "vispy GlirParser.parse (GL upload)")


def run_case(viewer, rec: Recorder, widget, layer_count_before: int, timeout_s: float):
    """Click the widget's button; record until its result is added and drawn (+0.5 s)."""
    from qtpy.QtWidgets import QApplication

    drawn, inserted = [], []
    canvas = viewer.window._qt_viewer.canvas._scene_canvas

    def on_draw(*_):
        drawn.append(time.perf_counter())

    def on_insert(*_):
        inserted.append(time.perf_counter())

    canvas.events.draw.connect(on_draw)
    viewer.layers.events.inserted.connect(on_insert)
    rec.start()
    t0 = time.perf_counter()
    widget.panel.button.native.click()
    added_at = None
    next_note = t0 + 10
    while time.perf_counter() - t0 < timeout_s:
        QApplication.processEvents()
        time.sleep(0.001)
        if time.perf_counter() > next_note:  # a sign of life on stderr
            next_note += 10
            print(f"  {time.perf_counter() - t0:.0f} s: running={widget.panel.running} "
                  f"layers={len(viewer.layers)} draws={len(drawn)} {widget.panel.progress.native.text()}",
                  file=sys.stderr, flush=True)
        if added_at is None and not widget.panel.running and len(viewer.layers) > layer_count_before:
            added_at = inserted[-1] if inserted else time.perf_counter()  # when the result layer came
        if added_at is not None and any(t > added_at for t in drawn) and time.perf_counter() - added_at > 0.5:
            break
        if added_at is None and not widget.panel.running and widget.panel.last_error is not None:
            break
    rec.stop()
    canvas.events.draw.disconnect(on_draw)
    viewer.layers.events.inserted.disconnect(on_insert)
    if widget.panel.last_error is not None:
        raise RuntimeError(f"the job failed: {widget.panel.last_error}")
    if added_at is None:
        raise RuntimeError(f"no result within {timeout_s} s")
    return summary(rec, t0, added_at - t0)


def summary(rec: Recorder, t0: float, seconds: float) -> dict:
    """The recorded gaps: their count over 50 and 100 ms and the five longest, explained."""
    gaps = rec.gaps()
    top = [{"gap_ms": round(g * 1e3, 1), "at_s": round(a - t0, 2), **rec.explain(a, b)} for g, a, b in gaps[:5]]
    return {"seconds": round(seconds, 1), "ticks": len(rec.ticks), "longest_ms": top[0]["gap_ms"] if top else 0.0,
            "over_100ms": sum(g > 0.1 for g, _, _ in gaps), "over_50ms": sum(g > 0.05 for g, _, _ in gaps),
            "top": top}


def floor_case(viewer, rec: Recorder, kind: str, size: int, timeout_s: float = 60.0):
    """The baseline: what napari alone stalls for when a layer like a widget's result is added on
    the GUI thread, with no job running (``image``: a ``size`` x ``size`` float32 image with its
    contrast limits given, as the Refocus widget hands over; ``labels``: the defocus map's
    ``ceil(size / 42)``-cell class map). Recorded like :func:`run_case`, from the add until it is
    drawn (+0.5 s)."""
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    drawn = []
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.draw.connect(lambda *_: drawn.append(time.perf_counter()))
    rng = np.random.default_rng(0)
    if kind == "image":
        data = rng.random((size, size), dtype=np.float32)
        add = lambda: viewer.add_image(data, name="floor image", contrast_limits=(0.0, 1.0))  # noqa: E731
    else:
        cells = -(-size // 42)
        data = rng.integers(1, 12, (cells, cells)).astype(np.int32)
        add = lambda: viewer.add_labels(data, name="floor labels", scale=(42, 42), opacity=0.5,  # noqa: E731
                                        blending="translucent")
    added = []
    rec.start()
    t0 = time.perf_counter()
    QTimer.singleShot(20, lambda: (add(), added.append(time.perf_counter())))
    while time.perf_counter() - t0 < timeout_s:
        QApplication.processEvents()
        time.sleep(0.001)
        if added and any(t > added[0] for t in drawn) and time.perf_counter() - added[0] > 0.5:
            break
    rec.stop()
    return summary(rec, t0, 0.0)


def measure(args) -> dict:
    if args.src:
        sys.path.insert(0, os.path.abspath(args.src))
    import tempfile

    import magicgui._util
    import napari
    from qtpy.QtWidgets import QApplication

    import napari_refocus
    from napari_refocus.io.samples import PIXEL_UM, real_defocused_image
    from napari_refocus.ui import DefocusMapWidget, RefocusWidget

    # the widgets' defaults, not the preferences saved on this machine (as the widget tests do)
    cache = Path(tempfile.mkdtemp(prefix="widget_stall_prefs_"))
    magicgui._util.user_cache_dir = lambda *a, **k: cache
    img = mosaic(real_defocused_image(), args.size)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 960)
    viewer.add_image(img, name="bbbc006 mosaic", scale=(PIXEL_UM, PIXEL_UM), units=("um", "um"))
    for _ in range(50):
        QApplication.processEvents()
        time.sleep(0.01)
    rec = Recorder()
    instrument(rec)
    out = {"napari_refocus": os.path.dirname(napari_refocus.__file__), "size": args.size,
           "dtype": str(img.dtype), "cases": {}}
    for kind in filter(None, args.widgets.split(",")):
        cls = {"refocus": RefocusWidget, "defocus_map": DefocusMapWidget}[kind]
        widget = cls(viewer)
        viewer.window.add_dock_widget(widget, name=kind)
        widget.image.value = viewer.layers["bbbc006 mosaic"]
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.01)
        method = getattr(widget, "method", None)
        if method is not None and args.method:
            widget.set_method(args.method)
        label = f"{kind} ({method.value})" if method is not None else kind
        out["cases"][label] = run_case(viewer, rec, widget, len(viewer.layers), args.timeout)
        out["cases"][label]["values"] = {k: v for k, v in widget.prefs.asdict().items()}
        print(label, json.dumps(out["cases"][label], indent=1), flush=True)
    for kind in filter(None, args.floor.split(",")):  # the baseline, in the same viewer and session
        label = f"napari floor: add_{kind}"
        out["cases"][label] = floor_case(viewer, rec, kind, args.size)
        print(label, json.dumps(out["cases"][label], indent=1), flush=True)
    out["load_average"] = os.getloadavg()
    out["label"] = args.label or ("baseline" if args.src else "this tree")
    if args.json:  # before closing the viewer: Qt has crashed in close() after the floor's layers
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    viewer.close()
    return out


def publish(paths: list[str], write: bool, notes: str | None = None) -> None:
    from _report import git_rev, machine
    from _report import publish as _publish

    runs = [json.loads(Path(p).read_text()) for p in paths]
    lines = ["## Viewer stalls while a widget job runs (4096x4096)", "",
             (f"`xvfb-run -a .venv/bin/python benchmarks/widget_stall.py [--src BASE/src] --json X.json` then "
              f"`--publish {' '.join(os.path.basename(p) for p in paths)}`, at {git_rev()}; {machine()}; "
              "Xvfb + Mesa llvmpipe (software OpenGL). A 5 ms QTimer on the GUI thread; a gap is the time between "
              "two ticks (what a pan or click would wait), from the click on the widget's button until its result "
              "layer is added and drawn."), "",
             "| run | case | job s | longest gap ms | gaps > 100 ms | gaps > 50 ms | load avg (1/5/15 min) |",
             "|---|---|---|---|---|---|---|"]
    for p, r in zip(paths, runs):
        la = "/".join(f"{v:.1f}" for v in r.get("load_average", ()))
        for case, c in r["cases"].items():
            lines.append(f"| {r.get('label', os.path.basename(p))} | {case} | {c['seconds']} | {c['longest_ms']} | "
                         f"{c['over_100ms']} | {c['over_50ms']} | {la} |")
    lines += ["", ("The five longest gaps of each case, with the GUI-thread slots that overlapped them (ms) "
                   "and the most frequent sampled Python stack (innermost first):"), ""]
    for p, r in zip(paths, runs):
        for case, c in r["cases"].items():
            lines.append(f"- **{r.get('label', os.path.basename(p))}, {case}**: " + "; ".join(
                f"{t['gap_ms']} ms at {t['at_s']} s ("
                + (", ".join(f"{k} {v}" for k, v in list(t["spans_ms"].items())[:3]) or "no timed slot")
                + (f"; stack: `{t['stacks'][0][0]}`" if t["stacks"] else "")
                + (f"; worker then in `{t['other_threads_after'][0]}`" if t.get("other_threads_after") else "") + ")"
                for t in c["top"]))
    if notes:  # the reading of the numbers (a markdown file written after looking at them)
        lines += ["", Path(notes).read_text().rstrip()]
    _publish("widget-stall", lines, write=write)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=None, help="import napari_refocus from this folder (a baseline tree)")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--widgets", default="refocus,defocus_map")
    ap.add_argument("--floor", default="image,labels",
                    help="baseline cases run after the widgets: napari adding a result-sized image / a map-sized "
                         "labels layer on the GUI thread with no job running ('' for none)")
    ap.add_argument("--method", default=None, help="the Refocus widget's method (default: the widget's default)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", default=None, help="write the measurement here")
    ap.add_argument("--label", default=None, help="the run's name in the table")
    ap.add_argument("--publish", nargs="+", default=None, help="JSON files to put in BENCHMARKS.md")
    ap.add_argument("--notes", default=None, help="a markdown file appended to the published section")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.publish:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        publish(args.publish, write=not args.no_write, notes=args.notes)
        return
    measure(args)


if __name__ == "__main__":
    main()
