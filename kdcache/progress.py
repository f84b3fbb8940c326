"""Progress bars that suit both a terminal and a log file.

On a terminal, :func:`progress_bar` is a plain ``tqdm`` bar redrawn in place. When its stream is not a
terminal (``> log``, CI, nohup), redraws would fill the file with carriage-return frames (a 6-minute
student run once wrote 41 KB of them), so the bar instead prints one plain newline-terminated line when
it starts, about every ``line_interval`` seconds (default 30; env ``KDCACHE_PROGRESS_INTERVAL``), and
once when it closes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

DEFAULT_LINE_INTERVAL_S = 30.0


class LineProgress(tqdm):
    """A tqdm bar that prints whole lines (no ``\\r``, no cursor moves): one per refresh."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # noqa: ARG002 (tqdm's signature)
        if msg == "":  # tqdm asks to clear the line: nothing to clear in a log
            return True
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:  # noqa: ARG002
        """Nothing to erase: earlier lines stay in the log."""

    def close(self) -> None:
        if getattr(self, "disable", True):
            return
        with self._lock:
            self.display()  # the final count and rate, on its own line
        self.disable = True
        self._decr_instances(self)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def line_interval_s() -> float:
    """Seconds between plain lines: ``KDCACHE_PROGRESS_INTERVAL`` if set, else 30."""
    text = os.environ.get("KDCACHE_PROGRESS_INTERVAL")
    try:
        return max(float(text), 0.0) if text else DEFAULT_LINE_INTERVAL_S
    except ValueError:
        return DEFAULT_LINE_INTERVAL_S


def progress_bar(*args: Any, file: TextIO | None = None, line_interval: float | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)`` on a terminal; a :class:`LineProgress` printing a line every
    ``line_interval`` seconds (default :func:`line_interval_s`) when ``file`` (default stderr) is not one."""
    stream = sys.stderr if file is None else file
    if _is_terminal(stream):
        return tqdm(*args, file=stream, **kwargs)
    interval = line_interval_s() if line_interval is None else line_interval
    kwargs.pop("dynamic_ncols", None)  # no terminal to measure
    kwargs.update(mininterval=interval, maxinterval=max(interval, 0.1), miniters=1, ascii=True)
    return LineProgress(*args, file=stream, **kwargs)
