"""Write a benchmark's markdown section into BENCHMARKS.md (between named markers)."""

from __future__ import annotations

import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> str:
    """One line describing where the numbers were measured."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, torch {torch.__version__} with {torch.get_num_threads()} threads, {gpu}, "
            f"Python {platform.python_version()}")


def git_rev() -> str:
    try:
        rev = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src", "benchmarks"], cwd=ROOT).returncode
        return rev + (" + uncommitted changes" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def write_section(name: str, body: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, lines, write: bool = True) -> str:
    """Print a section (a list of markdown lines) and, unless ``write`` is False, put it in
    BENCHMARKS.md under ``name``; returns the text."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(name, text)
    return text



def delpnet_args(ap, argv=None):
    """Parse the options the DelpNet benchmarks share (``--threads``, ``--wheels``,
    ``--no-write``) and apply ``--threads`` to torch; returns the parsed arguments."""
    import torch

    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--wheels", default=None, help="folder of the nuclei wheels (as for training)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return a


def threads_args(ap, argv=None, *, threads: int = 1):
    """Parse ``--threads`` (default ``threads``) and ``--no-write`` with the benchmark's own
    options already on ``ap``, and apply ``--threads`` to torch; returns the parsed arguments."""
    import torch

    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    return a


def threads_wheels(a) -> str:
    """The ``--threads`` / ``--wheels`` part of a recorded command line."""
    return f"{' --threads ' + str(a.threads) if a.threads else ''}{' --wheels ' + a.wheels if a.wheels else ''}"


def tiled(tile, size: int):
    """``size`` x ``size`` of ``tile`` repeated (a test image bigger than the shipped fields)."""
    import numpy as np

    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]))
    return np.ascontiguousarray(np.tile(tile, reps)[:size, :size])


def best_of(fn, repeat: int = 3) -> float:
    """The shortest wall time (s) of ``repeat`` calls of ``fn`` (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
