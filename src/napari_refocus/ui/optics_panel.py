"""The optics a widget runs with, and where each value came from.

:class:`OpticsPanel` is a part of the Refocus and Defocus map widgets: a summary line with
every value and its source, a check box that shows the form, "Load optics..." (a JSON optics
file, :func:`napari_refocus.io.optics.load_optics_file`) and the form generated from
:class:`~napari_refocus.core.optics.Optics`. As on the command line, each field takes the first
of: what the user typed ("you"), a loaded optics file, the layer (its scale in length units,
its metadata, its scale taken as micrometres: :func:`.layers.layer_optics`), the default.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from pathlib import Path

from magicgui.widgets import CheckBox, Container, PushButton

from .forms import OPTICS_OPTIONAL, optics_form, optics_specs
from .layers import layer_optics
from .style import ERR_STYLE, info_label, show

DEFAULT = "default"
#: short names of the fields in the summary line, with their units
_SHORT = {"na": ("NA", ""), "refractive_index": ("n", ""), "wavelength_nm": ("λ", " nm"),
          "pixel_um": ("pixel", " µm"), "level_step_um": ("level step", " µm"), "psf_model": ("PSF", ""),
          "map_pixel_um": ("map pixel", " µm")}


class OpticsPanel(Container):
    """Summary, form and "Load optics..." of the optics (see the module docstring).

    :meth:`values` and :meth:`sources` are the optics now (every form field, plus fields an
    optics file or the layer set that the form does not show) and where each came from;
    :meth:`optics` builds them (a ValueError names the sources of a bad combination).
    """

    def __init__(self, name: str = "optics_panel"):
        super().__init__(name=name, labels=False)
        self.margins = (0, 0, 0, 0)
        self.summary = info_label("optics_summary")
        self.show = CheckBox(name="show_optics", text="optics (microscope)", value=False)
        self.load_button = PushButton(name="load_optics", text="Load optics…")
        self.load_button.tooltip = ("fill the optics from a JSON file saved for a microscope: "
                                    '{"na": 1.4, "refractive_index": 1.515, ...} or {"optics": {...}}')
        row = Container(name="optics_row", layout="horizontal", labels=False, widgets=[self.show, self.load_button])
        row.margins = (0, 0, 0, 0)
        self.form = optics_form()
        self.form.visible = False
        self.extend([self.summary, row, self.form])
        self._defaults = {s["name"]: s["default"] for s in optics_specs()}
        self._user: dict = {}
        self._file: dict = {}
        self._file_source = "optics file"
        self._layer: list = []
        self._values: dict = {}
        self._sources: dict = {}
        self._filling = False
        for w in self.form:
            w.changed.connect(partial(self._edited, w.name))
        self.show.changed.connect(self._show_form)
        self.load_button.changed.connect(self._ask_file)
        self.refresh()

    # -------------------------------------------------------------- state
    def values(self) -> dict:
        return dict(self._values)

    def sources(self) -> dict:
        return dict(self._sources)

    def optics(self):
        """The :class:`Optics` of :meth:`values` (ValueError naming the values' sources)."""
        from ..io.optics import build_optics

        return build_optics(self._values, self._sources, default=DEFAULT)

    # -------------------------------------------------------------- inputs
    def set_layer(self, layer) -> None:
        """Take what ``layer`` (None: no layer) says about its optics."""
        self._layer = layer_optics(layer) if layer is not None else []
        self.refresh()

    def load_file(self, path) -> dict:
        """Fill the form from a JSON optics file (it overrides earlier edits of the fields it
        sets; a bad file is a ValueError and changes nothing). Returns the values read."""
        from ..io.optics import load_optics_file

        values = load_optics_file(path)
        self._file, self._file_source = values, f"optics file {Path(path).name}{_calibration_note(path)}"
        for name in values:
            self._user.pop(name, None)
        self.refresh()
        return values

    def reset(self) -> None:
        """Forget the user's edits and the optics file: the layer's values and the defaults."""
        self._user.clear()
        self._file = {}
        self.refresh()

    def _edited(self, name, value=None, *_):
        if not self._filling:
            value = self.form[name].value
            if name in OPTICS_OPTIONAL:  # text: empty = none (the next source, or the default None)
                value = _optional_number(value, name)
            if value is None:
                self._user.pop(name, None)
            else:
                self._user[name] = value
            self.refresh()

    def _show_form(self, *_):
        self.form.visible = bool(self.show.value)

    def _ask_file(self, *_):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Load optics", "", "Optics (*.json);;All files (*)")
        if path:
            try:
                self.load_file(path)
            except ValueError as exc:
                from napari.utils.notifications import show_error

                show_error(f"napari-refocus: {exc}")

    # -------------------------------------------------------------- display
    def refresh(self) -> None:
        """Merge the sources into the form and the summary line."""
        from ..io.optics import merge_optics

        values, sources = merge_optics(("you", self._user), (self._file_source, self._file), *self._layer)
        for name, default in self._defaults.items():
            if name not in values and default is not None:
                values[name], sources[name] = default, DEFAULT
        self._values, self._sources = values, sources
        self._filling = True
        try:
            for w in self.form:
                if w.name in values and w.value != values[w.name]:
                    with suppress(ValueError, TypeError):  # beyond the widget's limits: the summary says
                        w.value = values[w.name]
                elif w.name in OPTICS_OPTIONAL and w.name not in values:
                    w.value = ""  # none given: empty, not the text "None"
        finally:
            self._filling = False
        try:
            self.optics()
        except ValueError as exc:
            show(self.summary, f"{self.summary_text()}\n{exc}", ERR_STYLE)
        else:
            show(self.summary, self.summary_text())

    def summary_text(self) -> str:
        """One line per source: the values it gave (e.g. ``layer scale: pixel 0.65 µm``)."""
        by_source: dict[str, list[str]] = {}
        for name, value in self._values.items():
            short, unit = _SHORT.get(name, (name, ""))
            text = f"{value:g}" if isinstance(value, float) else str(value)
            by_source.setdefault(self._sources[name], []).append(f"{short} {text}{unit}")
        order = sorted(by_source, key=lambda s: s == DEFAULT)  # defaults last
        return "\n".join(f"{src}: {', '.join(by_source[src])}" for src in order)


def _optional_number(text, name: str):
    """An optional number typed as text: None when empty, else a float or one of the option's words
    ("auto"), or the text itself, which building the optics then rejects in one line."""
    from ..core.validation import number_or_word

    return number_or_word(name, text) if str(text).strip() else None


def _calibration_note(path) -> str:
    """`` (calibration: good, residual 0.012)`` for a file written by ``calibrate``, else ``""``."""
    import json

    try:
        rec = json.loads(Path(path).read_text())
        return f" (calibration: {rec['quality']}, residual {float(rec['residual']):.3f})"
    except (OSError, ValueError, TypeError, KeyError):
        return ""
