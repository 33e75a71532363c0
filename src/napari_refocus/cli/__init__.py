"""The ``napari-refocus`` command line: parse, call the API or :mod:`napari_refocus.io.pipeline`,
report (JSON lines on stdout).

Errors are one line on stderr (``napari-refocus: error: ...``, exit status 2; 1 for an
unexpected internal error) unless ``--debug`` asks for the traceback, and no command ever
writes over one of its input files. The options of ``refocus`` and ``batch`` that set a
method's parameters are generated from the methods' schemas.
"""

from __future__ import annotations

import os
import sys

from .common import PROG, CliError
from .parser import build_parser

__all__ = ["CliError", "build_parser", "main"]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        expected = isinstance(exc, (CliError, ValueError, OSError))
        message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2 if expected else 1
    return 0
