"""Device choice ("auto" picks CUDA, then Apple MPS, then the CPU) and out-of-memory fallback."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Devices torch can use on this machine, best first (always ends with "cpu")."""
    import torch

    out = []
    if torch.cuda.is_available():
        out += ["cuda"] if torch.cuda.device_count() == 1 else [
            f"cuda:{i}" for i in range(torch.cuda.device_count())
        ]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device="auto"):
    """A ``torch.device`` for "auto" | "cpu" | "cuda[:i]" | "mps" (or a torch.device).

    Raises ValueError when the requested accelerator does not exist here.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device is None:
        device = "auto"
    name = str(device).lower()
    if name == "auto":
        return torch.device(available_devices()[0].split(",")[0])
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' was requested but Apple MPS is not available; use 'auto' or 'cpu'")
        return torch.device("mps")
    raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class DeviceReport:
    """What actually ran: the device a job ended on, after any out-of-memory fallback.

    A method passes one down to :func:`run_chunked`; provenance then records the device that
    did the work, not the one that was asked for.
    """

    def __init__(self, device):
        self.device = device
        self.fallbacks: list[str] = []
        self._halved_note: int | None = None

    def fell_back(self, new_device, why: str) -> None:
        self.fallbacks.append(why)
        self.device = new_device

    def note(self, text) -> None:
        """Record a notice once (e.g. a network's ``device_note``: it was loaded onto the CPU
        because it did not fit on the accelerator); empty text is ignored."""
        if text and text not in self.fallbacks:
            self.fallbacks.append(str(text))

    def halved(self, device, batch: int) -> None:
        """An out-of-memory error made a job cut its batches to ``batch`` items (one note,
        kept up to date, however many times the batch was halved)."""
        note = f"out of memory on {device}: batches cut to {batch}"
        if self._halved_note is None:
            self._halved_note = len(self.fallbacks)
            self.fallbacks.append(note)
        else:
            self.fallbacks[self._halved_note] = note


def run_chunked(fn, n_items: int, *, batch_size: int, device, report: DeviceReport | None = None):
    """Call ``fn(start, stop, device)`` over ``range(n_items)`` in chunks, as a generator.

    Yields ``(stop, result)`` per chunk. On an accelerator out-of-memory error the chunk is
    retried with half the batch, down to 1, and then on the CPU (RedLionfish-style), so a
    job that fits in host memory always finishes. ``report`` (a :class:`DeviceReport`) learns
    of the smaller batches and of a move to the CPU (its notes). Each chunk is a cancellation
    checkpoint.
    """
    import torch

    from .progress import check_cancelled

    start = 0
    batch = max(1, int(batch_size))
    while start < n_items:
        check_cancelled()  # each chunk is a cancellation checkpoint
        stop = min(n_items, start + batch)
        try:
            result = fn(start, stop, device)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if device.type == "cpu" or not is_oom(exc):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                logger.warning("out of memory on %s: retrying with batch %d", device, batch)
                if report is not None and hasattr(report, "halved"):
                    report.halved(device, batch)
            else:
                logger.warning("out of memory on %s even with batch 1: continuing on the CPU", device)
                if report is not None:
                    report.fell_back(torch.device("cpu"), f"out of memory on {device}: continued on the CPU")
                device = torch.device("cpu")
            continue
        yield stop, result
        del result  # not held while the next chunk runs (a tile's prediction: 4 MB at 1024 px)
        start = stop
