"""The Defocus map dock widget: DelpNet's per-patch defocus levels as an overlay on the image.

Its map options (stride, test-time augmentation) are generated from the ``lbdvd`` schema,
the device and RL iterations are the shared persisted preferences, the optics (and where each
value came from) are an :class:`~.optics_panel.OpticsPanel`. The map is made for those optics:
its cells are ``stride x DefocusMap.scale`` image pixels wide, and the legend, hover text and
histogram give each class's defocus in um for that objective.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, Label

from .base import ViewerWidget
from .forms import Preferences, align_labels, form_values, method_kwargs, schema_form
from .jobs import JobPanel
from .layers import displayed_plane_index, layer_data, placed_like, read_plane
from .optics_panel import OpticsPanel
from .overlay import (
    BASE_OPACITY,
    beyond_range_um,
    legend_html,
    level_counts,
    map_transform,
    overlay_colors,
    overlay_features,
    plot_histogram,
    summary_text,
)
from .plots import PlotCanvas
from .refocus import iterations_spec, start_refocus
from .style import ERR_STYLE, info_label, section, show

#: the lbdvd fields that shape a defocus map
MAP_FIELDS = ("stride", "tta")


def overlay_colormap(dm, use_certainty: bool):
    """napari's label colormap of the overlay of ``dm`` (:func:`.overlay.overlay_colors`); no Qt,
    so a worker can make it."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=overlay_colors(dm, use_certainty))


def _is_source_image(layer) -> bool:
    return "defocus_map" not in layer.metadata


