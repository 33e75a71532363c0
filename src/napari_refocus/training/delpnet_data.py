"""Synthetic DelpNet patches: real in-focus images blurred with the Born-Wolf PSF of each level.

Protocol (LB-DVD 2.1, plus robustness augmentation):

1. Each source image is normalised to ``(img - p1) / (p99.9 - p1)`` and blurred ONCE with all
   11 PSFs (batched torch FFT, reflect padding of 37 px); the 11 blurred copies are cached.
2. A patch = a random 84x84 crop of one level's copy, turned into 16-bit camera counts:
   ``counts = Poisson(gain * (amp * crop + autofluo)) / gain + offset + N(0, read_sigma)``,
   rounded and clipped to 0..65535, with random ``amp`` (300..6000 counts, log-uniform),
   ``offset`` (80..600; BBBC006 camera offsets are ~100-140), ``gain`` (0.5..4 photons per
   count: a range of shot-noise levels), read noise 0.5..5 counts, random flips / rot90.
3. Label: "bg" (11) when the patch's ``max < 230`` and ``max - min < 30`` counts (the paper's
   rule, applied to every patch), else the blur level. Patches that are neither "bg" nor
   carry any structure (noise-free ``amp * crop`` spanning < 30 counts: e.g. an empty
   region under a high camera offset, whose level cannot be known) are dropped and re-drawn.
4. About 1/12 of the patches are drawn as background candidates: offsets 60..215, a faint
   (0..15 counts) blurred structure and low noise, then labelled by the same rule.
5. Network input: counts / 65535.

Other objectives (issue "any objective"): with ``objectives`` the patches are drawn from several
objectives (:data:`TRAIN_OBJECTIVES`). Each source image is blurred by that objective's exact PSF
at the defocus whose blur matches each class (:func:`~napari_refocus.core.matching.match_defocus_um`,
as the map reports it), drawn on the reference's sampling in lambda / NA (where the map sees every
image), so DelpNet learns the classes as blur in lambda / NA rather than the ring pattern of one
objective.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.matching import matched_optics
from ..core.optics import BACKGROUND, Optics

PATCH = 84
BG_MAX = 230
BG_RANGE = 30

#: a mixture of objectives (``train_delpnet(objectives=TRAIN_OBJECTIVES)``; ``delpnet``'s recipe is the
#: reference alone; ``delpnet-objectives`` uses this mixture with each class where ``delpnet`` reads
#: it, ``--objectives``): the reference (the paper's 20x/0.5
#: air) and five others chosen NOT to be the objectives the benchmark evaluates (20x/0.75 air,
#: 40x/0.95 air, 60x/1.4 oil), from 10x/0.3 to 100x/1.45, with each one's share of the patches.
#: Runs from scratch or with encircled-energy classes were not shipped: BENCHMARKS.md "DelpNet on
#: the exact PSF and other objectives: retraining attempts" and "Tried, not shipped (stop 27)"
TRAIN_OBJECTIVES = (
    ({}, 0.5),
    ({"na": 0.3, "wavelength_nm": 520.0, "pixel_um": 0.65}, 0.1),
    ({"na": 0.8, "wavelength_nm": 520.0, "pixel_um": 0.325}, 0.1),
    ({"na": 1.3, "refractive_index": 1.515, "wavelength_nm": 520.0, "pixel_um": 0.1625}, 0.1),
    ({"na": 1.2, "refractive_index": 1.333, "wavelength_nm": 600.0, "pixel_um": 0.108}, 0.1),
    ({"na": 1.45, "refractive_index": 1.515, "wavelength_nm": 520.0, "pixel_um": 0.065}, 0.1),
)
#: the object-scale mixture (``train_delpnet(object_scales=OBJECT_SCALES)``, ``--object-scales``;
#: part of the recipe of ``weights/delpnet-objectives``): each
#: source also shrunk to 1/1.5, 1/2 and 1/2.5 of its size before the reference's blur, with each
#: scale's share of the patches. The blur stays the reference's, in the same pixels, so the labels
#: are unchanged; only the objects get smaller, as a high-NA image's cells are in the map's
#: lambda/NA pixels (BENCHMARKS.md "Other objectives: the objects' size in the map's pixels")
OBJECT_SCALES = ((1.0, 0.4), (1 / 1.5, 0.2), (1 / 2.0, 0.2), (1 / 2.5, 0.2))
#: shot noise of the shipped recipe, photons per count (log-uniform)
SHIPPED_GAIN_RANGE = (0.5, 4.0)
#: shot noise for the experimental recipe: down to 0.2 so that a dim exposure (a quarter of
#: BBBC006's counts) is inside the training range
GAIN_RANGE = (0.2, 4.0)


def shrunk_shape(img, factor: float) -> tuple[int, int]:
    """The shape of :func:`shrunk` ``(img, factor)``."""
    from ..core.resample import resized_shape

    return resized_shape(np.shape(img), factor)


def shrunk(img, factor: float) -> np.ndarray:
    """``img`` resampled to ``factor`` of its size (anti-aliased; itself when factor is 1)."""
    from ..core.resample import resample

    img = np.asarray(img, dtype=np.float32)
    return img if factor == 1.0 else resample(img, shape=shrunk_shape(img, factor))


def normalise_source(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(img, [1.0, 99.9])
    return ((img - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def blur_levels(img: np.ndarray, optics: Optics) -> torch.Tensor:
    """(n_levels, H, W) float32: the image blurred by every level's PSF (FFT, reflect pad)."""
    from ..core.otf import fft_size, otf_bank

    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    h, w = t.shape
    m = optics.psf_size
    padded = F.pad(t[None, None], (m, m, m, m), mode="reflect")[0, 0]
    ph, pw = padded.shape
    shape = (fft_size(ph), fft_size(pw))
    spec = torch.fft.rfft2(F.pad(padded, (0, shape[1] - pw, 0, shape[0] - ph)))
    otfs = otf_bank(optics, shape, "cpu")
    out = torch.empty(optics.n_levels, h, w)
    for lv in range(optics.n_levels):
        out[lv] = torch.fft.irfft2(spec * otfs[lv], s=shape)[m : m + h, m : m + w]
    return out


