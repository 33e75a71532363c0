"""Forms generated from the methods' parameter schemas, and the one function that turns form
values into a method's keyword parameters.

* :func:`schema_form` - magicgui widgets for the fields a method shows (``Method.form_fields``),
  built from ``Method.describe()``: type, default, limits, choices, help and unit.
* :func:`optics_form` - the same for :class:`~napari_refocus.core.optics.Optics` (numerical
  fields of the PSF model stay API/CLI-only).
* :class:`Preferences` - the user's preferences (device, RL iterations), a magicgui
  ``FunctionGui`` with ``persist=True`` (kept as JSON, not pickle) and a way back to defaults.
* :func:`method_kwargs` - form values -> the method's keywords: only names its schema
  accepts, so provenance holds only parameters the method used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from magicgui.widgets import Container, FunctionGui, create_widget

from .style import section

#: user preferences shared by every method and widget; persisted between sessions
PREFERENCES = ("device", "iterations")
#: Optics fields left to the API and the CLI (PSF numerics, the level count DelpNet was trained
#: on); fields that are not a number, a flag or a word (a defocus table) are left out too
OPTICS_HIDDEN = ("n_levels", "psf_size", "oversample")
#: Optics fields without a value by default (None: decided from the others), shown as text: empty = none
OPTICS_OPTIONAL = ("map_pixel_um",)
#: presentation of Optics fields whose dataclass field carries no help/limits of its own
_OPTICS_HINTS = {
    "wavelength_nm": {"label": "wavelength (nm)", "help": "emission wavelength", "min": 200.0, "max": 1200.0,
                      "step": 1.0},
    "na": {"label": "numerical aperture", "help": "objective NA (< refractive index)", "min": 0.01, "max": 1.7,
           "step": 0.01},
    "refractive_index": {"label": "refractive index", "help": "immersion medium", "min": 1.0, "max": 1.7,
                         "step": 0.001},
    "pixel_um": {"label": "pixel size (µm)", "help": "pixel size in the sample (from the layer's scale "
                 "when it looks like micrometres)", "min": 0.0001, "max": 100.0, "step": 0.0001},
    "level_step_um": {"label": "µm per defocus level", "help": "defocus between two levels", "min": 0.01,
                      "max": 100.0, "step": 0.01},
    "psf_model": {"label": "PSF model", "help": "paraxial: LB-DVD eq. 2 as printed (right in air); "
                  "exact: any immersion"},
    "map_pixel_um": {"label": "map pixel (µm)", "help": "pixel size at which the defocus map reads the image; "
                     "empty: matched to DelpNet's training sampling in lambda/NA; 0.65: cultured cells at "
                     "40x-100x, at the physical size of DelpNet's training images; auto: each image read both "
                     "ways, the reading DelpNet is surer of kept"},
}
#: shorter or clearer labels than a schema field's name, for the form only
FIELD_LABELS = {"tta": "augment (8 flips/rotations)"}
_INT_LIMIT = 2**31 - 1


def field_widget(spec: Mapping):
    """A magicgui widget for one field described like ``Method.describe()`` entries."""
    name, default = spec["name"], spec["default"]
    unit = spec.get("unit") or ""
    label = spec.get("label") or FIELD_LABELS.get(name) or name.replace("_", " ") + (f" ({unit})" if unit else "")
    options = {"tooltip": spec.get("help") or ""}
    annotation = spec.get("type") or type(default)
    if spec.get("choices"):
        options["choices"] = list(spec["choices"])
        options["widget_type"] = "ComboBox"
    elif annotation in (int, float) and not isinstance(default, bool):
        lo, hi = spec.get("min"), spec.get("max")
        options["min"] = lo if lo is not None else -_INT_LIMIT
        options["max"] = hi if hi is not None else _INT_LIMIT
        if spec.get("step"):
            options["step"] = spec["step"]
    if default is None:  # optional text (e.g. a weights file): empty = the default
        default, annotation = "", str
    return create_widget(value=default, annotation=annotation, name=name, label=label, options=options)


def schema_form(specs, names, *, name: str) -> Container:
    """A labelled form of the fields ``names`` (in that order) of ``specs``."""
    by_name = {s["name"]: s for s in specs}
    return section(name, [field_widget(by_name[n]) for n in names if n in by_name])


def optics_specs() -> list[dict]:
    """``describe()`` entries of the user-facing :class:`Optics` fields (hints fill gaps)."""
    from ..core import optics
    from ..methods.params import describe

    out = []
    for spec in describe(optics.Optics):
        shown = isinstance(spec["default"], (bool, int, float, str)) or spec["name"] in OPTICS_OPTIONAL
        if spec["name"] in OPTICS_HIDDEN or not shown:
            continue  # numerics, and derived values such as a per-level defocus table
        hint = dict(_OPTICS_HINTS.get(spec["name"], {}))
        if spec["name"] == "psf_model" and getattr(optics, "PSF_MODELS", None):
            hint["choices"] = optics.PSF_MODELS
        out.append({**spec, **{k: v for k, v in hint.items() if spec.get(k) is None}})
    return out


def optics_form() -> Container:
    specs = optics_specs()
    return schema_form(specs, [s["name"] for s in specs], name="optics")


def form_values(*forms) -> dict:
    """``{name: value}`` of every value widget of the given forms (empty text -> None)."""
    out = {}
    for form in forms:
        for w in form:
            if hasattr(w, "value") and not isinstance(w, Container):
                out[w.name] = None if w.value == "" else w.value
    return out


def set_defaults(form: Container, specs) -> None:
    """Put the schema's defaults back into ``form``."""
    for spec in specs:
        w = form.get_widget(spec["name"])
        if w is not None:
            w.value = "" if spec["default"] is None else spec["default"]


