"""Network weights: safetensors only (never pickle / ``torch.load``), config in the metadata.

A weights file ``weights/<name>.safetensors`` holds the tensors plus one metadata entry
``"napari_refocus"``: JSON with ``architecture`` (class name), ``kwargs`` (its constructor
arguments), ``optics``, ``normalisation`` and free-form ``provenance``. Next to it,
``weights/<name>.sha256`` (one hex digest) is checked on load when present.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

META_KEY = "napari_refocus"


def _architectures():
    from .delpnet import DelpNet

    return {"DelpNet": DelpNet}


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

    return load_file(str(path), device="cpu"), read_metadata(path)


def build_model(meta: dict):
    archs = _architectures()
    arch = meta.get("architecture")
    if arch not in archs:
        raise ValueError(f"unknown architecture {arch!r} in weights metadata (known: {sorted(archs)})")
    return archs[arch](**meta.get("kwargs", {}))


@functools.lru_cache(maxsize=8)
def _load_cached(path_str: str, mtime: float, device_str: str):
    from .delpnet import prepare

    path = Path(path_str)
    digest = verify_hash(path)
    state, meta = load_state(path)
    model = build_model(meta)
    model.load_state_dict(state)
    model.eval()
    model = prepare(model, device_str)
    model.meta = meta
    model.weights_file = str(path)
    model.sha256 = digest
    return model


def load_model(name="delpnet", device="cpu"):
    """The network of ``weights/<name>.safetensors`` (or of a .safetensors path) in eval mode.

    Cached per (file, device). The returned module carries ``.meta`` (the stored config),
    ``.weights_file`` and ``.sha256``. Raises FileNotFoundError when the file is missing, ValueError when its
    SHA-256 does not match ``<name>.sha256``.
    """
    from ..core.devices import resolve_device

    path = resolve_path(name).resolve()
    dev = resolve_device(device)
    return _load_cached(str(path), path.stat().st_mtime, str(dev))