def blur_levels_for(img: np.ndarray, reference: Optics, objective: Optics | None) -> torch.Tensor:
    """(n_levels, h, w) float32: ``img`` (on the reference's sampling) blurred by ``objective``'s
    PSF at each class's matched defocus (None: by the reference's own levels)."""
    if objective is None:
        return blur_levels(img, reference)
    # the classes as given (``defocus_table_um``: e.g. where the map's DelpNet reads each class
    # on this objective, so that every objective's patch of class L is what the network calls L),
    # else matched by encircled energy
    scale, matched = matched_optics(reference, objective, table=objective.defocus_table_um)
    # the objective's PSF drawn on the reference's pixel grid (its pixel, in this objective's
    # um, is as many lambda/NA as the reference's): the source keeps its size and its own
    # residual blur, as in the reference's patches, so only the PSF differs between objectives
    # (shrinking the source instead made the far-resampled objectives' classes look less
    # blurred than the reference's: a first run learned a compromise 1 class off)
    canvas = dataclasses.replace(matched, pixel_um=objective.pixel_um * scale, psf_size=reference.psf_size)
    return blur_levels(img, canvas)


def bg_rule(counts: torch.Tensor) -> torch.Tensor:
    """(N, H, W) counts -> (N,) bool: the paper's background rule."""
    mx = counts.amax(dim=(-2, -1))
    mn = counts.amin(dim=(-2, -1))
    return (mx < BG_MAX) & ((mx - mn) < BG_RANGE)


def _uniform(n, lo, hi, gen):
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _loguniform(n, lo, hi, gen):
    return torch.exp(_uniform(n, math.log(lo), math.log(hi), gen))


