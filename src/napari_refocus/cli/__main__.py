"""``python -m napari_refocus.cli``: the same as the ``napari-refocus`` command."""

import sys

from . import main

sys.exit(main())
