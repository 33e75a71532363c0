"""A small matplotlib figure inside a dock widget (a note instead if matplotlib is missing)."""

from __future__ import annotations

from magicgui.widgets import Container, Label
from qtpy.QtWidgets import QSizePolicy

BACKGROUND = "#262930"  # napari's dark theme
FOREGROUND = "#dddddd"


class PlotCanvas(Container):
    """A magicgui container holding one matplotlib axes (``ax``; None without matplotlib)."""

    def __init__(self, height_px: int = 180, name: str = "plot"):
        super().__init__(name=name, labels=False)
        self.margins = (0, 0, 0, 0)
        self.figure = self.ax = self.canvas = None
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:
            self.append(Label(value="(install matplotlib to see plots here)"))
            return
        self.figure = Figure(figsize=(3.2, height_px / 100), dpi=100, facecolor=BACKGROUND)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height_px)
        self.ax = self.figure.add_subplot(111)
        self.style_axes()
        self.native.layout().addWidget(self.canvas)
        # the plot, not the rows above it, takes the dock's spare height
        self.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def style_axes(self):
        ax = self.ax
        ax.set_facecolor(BACKGROUND)
        for sp in ax.spines.values():
            sp.set_color("#aaaaaa")
        ax.tick_params(colors=FOREGROUND, labelsize=7)
        ax.xaxis.label.set_color(FOREGROUND)
        ax.yaxis.label.set_color(FOREGROUND)
        ax.title.set_color(FOREGROUND)

    def clear(self):
        if self.ax is not None:
            self.ax.clear()
            self.style_axes()

    def note(self, text: str):
        """An empty plot with ``text`` in the middle."""
        if self.ax is not None:
            self.clear()
            self.ax.text(0.5, 0.5, text, ha="center", va="center", color="#aaaaaa", fontsize=8,
                         transform=self.ax.transAxes)
            self.ax.set_xticks([])
            self.ax.set_yticks([])

    def draw(self):
        if self.canvas is not None:
            self.figure.tight_layout(pad=0.4)
            self.canvas.draw_idle()