def align_labels(*forms) -> None:
    """One label column width for several labelled forms stacked in one dock."""
    from magicgui.application import use_app

    measure = use_app().get_obj("get_text_width")
    labelled = [w for form in forms for w in form if w._labeled_widget() is not None]
    if labelled:
        width = max(measure(w.label) for w in labelled)
        for w in labelled:
            w._labeled_widget().label_width = width


def method_kwargs(method, values: Mapping) -> dict:
    """The keyword parameters of ``method`` in the widget's form ``values``.

    Only names the method's schema accepts (``method.accepts``): the RL iterations never
    reach a learned method (its optics do: with NA and wavelength it runs at its training
    sampling), and provenance records only what the method took.
    """
    return {k: v for k, v in values.items() if method.accepts(k)}


# ------------------------------------------------------------------------------ preferences
def _preferences(device: str = "auto", iterations: int = 15):
    """The user's preferences (persisted between sessions; reset with ``reset``)."""


class Preferences(FunctionGui):
    """The user's preferences: the device and the Richardson-Lucy iterations.

    A magicgui ``FunctionGui`` with ``persist=True``: every change is saved and the next
    widget starts from it. The state is a JSON file next to magicgui's own (magicgui
    pickles; nothing here is ever unpickled). :meth:`reset` restores the defaults.
    """

    def __init__(self, devices, iterations_spec: Mapping | None = None):
        spec = iterations_spec or {"default": 15, "min": 1, "max": 500, "help": "Richardson-Lucy iterations"}
        self.defaults = dict(zip(PREFERENCES, ("auto", int(spec["default"]))))
        super().__init__(_preferences, persist=True, call_button=False, name="preferences", labels=True,
                         param_options={
                             "device": {"widget_type": "ComboBox", "choices": ["auto", *devices],
                                        "tooltip": "auto = the first GPU if there is one, else the CPU"},
                             "iterations": {"value": self.defaults["iterations"], "min": spec["min"],
                                            "max": spec["max"], "tooltip": spec["help"]},
                         })
        self.margins = (0, 0, 0, 0)

    @property
    def _dump_path(self) -> Path:
        return Path(f"{super()._dump_path}.json")

    def _dump(self, path=None) -> None:
        path = Path(path or self._dump_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({name: self[name].value for name in self.defaults}))

    def _load(self, path=None, quiet: bool = False) -> None:
        try:
            saved = json.loads(Path(path or self._dump_path).read_text())
        except (OSError, ValueError):
            return  # nothing saved yet, or an unreadable file: the defaults stay
        for name in self.defaults:
            with suppress(ValueError, TypeError, KeyError):  # e.g. a GPU that is not here today
                self[name].value = saved[name]

    def reset(self) -> None:
        """Back to the defaults (saved like any change when ``persist`` is on)."""
        for name, value in self.defaults.items():
            self[name].value = value


def device_status(device: str, devices) -> tuple[str, str]:
    """(text, style) saying whether ``device`` ("auto" or a name) runs on a GPU."""
    from .style import OK_STYLE, WARN_STYLE

    d = devices[0] if device == "auto" else device
    if d.startswith("cuda"):
        return "● GPU (CUDA)", OK_STYLE
    if d == "mps":
        return "● GPU (Apple MPS)", OK_STYLE
    gpu = any(x != "cpu" for x in devices)
    return "● CPU" + ("" if gpu else " (no GPU found)"), WARN_STYLE
