"""Corpus index: the utterances ``(id, path, speaker, num_samples)`` of a speaker corpus.

Two layouts are read:

- Kaldi / WeSpeaker: a folder holding ``wav.scp`` (``<id> <path>``, path relative to that folder or
  absolute) and ``utt2spk`` (``<id> <speaker>``).
- VoxCeleb tree: ``<speaker>/<video>/<utt>.wav`` under a root; the id is the relative path with ``/``
  (as in VoxCeleb trial lists) and the speaker is its first component.

Only the headers are read (``soundfile.info``). Audio must be 16 kHz mono.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from kdcache.data.audio import unreadable_audio
from kdcache.data.text import read_text_lines
from kdcache.errors import KdcacheError

from .wavheader import wav_header

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac")
_ARK_OFFSET = re.compile(r"\.ark:\d+$")


@dataclass(frozen=True)
class Utterance:
    """One utterance: ``num_samples`` samples at 16 kHz, mono."""

    id: str
    path: Path
    speaker: str
    num_samples: int


class StringColumn:
    """Strings stored as one UTF-8 buffer plus offsets: no Python object per entry.

    A million utterance ids or paths as Python strings inside ``Utterance`` objects cost ~1 kB each, and
    a forked DataLoader worker copies every page of them once its garbage collector walks them
    (copy-on-write); one buffer is never touched by the collector. Not numpy's ``StringDType``: in numpy
    2.4, ``searchsorted`` on it fails for a ``str`` needle (MemoryError) and gives wrong positions with
    ``sorter``, which the id lookup needs.
    """

    def __init__(self, strings: Iterable[str]) -> None:
        encoded = [x.encode("utf-8") for x in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = b"".join(encoded)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._buffer[self._offsets[i]:self._offsets[i + 1]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        off, buf = self._offsets, self._buffer
        return (buf[off[i]:off[i + 1]].decode("utf-8") for i in range(len(self)))


class Corpus:
    """An ordered list of utterances; sorted speaker ids define the class indices.

    Stored column by column (ids, paths, speaker indices, lengths), so a corpus of a million utterances
    takes ~150 MB and no per-utterance Python objects; ``corpus[i]`` and iteration build ``Utterance``
    values on demand. Ids are found by binary search over their sorted order.
    """

    def __init__(self, root: Path, utterances: Iterable[Utterance]) -> None:
        ids, paths, speakers, lengths = [], [], [], []
        for u in utterances:
            ids.append(u.id)
            paths.append(str(u.path))
            speakers.append(u.speaker)
            lengths.append(u.num_samples)
        self.root = Path(root)
        self.speakers: list[str] = sorted(set(speakers))
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self._speaker = np.array([self._speaker_index[x] for x in speakers], dtype=np.int32)
        self._num_samples = np.array(lengths, dtype=np.int64)
        self._num_samples.flags.writeable = False
        self._ids = StringColumn(ids)
        self._paths = StringColumn(paths)
        self._order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
        for a, b in zip(self._order[:-1], self._order[1:]):
            if ids[a] == ids[b]:
                raise KdcacheError(f"{self.root}: duplicate utterance id {ids[a]!r}")

    def __len__(self) -> int:
        return len(self._num_samples)

    def __iter__(self) -> Iterator[Utterance]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Utterance:
        if not -len(self) <= i < len(self):
            raise IndexError(f"utterance {i} of a corpus of {len(self)}")
        i = int(i) % len(self)
        return Utterance(self._ids[i], Path(self._paths[i]), self.speakers[self._speaker[i]],
                         int(self._num_samples[i]))

    def _find(self, utt_id: str) -> int | None:
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._ids[int(self._order[mid])] < utt_id:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self) and self._ids[int(self._order[lo])] == utt_id:
            return int(self._order[lo])
        return None

    def __contains__(self, utt_id: object) -> bool:
        return isinstance(utt_id, str) and self._find(utt_id) is not None

    def __repr__(self) -> str:
        return (f"Corpus(root={str(self.root)!r}, utterances={len(self)}, "
                f"speakers={len(self.speakers)})")

    def index(self, utt_id: str) -> int:
        """Position of utterance ``utt_id``; KdcacheError if absent."""
        i = self._find(utt_id)
        if i is None:
            raise KdcacheError(f"{self.root}: no utterance {utt_id!r} in the corpus")
        return i

    def by_id(self, utt_id: str) -> Utterance:
        """The utterance with id ``utt_id``; KdcacheError if absent."""
        return self[self.index(utt_id)]

    def path(self, i: int) -> Path:
        """The audio file of utterance ``i``."""
        return Path(self._paths[i])

    def speaker_index(self, speaker: str) -> int:
        """Class index of ``speaker`` (its position in the sorted speaker list)."""
        try:
            return self._speaker_index[speaker]
        except KeyError:
            raise KdcacheError(f"{self.root}: no speaker {speaker!r} in the corpus") from None

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def utterance_speakers(self) -> list[str]:
        """[U] speaker id of each utterance."""
        return [self.speakers[k] for k in self._speaker]

    @property
    def labels(self) -> np.ndarray:
        """[U] int64 class index of each utterance."""
        return self._speaker.astype(np.int64)

    @property
    def num_samples(self) -> np.ndarray:
        """[U] int64 length of each utterance in samples (read-only)."""
        return self._num_samples

    def manifest_sha256(self) -> str:
        """sha256 (hex) over ``(id, speaker, num_samples)`` in order.

        Paths are left out, so a moved or copied corpus keeps its hash.
        """
        h = hashlib.sha256()
        for utt_id, k, n in zip(self._ids, self._speaker, self._num_samples):
            h.update(json.dumps([utt_id, self.speakers[k], int(n)], ensure_ascii=True).encode())
            h.update(b"\n")
        return h.hexdigest()

    def subset(self, keep: Iterable[str] | Callable[[Utterance], bool]) -> Corpus:
        """The utterances whose id is in ``keep`` (or for which ``keep(u)`` is true), in order."""
        if callable(keep):
            return Corpus(self.root, (u for u in self if keep(u)))
        wanted = set(keep)
        missing = sorted(u for u in wanted if u not in self)
        if missing:
            raise KdcacheError(f"{self.root}: no utterance {missing[0]!r} in the corpus")
        return Corpus(self.root, (u for u in self if u.id in wanted))


def load_corpus(path: str | os.PathLike) -> Corpus:
    """Index a corpus: a folder with ``wav.scp`` + ``utt2spk`` (or that ``wav.scp``), else a VoxCeleb
    tree. Utterances are sorted by id."""
    path = Path(path)
    if path.is_file() and path.name == "wav.scp":
        return _load_kaldi(path.parent)
    if not path.exists():
        raise KdcacheError(f"{path}: corpus not found")
    if not path.is_dir():
        raise KdcacheError(f"{path}: not a folder (expected a wav.scp folder or a VoxCeleb tree)")
    if (path / "wav.scp").exists():
        return _load_kaldi(path)
    return _load_voxceleb(path)


def check_utterance_id(utt_id: str, where: str) -> None:
    """Refuse ids that could escape the corpus root (absolute, ``..``, backslashes)."""
    p = PurePosixPath(utt_id)
    if p.is_absolute() or ".." in p.parts or "\\" in utt_id or re.match(r"^[A-Za-z]:", utt_id):
        raise KdcacheError(f"{where}: utterance id {utt_id!r} must be relative without '..'")


def audio_info(path: Path, where: str | None = None) -> int:
    """Samples in a 16 kHz mono audio file; otherwise KdcacheError naming the file (and ``where``)."""
    at = f"{where}: {path}" if where else f"{path}"
    try:  # a plain WAV header is read directly (much faster at a million files); libsndfile for the rest
        header = wav_header(path)
    except OSError:
        header = None
    if header is None:
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError) as e:  # sf.LibsndfileError is a RuntimeError
            raise unreadable_audio(path, e, at) from None
        header = (info.samplerate, info.channels, info.frames)
    samplerate, channels, frames = header
    if samplerate != SAMPLE_RATE:
        raise KdcacheError(f"{at}: sample rate {samplerate} Hz, expected {SAMPLE_RATE} "
                           "(resample the corpus to 16 kHz)")
    if channels != 1:
        raise KdcacheError(f"{at}: {channels} channels, expected mono")
    if frames <= 0:
        raise KdcacheError(f"{at}: no samples")
    return int(frames)


def read_table(path: Path, what: str) -> list[tuple[int, str, str]]:
    """Lines ``<key> <value>`` of a Kaldi table as (line number, key, value); blank lines skipped."""
    rows = []
    for n, line in enumerate(read_text_lines(path, what), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2:
            raise KdcacheError(f"{path}:{n}: expected '<id> <value>', got {line.strip()!r}")
        rows.append((n, parts[0], parts[1].strip()))
    if not rows:
        raise KdcacheError(f"{path}: {what} is empty")
    return rows


def _load_kaldi(folder: Path) -> Corpus:
    scp = folder / "wav.scp"
    u2s = folder / "utt2spk"
    speakers: dict[str, str] = {}
    for n, utt, spk in read_table(u2s, "utt2spk"):
        if len(spk.split()) != 1:
            raise KdcacheError(f"{u2s}:{n}: expected '<utterance> <speaker>', got {utt} {spk!r}")
        if utt in speakers:
            raise KdcacheError(f"{u2s}:{n}: duplicate utterance id {utt!r}")
        speakers[utt] = spk
    seen: set[str] = set()
    utts = []
    for n, utt, wav in read_table(scp, "wav.scp"):
        where = f"{scp}:{n}"
        if wav.endswith("|") or wav.startswith("|"):
            raise KdcacheError(f"{where}: pipe commands in wav.scp are not supported; "
                               "convert the audio to 16 kHz mono wav files first")
        if _ARK_OFFSET.search(wav):
            raise KdcacheError(f"{where}: ark offsets in wav.scp are not supported; use wav files")
        check_utterance_id(utt, where)
        if utt in seen:
            raise KdcacheError(f"{where}: duplicate utterance id {utt!r}")
        seen.add(utt)
        if utt not in speakers:
            raise KdcacheError(f"{where}: utterance {utt!r} is missing from {u2s}")
        p = Path(wav)
        if not p.is_absolute():
            p = folder / p
        utts.append(Utterance(utt, p, speakers[utt], audio_info(p, where)))
    utts.sort(key=lambda u: u.id)
    return Corpus(folder, utts)


def _walk_audio(root: Path) -> list[Path]:
    """Audio files under root. Links are followed (corpora are often assembled from symlinked folders)
    but must stay inside the root: the utterance id is the path under the root, and a cache's ids must
    never name a file elsewhere. A link out of the root, or a folder reached twice (a link loop), is
    refused; audio kept elsewhere is listed explicitly in a wav.scp folder instead."""
    real_root = root.resolve()
    seen: dict[Path, str] = {}

    def inside(real: Path) -> bool:
        return real == real_root or real_root in real.parents

    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real_dir = Path(dirpath).resolve()
        if not inside(real_dir):
            raise KdcacheError(f"{dirpath}: links out of the corpus root {root} (to {real_dir}); links must "
                               "stay inside the root (list audio kept elsewhere in a wav.scp folder)")
        if real_dir in seen:
            raise KdcacheError(f"{dirpath}: is the folder {seen[real_dir]} again (a link loop or a linked "
                               "duplicate); each folder may appear once in a corpus")
        seen[real_dir] = dirpath
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.lower().endswith(AUDIO_SUFFIXES) and not f.startswith("."):
                p = Path(dirpath) / f
                if p.is_symlink() and not inside(p.resolve()):
                    raise KdcacheError(f"{p}: links out of the corpus root {root} (to {p.resolve()}); links "
                                       "must stay inside the root (list audio kept elsewhere in a wav.scp folder)")
                found.append(p)
    return found


def _load_voxceleb(root: Path) -> Corpus:
    files = _walk_audio(root)
    if not files:
        raise KdcacheError(f"{root}: no wav.scp and no .wav files found "
                           "(expected a wav.scp folder or a <speaker>/<video>/<utt>.wav tree)")
    utts = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        if "/" not in rel:
            raise KdcacheError(f"{p}: audio file directly under the corpus root; expected "
                               "<speaker>/<video>/<utt>.wav")
        utts.append(Utterance(rel, p, rel.split("/", 1)[0], audio_info(p)))
    utts.sort(key=lambda u: u.id)
    return Corpus(root, utts)
