"""Paired (defocused, in-focus) data for the learned generators.

Synthetic pairs (:class:`PairSynth`) are made from the real in-focus source images of
:mod:`napari_refocus.training.sources` (split BY SOURCE IMAGE with
:func:`~napari_refocus.training.sources.split_sources`, never by crop):

1. each source is normalised to ``(img - p1) / (p99.9 - p1)`` and blurred ONCE with the
   Born-Wolf PSF of every level 0..17 (:data:`GEN_OPTICS`: 2 um per level, so up to 34 um;
   the 37-px PSF window of the project's default optics truncates the tails of levels > 10);
2. a pair = a random ``patch`` x ``patch`` crop: the input is either one level (1..17; 80 % of
   these from 1..10) or a
   spatially varying defocus (a tilted or undulating level field, linear blend of the two
   neighbouring levels per pixel, as :func:`napari_refocus.simulate` does), turned into
   camera counts ``Poisson(gain * (amp * blur + bg)) / gain + offset + N(0, read)`` with a
   random amplitude (300..8000 counts), a fluorescent pedestal ``bg`` (0..60 % of it), camera offset (50..500), gain (0.3..3
   photons/count: a range of shot-noise levels) and read noise, then rounded; the target is
   the noise-free ``amp * sharp + bg + offset``;
3. both are normalised with the INPUT crop's percentiles (as the inference does per image),
   then jointly scaled/offset at random (robustness to the normalisation), flipped/rotated.

Real pairs (:func:`zstack_pairs`): the in-focus plane of a z-stack is found automatically and
every other plane is paired with it.
"""

from __future__ import annotations

import glob
import math
import re
from pathlib import Path

import numpy as np
import torch

from ..core.optics import Optics
from .delpnet_data import blur_levels, normalise_source

#: optics of the generators' training data: 18 levels, 0..34 um from focus
#: the generators' data keep LB-DVD eq. 2 (``psf_model="paraxial"``, the default until 2026-12-03)
#: so that their cards' commands still reproduce the shipped weights and held-out numbers
GEN_OPTICS = Optics(n_levels=18, psf_model="paraxial")
PERCENTILES = (1.0, 99.8)
EVAL_LEVELS = tuple(range(2, 11))


