"""Files in and out: reading (:mod:`.read`), writing (:mod:`.write`), the one
read -> run -> cast -> write pipeline (:mod:`.pipeline`) shared by the command line, batch
and the headless demo, batch runs on dask (:mod:`.batch`), OME-Zarr stores (:mod:`.zarr`, :mod:`.zarr_write`),
formats read through bioio (:mod:`.bioio_reader`) and the shipped samples (:mod:`.samples`).

Importing this package loads numpy only; tifffile, torch and the methods are imported by the
functions that need them.
"""

from __future__ import annotations

from .read import open_image, read_image, read_info
from .write import atomic_output, check_not_input, refocus_to_tiff, write_image
from .zarr import open_ome_zarr, read_ome_zarr, read_ome_zarr_info
from .zarr_write import refocus_to_ome_zarr, write_ome_zarr

__all__ = ["atomic_output", "check_not_input", "open_image", "open_ome_zarr", "read_image", "read_info",
           "read_ome_zarr", "read_ome_zarr_info", "refocus_to_ome_zarr", "refocus_to_tiff", "write_image",
           "write_ome_zarr"]
