"""Reading the text files users hand in (wav.scp, utt2spk, trial lists, speaker lists).

Files written on Windows or by some editors start with a UTF-8 byte-order mark (files joined with `cat` hold
one at the start of a line inside) and end lines with CR LF;
both are removed here, once, so that no id ever carries a stray ``\\ufeff`` or ``\\r``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdcache.errors import KdcacheError

BOM = "\ufeff"


def read_text_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of a UTF-8 text file, without a leading byte-order mark and without line ends
    (LF, CR LF or a lone CR). KdcacheError naming the file and ``what`` if it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KdcacheError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise KdcacheError(f"{path}: {what} is a folder, expected a text file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KdcacheError(f"{path}: cannot read {what}: {' '.join(str(e).split())}") from None
    return strip_text(text).split("\n") if text else []


def strip_text(text: str) -> str:
    """``text`` without byte-order marks (U+FEFF: the leading one, and any that ``cat`` carried inside;
    as a character it is an invisible no-break space, which no id should hold), with every CR LF or lone
    CR turned into LF."""
    return text.replace(BOM, "").replace("\r\n", "\n").replace("\r", "\n")
