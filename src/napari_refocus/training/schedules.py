"""Learning-rate schedules, as torch LR schedulers (their state goes into the checkpoints)."""

from __future__ import annotations

import math
import time

from torch.optim.lr_scheduler import LRScheduler


class FunctionLR(LRScheduler):
    """Every parameter group's lr = ``fn(step)`` (an absolute lr, not a factor, so the values
    are exactly ``fn``'s). Call :meth:`step` after each optimiser step, as for any scheduler."""

    def __init__(self, optimizer, fn, last_epoch: int = -1):
        self.fn = fn
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.fn(self.last_epoch) for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k != "fn"}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.refresh()

    def refresh(self) -> None:
        """Set the groups' lr to ``fn(last_epoch)``: a resumed run continues on ITS schedule
        (a longer run than the checkpointed one has another lr at the same step)."""
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


class Budget:
    """A run's length in minutes and/or steps; :meth:`fraction` is the larger share used."""

    def __init__(self, minutes=None, steps=None):
        self.seconds = None if minutes is None else float(minutes) * 60
        self.steps = steps
        self.start(0.0)

    def start(self, elapsed_s: float) -> None:
        """(Re)start the clock, ``elapsed_s`` seconds already spent (a resumed run)."""
        self.t0 = time.time() - elapsed_s

    def elapsed(self) -> float:
        return time.time() - self.t0

    def fraction(self, step: int) -> float:
        return max(self.elapsed() / self.seconds if self.seconds else 0.0, step / self.steps if self.steps else 0.0)

    def progress(self, step: int) -> tuple[int, int]:
        """(done, total) for a progress bar: steps, or seconds of a time budget."""
        if self.steps:
            return step, self.steps
        return int(min(self.elapsed(), self.seconds)), int(self.seconds)


def warmup_cosine(step: int, total: int, peak: float, warmup: int) -> float:
    """DelpNet's lr: linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 1 %."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def generator_factor(frac: float, schedule: str, warmup_frac: float = 0.03) -> float:
    """The generators' lr factor at ``frac`` (0..1) of the run's budget (time or steps):
    warm-up, then ``"linear_half"`` (constant, then linear decay to 0 over the second half,
    CycleGAN), ``"cosine"`` (to 2 %) or constant."""
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup_frac:
        return max(frac / warmup_frac, 0.05)
    if schedule == "linear_half":
        return 1.0 if frac < 0.5 else max(0.0, 2 * (1 - frac))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac)) * 0.98 + 0.02
    return 1.0
