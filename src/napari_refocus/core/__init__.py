"""The bottom layer: physics and numerics with no knowledge of methods, models or the viewer.

optics (PSF models), otf (cached transfer functions), forward (simulate), rl (Richardson-Lucy),
tiling, planes (the nD/RGB driver), devices, torchstate (settings restored after use),
validation, progress, metrics, tta, resources. Nothing here imports the layers above, and
importing this package loads no submodule.
"""
