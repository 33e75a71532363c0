"""``napari-refocus export-bioimageio``: a network as a bioimage.io model package (format 0.5)."""

from __future__ import annotations

from ..io.bioimageio import EXPORTABLE  # numpy only: bioimageio and torch load in the command
from .common import _emit


def cmd_export_bioimageio(args) -> None:
    from ..io.bioimageio import export_bioimageio

    _emit(export_bioimageio(args.method, args.output, overwrite=args.overwrite))


def add_export_command(command, overwrite) -> None:
    """Add ``export-bioimageio`` with ``build_parser``'s ``command`` helper and its ``--overwrite`` parent."""
    e = command("export-bioimageio", cmd_export_bioimageio,
                "write a network as a bioimage.io model package (format 0.5: TorchScript, test tensors "
                "made by the plugin, model card); needs napari-refocus[bioimageio]", overwrite)
    e.add_argument("method", choices=EXPORTABLE, help="the network: a learned method or delpnet")
    e.add_argument("-o", "--output", required=True,
                   help="package folder (open its rdf.yaml in bioimage.io tools), or a .zip file")
