"""The headless demo: the shipped sample pair through LB-DVD, written as four TIFFs, with metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .pipeline import restore_image
from .write import write_image


def demo_headless(outdir, *, device="auto") -> dict:
    """Defocus the shipped in-focus sample, refocus it with LB-DVD, write the ground truth, the
    input, the result and the level map into ``outdir``; returns the metrics and file names."""
    from ..core.metrics import compare
    from .samples import PIXEL_UM, synthetic_pair

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    blurred, gt, _ = synthetic_pair()
    restored = restore_image(blurred, axes="YX", method="lbdvd", device=device)
    result = restored.result
    files = {}
    layers = (("ground_truth", gt, {}), ("defocused", blurred, {}), ("refocused", restored.data, restored.metadata),
              ("level_map", result.defocus_map.levels.astype(np.uint8), {}))
    for name, arr, extra in layers:
        path = outdir / f"sample_{name}.tif"
        write_image(path, arr, pixel_um=PIXEL_UM if name != "level_map" else None, overwrite=True,
                    metadata={"napari_refocus": "demo", "layer": name, **extra})
        files[name] = str(path)
    report = compare(gt, result.image, blurred)
    level, certainty = result.defocus_map.focus_score_and_certainty()
    report.update({"method": "lbdvd (DelpNet defocus map + depth-variant RL)", "seconds": round(result.seconds, 3),
                   "focus_level": level, "focus_certainty": certainty, "files": files})
    return report
