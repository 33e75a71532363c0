"""The base of the dock widgets: a magicgui ``Container`` bound to one viewer.

* Layer choosers are magicgui widgets made by ``create_widget(annotation="napari.layers.Image")``
  whose choices are this viewer's image layers. napari calls ``reset_choices`` on a docked
  widget whenever layers are added, removed, reordered or renamed; :meth:`reset_choices`
  keeps each chooser on its layer (a renamed layer too) and picks a new one only when its
  layer is gone, or when a new layer fits its role better (``prefer``).
* Every event connection the widget makes to the viewer or a layer goes through
  :meth:`watch`; when the widget is closed or taken out of its dock (napari's close button),
  :meth:`teardown` cancels running jobs and disconnects all of them, including the
  ``reset_choices`` connections napari made when it docked the widget.
"""

from __future__ import annotations

from collections.abc import Callable

from magicgui.widgets import Container, create_widget

#: the layer-list events napari connects to a dock widget's ``reset_choices``
LAYER_LIST_EVENTS = ("inserted", "removed", "reordered", "renamed")


class ViewerWidget(Container):
    """A magicgui Container docked in ``viewer`` (see the module docstring)."""

    def __init__(self, viewer, **kwargs):
        kwargs.setdefault("labels", True)
        super().__init__(**kwargs)
        self.viewer = viewer
        self.closed = False
        self._watched: list[tuple] = []
        self._choosers: list[tuple] = []  # (chooser, prefer)
        self._docked = False
        self.native_parent_changed.connect(self._parent_changed)
        self.native.destroyed.connect(self.teardown)

    # ------------------------------------------------------------------ choosers
    def layer_chooser(self, name: str, label: str, *, accept: Callable | None = None,
                      prefer: Callable | None = None):
        """A chooser of this viewer's image layers that pass ``accept``; ``prefer(layer)``
        ranks them (higher = better) for the automatic choice. Not yet added to the form."""
        from .layers import is_image

        def choices(_widget=None):
            return [ly for ly in self.viewer.layers if is_image(ly) and (accept is None or accept(ly))]

        widget = create_widget(annotation="napari.layers.Image", name=name, label=label,
                               options={"choices": choices, "nullable": False})
        self._choosers.append((widget, prefer))
        self._rechoose(widget, None, prefer, None)
        return widget

    def reset_choices(self, event=None):
        """Refresh every chooser (napari calls this when the layer list changes)."""
        if self.closed:
            return
        chosen = [chooser.value for chooser, _ in self._choosers]
        super().reset_choices()
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        for (chooser, prefer), previous in zip(self._choosers, chosen):
            self._rechoose(chooser, previous, prefer, inserted)

    @staticmethod
    def _rechoose(chooser, previous, prefer, inserted):
        candidates = list(chooser.choices)
        if not candidates:
            if previous is not None:  # emptied: say so (the combo box itself stays silent)
                chooser.changed.emit(None)
            return
        rank = prefer or (lambda _ly: 0)
        if previous is not None and previous in candidates:
            pick = previous
            if inserted is not None and inserted in candidates and prefer is not None \
                    and rank(inserted) > rank(previous):
                pick = inserted  # e.g. a fresh result is "the restored layer" to compare
        else:  # the best-ranked layer; among equals the top one (the newest)
            pick = max(reversed(candidates), key=rank)
        if chooser.value is not pick:
            chooser.value = pick

    # ------------------------------------------------------------------ connections
    def watch(self, emitter, callback) -> None:
        """Connect ``callback`` to a viewer/layer event; disconnected by :meth:`teardown`."""
        emitter.connect(callback)
        self._watched.append((emitter, callback))

    def panels(self) -> list:
        """The job panels of this widget (cancelled on teardown)."""
        from .jobs import JobPanel

        return [w for w in self if isinstance(w, JobPanel)]

    def teardown(self, *_) -> None:
        """Cancel running jobs and disconnect from the viewer and its layers (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for panel in self.panels():
            panel.detach()
        for emitter, callback in self._watched:
            emitter.disconnect(callback)
        self._watched.clear()
        events = self.viewer.layers.events
        for name in LAYER_LIST_EVENTS:
            getattr(events, name).disconnect(self.reset_choices)

    def _parent_changed(self, parent=None):
        if parent is not None:
            self._docked = True
        elif self._docked:  # napari's close button takes the widget out of its dock
            self.teardown()

    def close(self) -> None:
        self.teardown()
        super().close()
