"""Test-time augmentation over the 8 flips/rotations of an image (the dihedral group D4).

Defocus blur has no orientation, so each view is an equally valid input. One helper serves
both DelpNet (a classifier: its outputs are averaged as they are) and the restoration networks
(image to image: each output is mapped back to the input's orientation first).
"""

from __future__ import annotations

#: (quarter turns, mirror) of the 8 views; (0, False) is the input itself
VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral_mean(fn, x, *, equivariant: bool):
    """Mean of ``fn(view)`` over the 8 views of the torch tensor ``x`` (..., H, W).

    ``equivariant=True``: ``fn`` returns an image (..., H', W') in the view's orientation,
    which is undone before averaging (geometric self-ensemble). ``False``: outputs do not
    depend on orientation (e.g. class probabilities) and are averaged directly.
    """
    import torch

    total = 0
    for k, flip in VIEWS:
        v = torch.rot90(x, k, (-2, -1))
        y = fn((v.flip(-1) if flip else v).contiguous())
        if equivariant:
            y = torch.rot90(y.flip(-1) if flip else y, -k, (-2, -1))
        total = total + y
    return total / len(VIEWS)
