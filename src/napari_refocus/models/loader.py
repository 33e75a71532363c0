"""Network weights: safetensors only (never pickle / ``torch.load``), config in the metadata.

A weights file ``weights/<name>.safetensors`` holds the tensors plus one metadata entry
``"napari_refocus"``: JSON with ``architecture`` (class name), ``kwargs`` (its constructor
arguments), ``optics``, ``normalisation`` and free-form ``provenance``. Next to it,
``weights/<name>.sha256`` (one hex digest) is checked on load when present.

:func:`load_model` is the one run-time loader (DelpNet and the generators, any architecture of
:mod:`.registry`), with one cached instance per (file, modification time, device);
:func:`load_fresh` gives an uncached module that the caller owns (training, fine-tuning).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

META_KEY = "napari_refocus"


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def _readable(path):
    """Turn safetensors' errors about a corrupt, truncated or non-safetensors (e.g. pickle)
    file into a one-line ValueError naming the file."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not a valid safetensors weights file (corrupt, truncated or pickled?): {_one_line(exc)}"
        ) from None


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(model, path, *, meta: dict | None = None, write_hash: bool = True) -> Path:
    """Write ``model``'s state (and its config) to ``path`` (.safetensors); returns the path.

    ``model.config`` (a dict of constructor kwargs) is stored as ``kwargs``; ``meta`` adds
    or overrides entries (optics, normalisation, provenance...). A ``.sha256`` file is
    written next to it unless ``write_hash=False``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"architecture": type(model).__name__, "kwargs": dict(getattr(model, "config", {}))}
    info.update(meta or {})
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={META_KEY: json.dumps(info, sort_keys=True)})
    if write_hash:
        path.with_suffix(".sha256").write_text(file_sha256(path) + "\n")
    return path


def read_metadata(path) -> dict:
    """The napari-refocus metadata dict of a safetensors file (no tensors are read)."""
    from safetensors import safe_open

    with _readable(path):
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
        if raw is None:
            raise ValueError(f"{path} has no napari-refocus metadata; was it written by save_weights?")
        return json.loads(raw)


def weights_path(name: str) -> Path:
    """``weights/<name>.safetensors`` of the installed package (raises if missing)."""
    from ..core.resources import weights_dir

    path = Path(weights_dir()) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"no shipped weights {path.name!r} in {path.parent}; train them with "
            f"`napari-refocus train {name} --out weights/` or reinstall napari-refocus"
        )
    return path


def resolve_path(name_or_path) -> Path:
    """A weights name ("delpnet") or a path to a .safetensors file -> existing path."""
    p = Path(str(name_or_path))
    if p.suffix == ".safetensors" or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"weights file {p} does not exist")
        return p
    return weights_path(str(name_or_path))


def verify_hash(path) -> str:
    """Check ``<path>.sha256`` if it exists; return the file's SHA-256."""
    path = Path(path)
    digest = file_sha256(path)
    ref = path.with_suffix(".sha256")
    if ref.exists():
        want = ref.read_text().split()[0].strip().lower()
        if want != digest:
            raise ValueError(
                f"weights file {path} is corrupt or was replaced: SHA-256 {digest} does not match "
                f"{want} in {ref.name}"
            )
    return digest


def weights_hash(name_or_path="delpnet") -> str:
    """SHA-256 hex digest of a weights file (for provenance records)."""
    return file_sha256(resolve_path(name_or_path))


def load_state(path):
    """(state_dict, metadata) of a safetensors weights file, on the CPU."""
    from safetensors.torch import load_file

    with _readable(path):
        state = load_file(str(path), device="cpu")
    return state, read_metadata(path)


def build_model(meta: dict):
    """A new module of the architecture named in ``meta`` (see :mod:`.registry`)."""
    from .registry import build_model as _build

    return _build(meta)


def load_fresh(name_or_path):
    """A NEW module (not cached, CPU, eval mode) with the weights of a name or .safetensors path.

    The SHA-256 is checked against ``<name>.sha256`` when that file exists. The module carries
    ``.meta``, ``.weights_file`` and ``.sha256``; the caller owns it (may train or move it).
    """
    import torch

    path = resolve_path(name_or_path)
    digest = verify_hash(path)
    state, meta = load_state(path)
    try:
        with torch.random.fork_rng(devices=[]):  # the random initial weights leave no trace
            model = build_model(meta)
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: {_one_line(exc)}") from None
    model.eval()
    model.meta, model.weights_file, model.sha256 = meta, str(path), digest
    return model


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def load_model(name_or_path="delpnet", device="cpu"):
    """The network of ``weights/<name>.safetensors`` (or of a .safetensors path) in eval mode.

    Any registered architecture (DelpNet and the four generators). Cached by (resolved path,
    modification time, device); the cached module is never moved: each device gets its own
    instance, loaded on the CPU and moved before it enters the cache (thread-safe; the cache
    keeps the 8 most recently used). The module carries ``.meta`` (the stored config),
    ``.weights_file`` and ``.sha256``. Raises FileNotFoundError when the file is missing,
    ValueError when its SHA-256 does not match ``<name>.sha256`` or it is not a valid
    safetensors weights file.
    """
    from ..core.devices import resolve_device
    from .registry import get_architecture

    path = resolve_path(name_or_path).resolve()
    dev = resolve_device(device)
    key = (str(path), path.stat().st_mtime_ns, str(dev))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        fresh = load_fresh(path)
        model = get_architecture(fresh.meta["architecture"]).prepare(fresh, dev)
        model.meta, model.weights_file, model.sha256 = fresh.meta, fresh.weights_file, fresh.sha256
        _CACHE[key] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model


def load_generator(name_or_path, device="cpu"):
    """:func:`load_model` (kept for the generators' callers)."""
    return load_model(name_or_path, device)


def clear_cache() -> None:
    """Forget every cached module."""
    with _LOCK:
        _CACHE.clear()
