"""Files in and out: reading (:mod:`.read`), writing (:mod:`.write`), the one
read -> run -> cast -> write pipeline (:mod:`.pipeline`) shared by the command line, batch
and the headless demo, batch runs on dask (:mod:`.batch`) and the shipped samples
(:mod:`.samples`).

Importing this package loads numpy only; tifffile, torch and the methods are imported by the
functions that need them.
"""

from __future__ import annotations

from .read import open_image, read_image, read_info
from .write import atomic_output, check_not_input, refocus_to_tiff, write_image

__all__ = ["atomic_output", "check_not_input", "open_image", "read_image", "read_info",
           "refocus_to_tiff", "write_image"]
