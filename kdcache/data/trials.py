"""Verification trial lists.

Two line formats, detected per line:
- VoxCeleb (``veri_test2.txt``): ``<1|0> <enroll> <test>``
- Kaldi: ``<enroll> <test> <target|nontarget>``
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdcache.data.text import read_text_lines
from kdcache.errors import KdcacheError

_KALDI_LABELS = {"target": True, "nontarget": False}
_VOX_LABELS = {"1": True, "0": False}


@dataclass(frozen=True)
class Trial:
    enroll: str
    test: str
    target: bool


def parse_trial_line(line: str, where: str) -> Trial:
    """One trial from a line in either format; KdcacheError naming ``where`` (file:line) otherwise."""
    parts = line.split()
    if len(parts) == 3:
        if parts[0] in _VOX_LABELS:
            return Trial(parts[1], parts[2], _VOX_LABELS[parts[0]])
        if parts[2] in _KALDI_LABELS:
            return Trial(parts[0], parts[1], _KALDI_LABELS[parts[2]])
    raise KdcacheError(f"{where}: expected '<1|0> <enroll> <test>' or "
                       f"'<enroll> <test> <target|nontarget>', got {line.strip()!r}")


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Trials of a list file, in file order (blank lines skipped)."""
    path = Path(path)
    trials = [parse_trial_line(line, f"{path}:{n}")
              for n, line in enumerate(read_text_lines(path, "trial list"), start=1) if line.strip()]
    if not trials:
        raise KdcacheError(f"{path}: trial list is empty")
    return trials


def write_trials(path: str | os.PathLike, trials: Iterable[Trial]) -> None:
    """Write ``trials`` in VoxCeleb format (``1 enroll test`` / ``0 enroll test``)."""
    lines = []
    for t in trials:
        if any(c.isspace() for c in t.enroll + t.test) or not t.enroll or not t.test:
            raise KdcacheError(f"{path}: utterance ids must be non-empty without spaces: {t}")
        lines.append(f"{int(t.target)} {t.enroll} {t.test}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
