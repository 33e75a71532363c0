"""Neural networks of napari-refocus: the torch modules, ONE architecture registry
(:mod:`.registry`), ONE weights loader and cache (:mod:`.loader`) and tiled inference
(:mod:`.predict`). Importing this package loads no submodule (and so not torch): the CLI's
``--help`` and napari's plugin discovery stay fast.
"""

__all__ = ["DelpNet", "PAPER_WIDTH", "SHIPPED_WIDTH"]


def __getattr__(name):
    if name in __all__:
        from . import delpnet

        return getattr(delpnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
