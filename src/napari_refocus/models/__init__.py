"""Neural networks of napari-refocus (torch modules; imported lazily)."""

from .delpnet import DelpNet, PAPER_WIDTH, SHIPPED_WIDTH

__all__ = ["DelpNet", "PAPER_WIDTH", "SHIPPED_WIDTH"]
