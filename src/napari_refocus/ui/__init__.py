"""napari dock widgets of napari-refocus (Qt lives only in this sub-package).

``RefocusWidget`` restores an image layer, ``DefocusMapWidget`` shows DelpNet's defocus
map as an overlay, ``CompareWidget`` measures PSNR/SSIM/PCC against a ground truth.
"""

from .compare import CompareWidget
from .defocus_map import DefocusMapWidget
from .refocus import RefocusWidget

__all__ = ["RefocusWidget", "DefocusMapWidget", "CompareWidget"]