def _pct_normalise(x: torch.Tensor, ref: torch.Tensor, percentiles=PERCENTILES):
    """Normalise (N, H, W) ``x`` with the per-item percentiles of ``ref``."""
    flat = ref.reshape(ref.shape[0], -1)
    if flat.shape[1] > 8192:  # percentiles of a regular subsample: same values, much faster
        flat = flat[:, :: max(1, flat.shape[1] // 8192)]
    q = torch.tensor([p / 100 for p in percentiles], dtype=flat.dtype)
    lo, hi = torch.quantile(flat, q, dim=1)
    scale = (hi - lo).clamp_min(1e-3)
    return (x - lo[:, None, None]) / scale[:, None, None]


class PairSynth:
    """Draws synthetic (input, target) training pairs from in-focus source images."""

    def __init__(self, images, optics: Optics = GEN_OPTICS, *, max_level: int | None = None,
                 min_level: int = 1, p_constant: float = 0.6, upscale: int = 1):
        self.optics = optics
        self.max_level = optics.n_levels - 1 if max_level is None else int(max_level)
        self.min_level = int(min_level)
        self.p_constant = p_constant
        self.sharp, self.stacks = [], []
        for img in images:
            norm = np.clip(normalise_source(img), 0, None)
            self.sharp.append(torch.from_numpy(norm))
            self.stacks.append(blur_levels(norm, optics).clamp_min(0))
        area = np.array([s.numel() for s in self.sharp], dtype=np.float64)
        self.p_source = torch.from_numpy(area / area.sum())
        self.upscale = upscale

    # ------------------------------------------------------------------------- level fields
    def _level_field(self, p: int, gen: torch.Generator) -> torch.Tensor:
        lo_l, hi_l = self.min_level, self.max_level
        if torch.rand(1, generator=gen).item() < self.p_constant:
            # 80 % of the one-level crops from levels <= 10 (the usual range), 20 % beyond
            mid = min(hi_l, max(lo_l, 10))
            if mid < hi_l and torch.rand(1, generator=gen).item() >= 0.8:
                lv = int(torch.randint(mid + 1, hi_l + 1, (1,), generator=gen))
            else:
                lv = int(torch.randint(lo_l, mid + 1, (1,), generator=gen))
            return float(lv)
        span = float(torch.empty(1).uniform_(1.0, 8.0, generator=gen))
        low = float(torch.empty(1).uniform_(max(0.0, lo_l - 1), max(lo_l, hi_l - span), generator=gen))
        high = min(hi_l, low + span)
        yy, xx = torch.meshgrid(torch.arange(p, dtype=torch.float32), torch.arange(p, dtype=torch.float32),
                                indexing="ij")
        if torch.rand(1, generator=gen).item() < 0.5:  # tilt
            t = float(torch.empty(1).uniform_(0, 2 * math.pi, generator=gen))
            proj = xx * math.cos(t) - yy * math.sin(t)
        else:  # undulation
            per = float(torch.empty(1).uniform_(0.3, 1.5, generator=gen))
            ph = float(torch.empty(1).uniform_(0, 2 * math.pi, generator=gen))
            proj = torch.cos(2 * math.pi * per * xx / p + ph) * torch.cos(2 * math.pi * per * yy / p)
        proj = (proj - proj.min()) / (proj.max() - proj.min()).clamp_min(1e-6)
        return low + (high - low) * proj

    def _crop(self, gen, p):
        for _ in range(8):
            i = int(torch.multinomial(self.p_source, 1, generator=gen))
            s = self.sharp[i]
            h, w = s.shape
            y = int(torch.randint(0, h - p + 1, (1,), generator=gen))
            x = int(torch.randint(0, w - p + 1, (1,), generator=gen))
            crop = s[y:y + p, x:x + p]
            if crop.std() > 0.03:  # skip (mostly) empty crops
                break
        return i, y, x

    def sample(self, n: int, patch: int, gen: torch.Generator, *, normalise: bool = True, augment: bool = True):
        """(input, target) float32 tensors of shape (n, 1, patch, patch) (target r x larger
        when ``upscale`` > 1 is not used: training losses handle the scale)."""
        p = patch
        inp = torch.empty(n, p, p)
        tgt = torch.empty(n, p, p)
        for k in range(n):
            i, y, x = self._crop(gen, p)
            field = self._level_field(p, gen)
            if isinstance(field, float):  # one level for the whole crop
                inp[k] = self.stacks[i][int(field), y:y + p, x:x + p]
            else:
                lo = field.floor().long().clamp(0, self.optics.n_levels - 2)
                frac = field - lo
                stack = self.stacks[i][:, y:y + p, x:x + p]
                a = torch.gather(stack, 0, lo[None])[0]
                b = torch.gather(stack, 0, (lo + 1)[None])[0]
                inp[k] = a * (1 - frac) + b * frac
            tgt[k] = self.sharp[i][y:y + p, x:x + p]
        # camera model
        # 300..8000 counts x gain 0.3..3 = 90..24000 photons at the brightest structures: from
        # dim fluorescence to a well-exposed 12-bit widefield camera (BBBC006 peaks ~3000 counts
        # above a ~1000-count background)
        amp = torch.exp(torch.empty(n, 1, 1).uniform_(math.log(300), math.log(8000), generator=gen))
        # a fluorescent pedestal (out-of-focus haze, autofluorescence, medium) of 0..60 % of the
        # amplitude: real widefield fields sit on one, and its shot noise is most of the noise a
        # network sees in the background (BBBC006: ~1000 counts under ~3000). Without it, the
        # first models sharpened the background noise of such images (negative gain at level 2)
        bg = amp * torch.empty(n, 1, 1).uniform_(0, 0.6, generator=gen)
        offset = torch.empty(n, 1, 1).uniform_(50, 500, generator=gen)
        gain = torch.exp(torch.empty(n, 1, 1).uniform_(math.log(0.3), math.log(3.0), generator=gen))
        read = torch.empty(n, 1, 1).uniform_(0, 4, generator=gen)
        signal = (amp * inp + bg).clamp_min(0)
        noisy = torch.poisson(signal * gain, generator=gen) / gain + offset
        noisy = noisy + read * torch.randn(noisy.shape, generator=gen)
        noisy = noisy.round().clamp(0, 65535)
        clean = amp * tgt + bg + offset
        if normalise:
            xin = _pct_normalise(noisy, noisy)
            xt = _pct_normalise(clean, noisy)
            s = torch.exp(torch.empty(n, 1, 1).uniform_(math.log(0.75), math.log(1.33), generator=gen))
            d = torch.empty(n, 1, 1).uniform_(-0.1, 0.1, generator=gen)
            xin, xt = xin * s + d, xt * s + d
        else:
            xin, xt = noisy, clean
        if augment:
            kk = int(torch.randint(0, 4, (1,), generator=gen))
            xin, xt = torch.rot90(xin, kk, (1, 2)), torch.rot90(xt, kk, (1, 2))
            if torch.rand(1, generator=gen).item() < 0.5:
                xin, xt = xin.flip(-1), xt.flip(-1)
        return xin[:, None].contiguous(), xt[:, None].contiguous()


_SYNTH_CACHE: dict = {}


def cached_synth(sources, optics: Optics = GEN_OPTICS, **kwargs) -> PairSynth:
    """A :class:`PairSynth` for these source images, cached in this process (blurring all
    sources at 18 levels takes tens of seconds; several trainings in one process share it)."""
    key = (tuple(s.name for s in sources), optics, tuple(sorted(kwargs.items())))
    if key not in _SYNTH_CACHE:
        _SYNTH_CACHE[key] = PairSynth([s.image for s in sources], optics, **kwargs)
    return _SYNTH_CACHE[key]


def fixed_pairs(synth: PairSynth, n: int, patch: int, seed: int):
    """A fixed (seeded) set of pairs, e.g. for validation."""
    gen = torch.Generator().manual_seed(seed)
    return synth.sample(n, patch, gen, augment=False)


# ---------------------------------------------------------------------------- held-out set
def synthetic_test_set(levels=EVAL_LEVELS, *, splits=("test", "val"), data_root=None, seed: int = 2024,
                       crop=None, sources=None):
    """Held-out synthetic evaluation pairs: whole held-out source images (raw counts),
    defocused with :func:`napari_refocus.simulate` (the paper's optics and LB-DVD eq. 2, as the shipped
    networks were trained on; one level each, Poisson
    noise, gain 1 = the raw values are counts). Returns a list of dicts with ``source``,
    ``level``, ``input`` (uint16) and ``gt`` (float32).

    ``sources``: a list of :class:`~.sources.SourceImage` (intensities in counts) to use
    instead of the ``splits`` of the BBBC006 fields; their ``split`` is reported as "given".
    """
    from ..core.forward import simulate
    from .sources import load_sources, split_sources

    split = {"given": list(sources)} if sources is not None else split_sources(load_sources(data_root))
    if sources is not None:
        splits = ("given",)
    out = []
    for name in splits:
        for j, src in enumerate(split[name]):
            gt = src.image.astype(np.float32)
            if crop:
                gt = gt[: crop, : crop]
            for lv in levels:
                noisy = simulate(gt.astype(np.uint16), level=int(lv), noise="poisson",
                                 seed=seed + 1000 * j + int(lv), optics=Optics(psf_model="paraxial") if lv <= 10 else GEN_OPTICS)
                out.append({"source": src.name, "split": name, "level": int(lv), "input": noisy, "gt": gt})
    return out


# ---------------------------------------------------------------------------- z-stacks
def focus_scores(stack, metric: str = "laplacian") -> np.ndarray:
    """Sharpness per plane of a (Z, Y, X) stack.

    "laplacian": variance of the Laplacian divided by the squared mean intensity (normalised
    Laplacian variance: insensitive to brightness changes between planes); "std": the
    intensity standard deviation (the LB-DVD criterion).
    """
    from scipy.ndimage import gaussian_filter, laplace

    st = np.asarray(stack, dtype=np.float64)
    out = []
    for plane in st:
        if metric == "std":
            out.append(plane.std())
        elif metric == "laplacian":
            sm = gaussian_filter(plane, 1.0)  # suppress pixel noise before the 2nd derivative
            out.append(laplace(sm).var() / max(plane.mean() ** 2, 1e-12))
        else:
            raise ValueError(f"unknown focus metric {metric!r}; choose 'laplacian' or 'std'")
    return np.asarray(out)


def find_focus(stack, metric: str = "laplacian") -> int:
    """Index of the in-focus plane of a (Z, Y, X) stack (maximum of :func:`focus_scores`)."""
    return int(np.argmax(focus_scores(stack, metric)))


def zstack_pairs(stack, *, focus=None, metric: str = "laplacian", min_distance: int = 1):
    """Pair every plane of a (Z, Y, X) z-stack with its in-focus plane.

    ``focus``: the in-focus plane index, or None to find it with ``metric``. Returns a dict
    with ``focus`` (index), ``scores``, ``metric`` and ``pairs``: a list of
    ``(plane_index, plane, in_focus_plane)`` for every plane at least ``min_distance`` away.
    """
    st = np.asarray(stack)
    if st.ndim != 3 or st.shape[0] < 2:
        raise ValueError(f"expected a (Z, Y, X) stack with >= 2 planes, got shape {st.shape}")
    scores = focus_scores(st, metric)
    f = int(np.argmax(scores)) if focus is None else int(focus)
    pairs = [(z, st[z], st[f]) for z in range(st.shape[0]) if abs(z - f) >= min_distance]
    return {"focus": f, "scores": scores, "metric": metric, "pairs": pairs}


def read_zstack(path):
    """A (Z, Y, X) stack from a multi-page TIFF, or from a folder of single-plane TIFFs
    (sorted by the last number in the file name). Returns (stack, names)."""
    import tifffile

    p = Path(path)
    if p.is_dir():
        files = sorted(glob.glob(str(p / "*.tif")) + glob.glob(str(p / "*.tiff")),
                       key=lambda f: int((re.findall(r"(\d+)", Path(f).stem) or ["0"])[-1]))
        if not files:
            raise FileNotFoundError(f"no TIFF planes in {p}")
        return np.stack([tifffile.imread(f) for f in files]), [Path(f).name for f in files]
    st = tifffile.imread(str(p))
    if st.ndim != 3:
        raise ValueError(f"{p} is not a z-stack (shape {st.shape})")
    return st, [f"{p.name}[{i}]" for i in range(st.shape[0])]


def dfnn_stack_dir(data_root=None) -> Path:
    from .sources import default_data_root

    return default_data_root(data_root) / "DFNN_defocus" / "data" / "test" / "mitochondria" / "stack"


def zstack_split(n_planes: int, focus: int, *, every: int = 3):
    """Planes used to fine-tune and planes held out (every ``every``-th plane counting from
    the focus, the focus itself excluded from both)."""
    held = [z for z in range(n_planes) if z != focus and (z - focus) % every == 0]
    train = [z for z in range(n_planes) if z != focus and z not in held]
    return train, held
