"""Every ``python_name`` of the npe2 manifest imports without starting Qt or loading torch.

napari imports these when it discovers the plugin and when a user opens a widget; a
QApplication made at import time, or torch loaded there, would slow down or break every
napari start. Run in a fresh interpreter so that other tests' imports do not hide a problem
(micro-sam's ``test/test_imports.py`` does the same for its plugin).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import importlib, json, sys
from npe2 import PluginManifest
from napari_refocus.core.resources import manifest_path

manifest = PluginManifest.from_file(manifest_path())
names = [cmd.python_name for cmd in manifest.contributions.commands]
for name in names:
    module, obj = name.split(":")
    assert callable(getattr(importlib.import_module(module), obj)), name
from qtpy.QtWidgets import QApplication
print(json.dumps({"names": names, "qapp": QApplication.instance() is not None,
                  "heavy": sorted(m for m in ("torch", "safetensors", "napari_refocus.models") if m in sys.modules)}))
"""


def test_manifest_targets_import_without_qt_or_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["names"]) >= 6 and any(n.startswith("napari_refocus.ui.refocus:") for n in result["names"])
    assert result["qapp"] is False  # importing made no QApplication
    assert result["heavy"] == []  # torch and the networks load when a widget is made, not before
