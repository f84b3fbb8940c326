"""Shared helpers of the benchmarks: thread settings, timing (warm-up, interleaved repeats, medians),
tables on stdout and JSON results with the machine and settings they were measured on.

Every benchmark reports RATIOS of things measured in the same process and the same run: the machines
these run on are shared and noisy, so absolute times move by tens of percent between runs while the
ratio of two interleaved measurements moves much less. Repeats are interleaved (a, b, c, a, b, c, ...,
with the order rotated each round) so that a burst of load from a neighbour hits every variant alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def _threads_from_argv() -> str:
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# numpy's BLAS (and OpenMP) read these when they load: import common before numpy, so that matrix
# products in the measured code run on the same deliberate thread count as torch.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads_from_argv())
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
try:
    _LOAD_AT_START: list[float] | None = list(os.getloadavg())  # when the benchmark started (imported this)
except OSError:
    _LOAD_AT_START = None


# ----------------------------------------------------------------------------- settings


def set_threads(threads: int) -> dict[str, Any]:
    """Set torch's intra-op threads of this process (and the inter-op pool) deliberately.

    The benchmarks default to 1 thread: on a 2-core machine shared with other jobs, extra intra-op
    threads make small-model steps slower and much noisier (see the README's Performance notes).
    DataLoader workers always run 1 thread (``kdcache.data.datasets.worker_init``).
    """
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (e.g. a second call in one process)
        pass
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "dataloader_worker_threads": 1,
            "blas_threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy
    import torch
    import zarr

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    info["loadavg_at_start"] = _LOAD_AT_START
    return info


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="minute-scale run (smaller sizes, fewer repeats)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per variant (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the measuring process")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for generated data (default: a temporary folder, removed at the end)")
    return p


# ----------------------------------------------------------------------------- timing


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of fn (perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """warmup untimed calls, then the seconds of each of ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(repeats)]


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every variant ``repeats`` times, round-robin with the order rotated each round.

    Each fn is one measurement and may return a float (the seconds to record, e.g. a per-step time it
    measured itself); otherwise its wall time is recorded. ``warmup`` untimed rounds come first.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            value = fns[name]()
            elapsed = time.perf_counter() - t0
            out[name].append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
                             else elapsed)
    return out


def summary(times: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and every sample (seconds)."""
    return {"median": median(times), "min": float(min(times)), "max": float(max(times)),
            "samples": [float(t) for t in times]}


def spread(times: Sequence[float]) -> float:
    """(max - min) / median: how noisy a set of repeats was."""
    m = median(times)
    return float((max(times) - min(times)) / m) if m else 0.0


# ----------------------------------------------------------------------------- output


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 1e5 or a < 1e-3:
            return f"{value:.{digits - 1}e}"
        if a >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if a < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(col)), *(len(r[i]) for r in cells)) if cells else len(str(col))
              for i, col in enumerate(columns)]
    lines = [f"\n### {title}", "| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def verdict(value: float, goal: str) -> str:
    """'met' / 'MISSED' for a goal written as '<= x' or '>= x'."""
    op, bound = goal.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "met" if ok else "MISSED"


def write_json(name: str, payload: dict[str, Any], out_dir: Path, args: argparse.Namespace | None = None,
               settings: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/<name>.json`` (quick runs: ``<name>.quick.json``) with machine and settings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quick = bool(getattr(args, "quick", False))
    doc = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": settings or {},
        **payload,
    }
    try:
        doc["machine"]["loadavg_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    path = out_dir / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    print(f"\nwrote {path}", flush=True)
    return path


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Workdir:
    """A temporary folder (removed at exit) or a given one (kept)."""

    def __init__(self, path: Path | None, prefix: str) -> None:
        import tempfile

        self._tmp = None if path is not None else tempfile.TemporaryDirectory(prefix=f"kdcache-bench-{prefix}-")
        self.path = Path(path) if path is not None else Path(self._tmp.name)
        self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
