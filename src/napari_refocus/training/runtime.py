"""Process-wide state of a training run: torch's global random stream (dropout draws from
it), used only through a private :class:`TorchRNG` that gives the caller's state back; and
the name of the CPU (for the model cards). The thread count: :func:`napari_refocus.core.torchstate.torch_threads`."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


class TorchRNG:
    """A private stream of torch's global random numbers, seeded with ``seed``.

    ``with rng:`` runs code on this stream (as after ``torch.manual_seed(seed)``, continuing
    where the previous ``with`` stopped) and gives the caller back its own state on exit, so a
    training generator that yields between steps leaves the process's random state alone.
    """

    def __init__(self, seed: int, device="cpu"):
        self.seed = int(seed)
        self.cuda = torch.device(device).type == "cuda"
        self._state = None

    def _get(self):
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.cuda else None)

    def _set(self, state):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state_all(state[1])

    def __enter__(self):
        self._outer = self._get()
        if self._state is None:
            torch.random.default_generator.manual_seed(self.seed)
            if self.cuda:
                torch.cuda.manual_seed_all(self.seed)
        else:
            self._set(self._state)
        return self

    def __exit__(self, *exc):
        self._state = self._get()
        self._set(self._outer)
        return False


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