class DefocusMapWidget(ViewerWidget):
    """Compute a DelpNet defocus map of the chosen image and show it over the image.

    :meth:`run` starts the map (returns the worker), :meth:`refocus_with_map` runs LB-DVD
    with that map (no recomputation), :meth:`cancel` stops either; :attr:`map_layer` is the
    overlay (a Labels layer, one label per patch, coloured by level, with level/certainty
    shown on hover) and its ``metadata["defocus_map"]`` is the :class:`DefocusMap`.
    """

    def __init__(self, napari_viewer):
        from ..core.devices import available_devices
        from ..methods import get_method

        super().__init__(napari_viewer, labels=False, name="defocus_map")
        self.lbdvd = get_method("lbdvd")
        self.map_layer = None
        self.last_layer = None
        self._map_source = None
        self._map_index: tuple = ()
        self._map_params: dict = {}
        self._map_optics: tuple[dict, dict] = ({}, {})  # (values, sources) the map was made with
        self.weights_note = info_label("weights_note")
        self.image = self.layer_chooser("image", "image", accept=_is_source_image)
        self.prefs = Preferences(available_devices(), iterations_spec([self.lbdvd]))
        self.map_form = schema_form(self.lbdvd.describe(), MAP_FIELDS, name="map_form")
        self.optics_panel = OpticsPanel()
        self.use_certainty = CheckBox(name="use_certainty", text="certainty as opacity", value=False)
        self.use_certainty.tooltip = "draw uncertain patches more transparent"
        self.panel = JobPanel("Compute defocus map", self.run, what="defocus map")
        self.hist = PlotCanvas(150, name="hist")
        self.hist.note("no defocus map yet")
        self.summary = info_label("summary")
        self.refocus_panel = JobPanel("Refocus with this map", self.refocus_with_map, what="refocus (LB-DVD)",
                                      name="refocus_panel")
        self.refocus_panel.button.enabled = False
        self.legend = Label(name="legend", value=legend_html())
        self.extend([
            self.weights_note, section("source", [self.image]), self.prefs, self.map_form, self.optics_panel,
            self.use_certainty, self.panel,
            Label(name="legend_title", value="<b>Defocus level</b>: µm for the map's optics (hover the overlay "
                                             "for level, defocus and certainty)"),
            self.legend, self.hist, self.summary, self.refocus_panel,
        ])
        align_labels(self["source"], self.prefs, self.map_form, self.optics_panel.form)
        self.use_certainty.changed.connect(self._recolor)
        self.image.changed.connect(self._layer_changed)
        self._layer_changed()
        self._check_weights()

    def _check_weights(self) -> bool:
        ok = self.lbdvd.weights_present()
        show(self.weights_note, "" if ok else (
            "DelpNet weights are not installed (weights/delpnet.safetensors): the defocus map and LB-DVD "
            "cannot run yet. Use Refocus with Richardson-Lucy meanwhile."), ERR_STYLE)
        self.weights_note.visible = not ok
        return ok

    @property
    def worker(self):
        return self.panel.worker or self.refocus_panel.worker

    def _layer_changed(self, *_):
        self.optics_panel.set_layer(self.image.value)

    def cancel(self):
        self.panel.cancel()
        self.refocus_panel.cancel()

    # -------------------------------------------------------------- map
    def run(self, layer=None):
        """Compute the defocus map of ``layer`` (default: the chosen one); returns the worker."""
        self._check_weights()
        layer = layer if layer is not None else self.image.value
        if layer is None:
            from napari.utils.notifications import show_warning

            show_warning("napari-refocus: choose an image layer first")
            return None
        index = displayed_plane_index(self.viewer, layer)
        data, rgb = layer_data(layer), bool(layer.rgb)
        params = form_values(self.map_form)
        device = self.prefs.device.value
        try:
            optics = self.optics_panel.optics()
        except ValueError as exc:
            self.panel.fail(exc)
            return None
        used = (self.optics_panel.values(), self.optics_panel.sources())
        use_certainty = self.use_certainty.value

        def job():
            from ..methods import defocus

            plane = read_plane(data, index, rgb)  # in the worker, not on the GUI thread
            dm = yield from defocus.iter_defocus_map(plane, device=device, optics=optics, **params)
            # one colour and one table row per patch (~9,500 on 4096x4096; napari's colormap checks every
            # colour): made here, not on the GUI thread (measured 0.4-1 s there, benchmarks/widget_stall.py)
            return dm, overlay_colormap(dm, use_certainty), overlay_features(dm)

        def done(value):
            dm, cmap, features = value
            self._map_params, self._map_optics = params, used
            self._show_map(layer, dm, index, cmap=cmap if use_certainty == self.use_certainty.value else None,
                           features=features)

        return self.panel.start(job, done, label=f"defocus map of {layer.name}")

    def _show_map(self, source, dm, index, *, cmap=None, features=None):
        """Add (or update) the overlay of ``dm``; ``cmap``/``features``: :func:`overlay_colormap`
        and :func:`.overlay.overlay_features` of it, when the worker made them."""

        levels = np.asarray(dm.levels)
        rows, cols = levels.shape
        ids = (np.arange(rows * cols, dtype=np.int32) + 1).reshape(rows, cols)
        scale, translate = map_transform(dm, source.scale, source.translate)
        # over a 2-D source placed with rotate, shear or affine, the map is placed the same way
        place = placed_like(source, scale, translate) if source.ndim == 2 else {"scale": scale, "translate": translate}
        units = tuple(str(u) for u in getattr(source, "units", None) or ())[-2:] or None  # the image's, not 'pixel'
        meta = {"defocus_map": dm, "source_layer": source.name, "source_plane": list(index),
                "grid": dm.grid.as_dict(), "scale": dm.scale, "class_defocus_um": [float(z) for z in dm.defocus_um],
                "levels": levels.tolist(), "optics": self._map_optics[0], "optics_source": self._map_optics[1],
                "beyond_top": dm.coarse.provenance() if dm.coarse is not None else None,
                "map_choice": dm.choice or None}
        cmap = cmap if cmap is not None else overlay_colormap(dm, self.use_certainty.value)
        features = features if features is not None else overlay_features(dm)
        ly = self.map_layer
        if ly is not None and ly in self.viewer.layers and ly.metadata.get("source_layer") == source.name:
            ly.data = ids
            for key, value in place.items():
                setattr(ly, key, value)
            ly.units = units
            ly.metadata = meta
            ly.features = features
            ly.colormap = cmap
        else:
            ly = self.viewer.add_labels(ids, name=f"{source.name} defocus map", **place, units=units, metadata=meta,
                                        features=features, colormap=cmap, opacity=BASE_OPACITY,
                                        blending="translucent")
            ly.editable = False
        self.map_layer = ly
        self._map_source = source
        self._map_index = index
        plot_histogram(self.hist, dm)
        self.legend.value = legend_html(dm.defocus_um, beyond=beyond_range_um(dm))
        self.summary.value = summary_text(dm)
        self.refocus_panel.button.enabled = True
        self.viewer.layers.selection.active = ly

    def _recolor(self, *_):
        ly = self.map_layer
        if ly is not None and ly in self.viewer.layers:
            ly.colormap = overlay_colormap(ly.metadata["defocus_map"], self.use_certainty.value)

    def histogram_counts(self) -> np.ndarray:
        """Patches per level 0..10 and background of the shown map (for tests)."""
        return level_counts(self.map_layer.metadata["defocus_map"])

    # -------------------------------------------------------------- refocus with the map
    def refocus_with_map(self):
        """LB-DVD on the map's source plane with this map (DelpNet is not run again)."""
        from napari.utils.notifications import show_warning

        ly, source = self.map_layer, self._map_source
        if ly is None or ly not in self.viewer.layers:
            show_warning("napari-refocus: compute a defocus map first")
            return None
        if source is None or source not in self.viewer.layers:
            show_warning("napari-refocus: the map's image layer is gone")
            return None
        values = {**self._map_params, **form_values(self.prefs), **self._map_optics[0]}  # the map's optics
        extra = {"defocus_map_layer": ly.name, "optics_source": self._map_optics[1]}
        if self._map_index:
            extra["source_plane"] = list(self._map_index)
        plane = self._map_index if (self._map_index or source.rgb) else None
        return start_refocus(self.viewer, self.refocus_panel, source, method="lbdvd", device=self.prefs.device.value,
                             params=method_kwargs(self.lbdvd, values), inputs={"defocus_map": ly.metadata["defocus_map"]},
                             plane=plane, owner=self, extra_meta=extra)
