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
import logging
import threading
from collections import OrderedDict
from pathlib import Path

META_KEY = "napari_refocus"
logger = logging.getLogger(__name__)


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


#: a safetensors header is at most 100 MB (the format's own limit)
MAX_HEADER = 100_000_000


def check_file(path) -> None:
    """A one-line ValueError naming ``path`` and what is wrong with it when it is not a complete
    safetensors file: empty, a PyTorch ``torch.save`` archive or another pickle (never
    unpickled: loading one can run any code), a header that is not JSON, or truncated (the
    header promises more bytes than the file holds). Only the header is read."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a weights file")
    with open(path, "rb") as fh:
        head = fh.read(8)
        # a safetensors header length can itself start with byte 0x80 (a pickle's first byte):
        # a plausible length followed by the JSON header's "{" is safetensors, not a pickle
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        plausible = 0 < n <= min(MAX_HEADER, size - 8) and fh.read(1) == b"{"
        fh.seek(8)
        if not plausible and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):
            kind = "a PyTorch torch.save archive" if head[:2] == b"PK" else "a Python pickle"
            raise ValueError(f"{path} is {kind}, which napari-refocus never loads (unpickling can run any code); "
                             "save the state dict with safetensors.torch.save_file or napari_refocus' save_weights")
        if len(head) < 8:
            raise ValueError(f"{path} is truncated: {size} bytes, shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or n > size - 8:
            if n > MAX_HEADER or head[:1] in (b"{", b"<", b"#"):
                raise ValueError(f"{path} is not a safetensors file (its first bytes {head!r} are no header length)")
            raise ValueError(f"{path} is truncated: its header needs {n + 8} bytes, the file has {size}")
        try:
            header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ValueError(f"{path} is not a safetensors file (its header is not a safetensors JSON header)") from None
    if 8 + n + end > size:
        raise ValueError(f"{path} is truncated: it has {size} bytes, its tensors need {8 + n + end}")


@contextlib.contextmanager
def _readable(path):
    """Turn safetensors' errors about a corrupt, truncated or non-safetensors (e.g. pickle)
    file into a one-line ValueError naming the file (after :func:`check_file`'s specific ones)."""
    from safetensors import SafetensorError

    check_file(path)
    try:
        yield
    except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not a valid safetensors weights file (corrupt or truncated): {_one_line(exc)}"
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
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), str):
        raise ValueError(f"{path}: its napari-refocus metadata is not a JSON object naming an architecture")
    return meta


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


def _check_fits(path, meta: dict, model, state: dict) -> None:
    """A one-line ValueError when the file's tensors are not those of the network its metadata
    names (missing, unexpected or of another shape), with a few of each."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shape = [f"{k} {tuple(state[k].shape)} != {tuple(want[k].shape)}" for k in want
             if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    problems = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                for what, v in (("missing", missing), ("unexpected", extra), ("of the wrong shape", shape)) if v]
    if problems:
        raise ValueError(f"{path}: its tensors do not fit the {meta.get('architecture')} it names: "
                         + "; ".join(problems))


def check_architecture(path, like: str) -> dict:
    """The metadata of weights file ``path`` after checking that it holds the architecture of
    the shipped weights ``like`` (e.g. a custom ``weights=`` file for refocus-unet must hold a
    ResNetUNet); a one-line ValueError naming both otherwise (and every :func:`check_file`
    error). Returns the file's metadata."""
    meta = read_metadata(path)
    try:
        expected = read_metadata(weights_path(like))["architecture"]
    except FileNotFoundError:  # no shipped file to compare with: any known architecture
        return meta
    if meta["architecture"] != expected:
        raise ValueError(f"{path} holds a {meta['architecture']} network, but {like} needs a {expected} "
                         f"(weights of another method?)")
    return meta


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
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: {_one_line(exc)}") from None
    _check_fits(path, meta, model, state)
    try:
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: {_one_line(exc)}") from None
    model.eval()
    model.meta, model.weights_file, model.sha256 = meta, str(path), digest
    return model


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def load_model(name_or_path="delpnet", device="cpu", *, like: str | None = None):
    """The network of ``weights/<name>.safetensors`` (or of a .safetensors path) in eval mode.

    Any registered architecture (DelpNet and the four generators). Cached by (resolved path,
    modification time, device); the cached module is never moved: each device gets its own
    instance, loaded on the CPU and moved before it enters the cache (thread-safe; the cache
    keeps the 8 most recently used). The module carries ``.meta`` (the stored config),
    ``.weights_file`` and ``.sha256``. Raises FileNotFoundError when the file is missing,
    ValueError when its SHA-256 does not match ``<name>.sha256``, it is not a valid
    safetensors weights file (:func:`check_file`: one line naming the file and what is wrong),
    or, with ``like`` (a shipped weights name), it holds another architecture than ``like``'s.
    When the network does not fit on an accelerator (out of memory while moving it there), it
    runs on the CPU instead, with a logged notice (:func:`_cpu_instead`; ``.device_note``).
    """
    from ..core.devices import resolve_device
    from ..core.progress import add_module_checkpoints
    from .registry import get_architecture

    path = resolve_path(name_or_path).resolve()
    if like is not None and path != resolve_path(like).resolve():
        check_architecture(path, like)
    dev = resolve_device(device)
    key = (str(path), path.stat().st_mtime_ns, str(dev))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        fresh = load_fresh(path)
        prepare = get_architecture(fresh.meta["architecture"]).prepare
        try:
            model = prepare(fresh, dev)
        except Exception as exc:  # noqa: BLE001 - only out of memory is handled, the rest re-raised
            model = _cpu_instead(path, dev, exc, prepare)
        model.meta, model.weights_file, model.sha256 = fresh.meta, fresh.weights_file, fresh.sha256
        # every layer a cancellation checkpoint: one batch of 1024-px tiles takes seconds
        add_module_checkpoints(model)
        _CACHE[key] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model


def _cpu_instead(path, dev, exc, prepare):
    """The network of ``path`` on the CPU, wrapped to take and give tensors on ``dev``, after
    ``exc`` (an out-of-memory error) stopped it from going onto ``dev``; other errors re-raised.

    A notice goes to the log (``napari_refocus.models.loader``) and into the module's
    ``device_note``; the callers' tensors stay on ``dev`` (the wrapper moves each input to the
    CPU and its output back), so every method keeps working, only slower."""
    import torch

    from ..core.devices import is_oom

    if dev.type == "cpu" or not is_oom(exc):
        raise exc
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # what the failed move left behind
    note = (f"out of memory loading {Path(path).name} onto {dev} ({_one_line(exc)[:120]}); "
            "the network runs on the CPU instead (slower)")
    logger.warning(note)
    inner = prepare(load_fresh(path), torch.device("cpu"))  # a new instance: the failed one may be half-moved
    return _on_cpu_for(inner, dev, note)


def _on_cpu_for(inner, dev, note: str):
    import torch

    class CpuFallback(torch.nn.Module):
        """``inner`` (on the CPU) called with tensors on another device: input moved to the CPU,
        output moved back; any other attribute (``multiple``, ``upscale``, ...) is ``inner``'s."""

        def __init__(self):
            super().__init__()
            self.inner = inner
            self.requested_device = str(dev)
            self.device_note = note

        def forward(self, x):
            return self.inner(x.to("cpu")).to(x.device)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._modules["inner"], name)

    return CpuFallback().eval()


def load_generator(name_or_path, device="cpu"):
    """:func:`load_model` (kept for the generators' callers)."""
    return load_model(name_or_path, device)


def clear_cache() -> None:
    """Forget every cached module."""
    with _LOCK:
        _CACHE.clear()