class PatchSynth:
    """Draws labelled synthetic patches from a list of in-focus source images."""

    def __init__(self, images, optics: Optics | None = None, weights=None, *, paper_protocol: bool = False,
                 objectives=None, gain_range=SHIPPED_GAIN_RANGE, object_scales=None):
        """``objectives``: ``((optics overrides, share), ...)`` to draw patches from several
        objectives (:data:`TRAIN_OBJECTIVES`; an empty dict is ``optics`` itself); None: only
        ``optics``. ``gain_range``: shot noise, photons per count (log-uniform).
        ``object_scales``: ``((size factor, share), ...)`` (:data:`OBJECT_SCALES`): each source
        also resampled (anti-aliased) to that factor of its size before the blur; None: as it is.

        ``paper_protocol=True``: no augmentation at all - the crop of the blurred RAW image
        (its own counts, offset and brightness) with Poisson noise at 1 photon per count and
        no flips, as in LB-DVD 2.1; used for a paper-comparable test set."""
        self.optics = optics or Optics()
        self.n_levels = self.optics.n_levels
        self.paper = bool(paper_protocol)
        prep = (lambda im: np.asarray(im, np.float32)) if self.paper else normalise_source
        self.gain_range = tuple(float(g) for g in gain_range)
        # normalised once, at the end: with one objective the weights are exactly those of
        # the recipe the shipped weights were trained with
        w_src = np.ones(len(images)) if weights is None else np.asarray(weights, float)
        mix = [({}, 1.0)] if objectives is None else list(objectives)
        scales = [(1.0, 1.0)] if object_scales is None else [(float(f), float(s)) for f, s in object_scales]
        self.stacks, w = [], []
        for overrides, share in mix:
            objective = Optics(**{**self.optics.as_dict(), **overrides}) if overrides else None
            for im, ws in zip(images, w_src):
                if min(np.shape(im)[-2:]) < PATCH:
                    raise ValueError("source images must be at least 84x84")
                # a source too small for a patch at a scale keeps its whole share at the others
                kept = [(shrunk(im, f), s) for f, s in scales if min(shrunk_shape(im, f)) >= PATCH]
                total = sum(s for _, s in kept)
                for src, scale_share in kept:
                    self.stacks.append(blur_levels_for(prep(src), self.optics, objective))
                    w.append(ws * share * scale_share / total)
        w = np.asarray(w, float)
        self.weights = torch.tensor(w / w.sum(), dtype=torch.float64)

    def _draw(self, classes: torch.Tensor, gen: torch.Generator, views: int = 1):
        """``(counts (views, m, 84, 84), labels (views, m), target classes (m,))`` of the kept
        patches: each crop is taken once and photographed ``views`` times, each time by a camera
        of its own (brightness, offset, shot and read noise), and kept when every view is."""
        n = classes.numel()
        is_bg = classes == BACKGROUND
        levels = torch.where(is_bg, torch.randint(0, self.n_levels, (n,), generator=gen), classes)
        src = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        crops = torch.empty(n, PATCH, PATCH)
        ry = torch.rand(n, generator=gen)
        rx = torch.rand(n, generator=gen)
        for i in range(n):
            st = self.stacks[int(src[i])]
            h, w = st.shape[-2:]
            y = int(ry[i] * (h - PATCH + 1))
            x = int(rx[i] * (w - PATCH + 1))
            crops[i] = st[int(levels[i]), y : y + PATCH, x : x + PATCH]
        crops.clamp_(min=0)
        shots = [self._camera(crops, is_bg, gen) for _ in range(views)]
        keep = torch.stack([k for _, _, k in shots]).all(0)
        counts = torch.stack([c[keep] for c, _, _ in shots])
        labels = torch.stack([torch.where(bg[keep], torch.full_like(levels[keep], BACKGROUND), levels[keep])
                              for _, bg, _ in shots])
        return counts, labels, classes[keep]

    def _camera(self, crops: torch.Tensor, is_bg: torch.Tensor, gen: torch.Generator):
        """``(counts, bg rule, keep)`` of ``crops`` photographed once (see the module's 2.-4.)."""
        n = crops.shape[0]
        if self.paper:
            counts = torch.poisson(crops, generator=gen).round_().clamp_(0, 65535)
            bg = bg_rule(counts)
            structure = (crops.amax(dim=(-2, -1)) - crops.amin(dim=(-2, -1))) >= BG_RANGE
            return counts, bg, bg | structure
        amp = torch.where(is_bg, _uniform(n, 0.0, 15.0, gen), _loguniform(n, 300.0, 6000.0, gen))
        offset = torch.where(is_bg, _uniform(n, 60.0, 215.0, gen), _uniform(n, 80.0, 600.0, gen))
        gain = torch.where(is_bg, _loguniform(n, 1.0, 10.0, gen), _loguniform(n, *self.gain_range, gen))
        read = torch.where(is_bg, _uniform(n, 0.3, 3.5, gen), _uniform(n, 0.5, 5.0, gen))
        autofluo = _uniform(n, 0.0, 40.0, gen)
        clean = amp[:, None, None] * crops
        photons = torch.poisson((clean + autofluo[:, None, None]) * gain[:, None, None], generator=gen)
        counts = photons / gain[:, None, None] + offset[:, None, None]
        counts = counts + read[:, None, None] * torch.randn(n, PATCH, PATCH, generator=gen)
        counts = counts.round_().clamp_(0, 65535)
        bg = bg_rule(counts)
        structure = (clean.amax(dim=(-2, -1)) - clean.amin(dim=(-2, -1))) >= BG_RANGE
        return counts, bg, bg | structure

    def sample(self, n: int, gen: torch.Generator, classes=None, views: int = 1):
        """``n`` patches (counts / 65535 as float32 (n, 84, 84)) and int64 labels (n,).

        ``classes``: the class to aim at per patch (default: uniform over the 12 classes);
        the final label follows the bg rule, so it can differ for a few patches.
        ``views`` > 1: each crop photographed that many times by independent cameras, each view
        flipped and turned on its own; ``(views, n, 84, 84)`` and labels ``(views, n)`` (the
        pairs of a consistency loss: what DelpNet answers should not depend on the camera).
        """
        want = (
            torch.randint(0, self.n_levels + 1, (n,), generator=gen)
            if classes is None
            else torch.as_tensor(classes, dtype=torch.int64)
        )
        xs, ys = [], []
        todo = want
        for _ in range(50):
            if todo.numel() == 0:
                break
            c, lab, drawn_for = self._draw(todo, gen, views)
            xs.append(c)
            ys.append(lab)
            # re-draw the dropped ones for the same target classes
            kept = torch.bincount(drawn_for, minlength=self.n_levels + 1)
            asked = torch.bincount(todo, minlength=self.n_levels + 1)
            missing = (asked - kept).clamp(min=0)
            todo = torch.repeat_interleave(torch.arange(self.n_levels + 1), missing)
        x = torch.cat(xs, dim=1)[:, :n]
        y = torch.cat(ys, dim=1)[:, :n]
        if not self.paper:
            for v in range(views):
                _dihedral(x[v], gen)
        return (x[0] / 65535.0, y[0]) if views == 1 else (x / 65535.0, y)


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> None:
    """Random flips / rot90 of patches ``x`` (n, 84, 84), in place (8 dihedral transforms)."""
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    for kk in range(4):
        for ff in (False, True):
            sel = (k == kk) & (flip == ff)
            if sel.any():
                t = torch.rot90(x[sel], kk, dims=(-2, -1))
                x[sel] = t.flip(-1) if ff else t


def fixed_set(images, n_per_class: int, seed: int, optics: Optics | None = None,
              paper_protocol: bool = False, objectives=None, gain_range=SHIPPED_GAIN_RANGE, object_scales=None):
    """A reproducible, class-balanced evaluation set from held-out source images.

    ``paper_protocol``: raw intensities + Poisson noise only, levels 0..10 asked for (a patch
    still becomes "bg" if the rule says so)."""
    synth = PatchSynth(images, optics, paper_protocol=paper_protocol, objectives=objectives, gain_range=gain_range,
                       object_scales=object_scales)
    gen = torch.Generator().manual_seed(seed)
    n_cls = synth.n_levels if paper_protocol else synth.n_levels + 1
    classes = torch.arange(n_cls).repeat_interleave(n_per_class)
    return synth.sample(classes.numel(), gen, classes=classes)
