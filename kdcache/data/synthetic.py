"""A deterministic synthetic speaker corpus (source-filter speech), written as a VoxCeleb tree.

Layout under ``out``::

    wav/<spk>/<session>/<nnnnn>.wav   16 kHz mono PCM16 (spk ``id10000``..., session 11 chars)
    train/wav.scp, train/utt2spk       the training speakers (paths ``../wav/...``)
    test/wav.scp, test/utt2spk         other speakers; ids = paths relative to ``wav/``
    test/trials.txt                    VoxCeleb format ``1|0 enroll test``, half target
    noise/*.wav, rir/*.wav             augmentation material (coloured / babble / hum noise; RIRs)
    README.txt

Signal model: ``kdcache.data.voices`` (voices, sessions, source-filter synthesis).

Identity is spread over several weak cues; the difficulty knobs are ``speaker_spread`` (scales
between-speaker differences), ``session_variability`` (scales within-speaker session / utterance
variation) and ``noise_snr_db`` (background SNR range). At the defaults (0.5, 1.5, 5-30 dB) an LDA
on per-utterance fbank statistics gives about 13% EER on the default test trials (about 5% with
both knobs at 1.0); the SNR range matters much less than the other two.
Every random draw comes from ``np.random.default_rng(np.random.SeedSequence([seed, tag, ...]))``
per speaker / session / utterance (torch generators seeded from those for the STFT-domain noise),
and no result depends on the thread or process count, so the same arguments give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import string
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from kdcache.data.trials import Trial, write_trials
from kdcache.data.voices import _TAG_LAYOUT, _TAG_NOISE, _TAG_RIR, _TAG_TRIALS, SR, _rng, synthesize_speaker
from kdcache.errors import KdcacheError

_TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


def _token(seed: int, speaker: int, session: int) -> str:
    r = _rng(seed, _TAG_LAYOUT, speaker, session)
    return "".join(_TOKEN_CHARS[i] for i in r.integers(0, len(_TOKEN_CHARS), 11))


def _layout(seed: int, index: int, utterances: int, seconds: float,
            duration_jitter: float) -> tuple[list[int], list[int], list[str]]:
    """(session of each utterance, lengths in samples, relative paths) of one speaker."""
    r = _rng(seed, _TAG_LAYOUT, index)
    n_sessions = int(r.integers(1, max(1, min(utterances, 6)) + 1))
    sessions = np.sort(np.concatenate([np.arange(n_sessions),
                                       r.integers(0, n_sessions, utterances - n_sessions)]))
    sessions = sessions[:utterances].tolist()
    lengths = [int(round(seconds * SR * r.uniform(1 - duration_jitter, 1 + duration_jitter)))
               for _ in range(utterances)]
    spk = f"id{10000 + index:05d}"
    paths, counts = [], {}
    for s in sessions:
        counts[s] = counts.get(s, 0) + 1
        paths.append(f"{spk}/{_token(seed, index, s)}/{counts[s]:05d}.wav")
    return sessions, lengths, paths


def make_trials(ids: Sequence[str], speakers: Sequence[str], num_trials: int,
                seed: int) -> list[Trial]:
    """Half target, half non-target trials over ``ids`` (no repeated pair), sorted by enroll."""
    r = _rng(seed, _TAG_TRIALS)
    by_spk: dict[str, list[str]] = {}
    for u, s in zip(ids, speakers):
        by_spk.setdefault(s, []).append(u)
    spks = sorted(by_spk)
    n_target_pairs = sum(len(v) * (len(v) - 1) // 2 for v in by_spk.values())
    half = min(num_trials // 2, n_target_pairs)
    if len(spks) < 2 or half == 0:
        raise KdcacheError("synthetic corpus: trials need at least 2 test speakers with 2 utterances")
    chosen: dict[tuple[str, str], bool] = {}
    for target in (True, False):
        count = 0
        while count < half:
            if target:
                s = spks[int(r.integers(len(spks)))]
                if len(by_spk[s]) < 2:
                    continue
                a, b = r.choice(len(by_spk[s]), 2, replace=False)
                pair = (by_spk[s][a], by_spk[s][b])
            else:
                sa, sb = r.choice(len(spks), 2, replace=False)
                pair = (by_spk[spks[sa]][int(r.integers(len(by_spk[spks[sa]])))],
                        by_spk[spks[sb]][int(r.integers(len(by_spk[spks[sb]])))])
            key = tuple(sorted(pair))
            if key in chosen:
                continue
            chosen[key] = target
            count += 1
    return sorted((Trial(a, b, t) for (a, b), t in chosen.items()),
                  key=lambda t: (t.enroll, t.test))


def _write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, SR, subtype="PCM_16")


def _write_list(folder: Path, paths: list[str], speakers: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort(paths, kind="stable")
    (folder / "wav.scp").write_text("".join(f"{paths[i]} ../wav/{paths[i]}\n" for i in order))
    (folder / "utt2spk").write_text("".join(f"{paths[i]} {speakers[i]}\n" for i in order))


def make_noises(seed: int, seconds: float = 6.0) -> dict[str, np.ndarray]:
    """About 8 noise recordings ([N] float64, peak 0.5): coloured, babble, hum, fan, clatter."""
    n = int(seconds * SR)
    r = _rng(seed, _TAG_NOISE)
    f = np.fft.rfftfreq(n, 1 / SR)

    def coloured(slope_db: float) -> np.ndarray:
        spec = np.fft.rfft(r.standard_normal(n)) * (np.maximum(f, 20.0) / 1000.0) ** (slope_db / 6.02)
        return np.fft.irfft(spec, n)

    t = np.arange(n) / SR
    hum = sum(np.sin(2 * np.pi * 50 * h * t + r.uniform(0, 6.3)) / h for h in (1, 2, 3, 5, 7))
    fan = coloured(-6) * (1 + 0.3 * np.sin(2 * np.pi * 23 * t)) + 0.3 * np.sin(2 * np.pi * 120 * t)
    clicks = np.zeros(n)
    clicks[r.integers(0, n, 40)] = r.uniform(-1, 1, 40)
    clatter = np.convolve(clicks, np.exp(-np.arange(400) / 60.0) * r.standard_normal(400), "same")
    babble = np.zeros(n)
    for k in range(6):
        (x,) = synthesize_speaker(seed + 7919, 100000 + k, [0], [n], noise_snr_db=(40.0, 40.0))
        babble += x / 32767.0
    out = {"white": r.standard_normal(n), "pink": coloured(-3), "brown": coloured(-6),
           "babble": babble, "hum": hum + 0.05 * coloured(-3), "fan": fan,
           "rumble": coloured(-9) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)),
           "clatter": clatter + 0.05 * coloured(-3)}
    return {k: 0.5 * v / np.max(np.abs(v)) for k, v in out.items()}


def make_rirs(seed: int, count: int = 8) -> dict[str, np.ndarray]:
    """Synthetic room impulse responses: direct path, early reflections, exponential tail
    (RT60 from 0.2 to 0.9 s); [N] float64, peak 0.9."""
    r = _rng(seed, _TAG_RIR)
    out = {}
    for k in range(count):
        rt60 = 0.2 + 0.7 * k / max(count - 1, 1) * r.uniform(0.9, 1.1)
        n = int(min(1.2 * rt60, 1.0) * SR)
        t = np.arange(n) / SR
        h = r.standard_normal(n) * np.exp(-6.91 * t / rt60) * 0.3
        d = int(r.uniform(0.002, 0.01) * SR)
        h[:d] = 0.0
        h[d] = 1.0
        refl = d + r.integers(int(0.003 * SR), int(0.05 * SR), 8)
        h[refl] += r.uniform(0.3, 0.7, 8) * r.choice([-1.0, 1.0], 8)
        h = np.convolve(h, [0.5, 0.5], "same")  # mild air absorption
        out[f"rir-{k:02d}-rt{int(round(rt60 * 1000)):03d}ms"] = 0.9 * h / np.max(np.abs(h))
    return out


def make_synthetic_corpus(out: Path | str, speakers: int = 200, utterances_per_speaker: int = 20,
                          seconds: float = 3.0, test_speakers: int = 40, seed: int = 0,
                          progress: Callable[[int], None] | None = None, *,
                          speaker_spread: float = 2.5, session_variability: float = 0.7,
                          noise_snr_db: tuple[float, float] = (5.0, 30.0),
                          duration_jitter: float = 0.2, num_trials: int = 4000,
                          workers: int | None = None, test_speaker_offset: int | None = None,
                          test_utterances_per_speaker: int | None = None) -> Path:
    """Write the corpus under ``out`` (see the module docstring); returns ``out``.

    - ``speaker_spread`` (2.5): scales between-speaker parameter differences (larger = easier).
    - ``session_variability`` (0.7): scales session / utterance variation (larger = harder).
      Tuned so that the README's quick-start teacher (a ResNet34 with m_channels 4, 6 epochs of 1 s
      crops on 2 CPU cores) lands between 1% and 10% EER and a same-recipe x-vector well above it
      (measured: spread 0.5 / variability 1.5, the first setting, left every short CPU run above 18%
      EER; 2.0 / 0.7 gave 10.2% vs 25.3%).
    - ``noise_snr_db`` ((5, 30)): background-noise SNR range in dB (lower = harder).
    - ``duration_jitter`` (0.2): utterance lengths are ``seconds * U(1 - j, 1 + j)``.
    - ``num_trials`` (4000): trial count, half target (fewer if the test set is too small).
    - ``test_speaker_offset`` (default ``speakers``): speaker index of the first test speaker. Voices,
      sessions and paths depend only on (seed, index), so corpora with different ``speakers`` but the
      same offset, ``test_speakers``, ``test_utterances_per_speaker``, ``seconds``, ``seed`` and
      knobs have byte-identical test speakers, ``test/`` lists and trials (ENSKD's speaker-count
      experiment). It must be >= ``speakers`` (test and training speakers never overlap).
    - ``test_utterances_per_speaker`` (default ``utterances_per_speaker``): utterances of each test
      speaker.
    ``progress(n)`` is called after each speaker with the number of utterances just written
    (``tqdm.update`` fits). ``workers`` processes synthesise speakers in parallel (default: 2 on a
    multi-core machine from 16 speakers on, else 1); the bytes do not depend on it.
    """
    out = Path(out)
    if speakers < 1 or test_speakers < 2 or utterances_per_speaker < 2 or seconds <= 0:
        raise KdcacheError("synthetic corpus: need speakers >= 1, test_speakers >= 2, "
                           "utterances_per_speaker >= 2, seconds > 0")
    if not 0 <= duration_jitter < 1 or noise_snr_db[0] > noise_snr_db[1]:
        raise KdcacheError("synthetic corpus: need 0 <= duration_jitter < 1 and a valid SNR range")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KdcacheError(f"{out}: exists and is not an empty folder (old files would mix in)")
    test_offset = speakers if test_speaker_offset is None else int(test_speaker_offset)
    test_utts = utterances_per_speaker if test_utterances_per_speaker is None else int(test_utterances_per_speaker)
    if test_offset < speakers:
        raise KdcacheError(f"synthetic corpus: test_speaker_offset {test_offset} must be >= speakers "
                           f"({speakers}): test speakers would be training speakers")
    if test_utts < 2:
        raise KdcacheError("synthetic corpus: need test_utterances_per_speaker >= 2")
    utterances = speakers * utterances_per_speaker + test_speakers * test_utts
    _check_free_space(out, utterances * seconds * (1 + duration_jitter) * SR * 2)  # PCM16, longest jittered length
    if workers is None:  # a pool only pays off for more than a few speakers
        workers = min(2, os.cpu_count() or 1) if speakers + test_speakers >= 16 else 1
    jobs = [(i, utterances_per_speaker) for i in range(speakers)]
    jobs += [(test_offset + j, test_utts) for j in range(test_speakers)]
    _write_speakers(out, jobs, speakers, seconds, seed, progress,
                    dict(speaker_spread=speaker_spread, session_variability=session_variability,
                         noise_snr_db=tuple(noise_snr_db)), duration_jitter, num_trials, workers)
    for name, x in make_noises(seed).items():
        _write_wav(out / "noise" / f"{name}.wav", np.round(x * 32767).astype(np.int16))
    for name, x in make_rirs(seed).items():
        _write_wav(out / "rir" / f"{name}.wav", np.round(x * 32767).astype(np.int16))
    params = dict(speakers=speakers, utterances_per_speaker=utterances_per_speaker,
                  seconds=seconds, test_speakers=test_speakers, seed=seed,
                  speaker_spread=speaker_spread, session_variability=session_variability,
                  noise_snr_db=list(noise_snr_db), duration_jitter=duration_jitter,
                  num_trials=num_trials)
    if test_speaker_offset is not None or test_utterances_per_speaker is not None:
        params.update(test_speaker_offset=test_offset, test_utterances_per_speaker=test_utts)
    (out / "README.txt").write_text(_README.format(params=json.dumps(params, indent=2)))
    return out


def _check_free_space(out: Path, needed_bytes: float) -> None:
    """Refuse, before writing a byte, a corpus that cannot fit on the disk that will hold ``out``."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise KdcacheError(f"{out}: {existing} is a file, not a folder; choose another output path")
    free = shutil.disk_usage(existing).free
    if needed_bytes > free:
        raise KdcacheError(f"{out}: the corpus needs about {needed_bytes / 2**30:,.1f} GiB and {existing} has "
                           f"{free / 2**30:,.1f} GiB free; choose fewer speakers, utterances or seconds")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _speaker_audio(out: Path, seed: int, job: tuple[int, int], seconds: float,
                   duration_jitter: float, knobs: dict) -> int:
    index, utterances = job
    sessions, lengths, paths = _layout(seed, index, utterances, seconds, duration_jitter)
    # One intra-op thread: the per-speaker tensors are small, and two threads measured 2.5x more
    # CPU time (75 s vs 29 s for the default corpus). The bytes do not depend on it.
    with _torch_threads(1):
        waves = synthesize_speaker(seed, index, sessions, lengths, **knobs)
    for p, x in zip(paths, waves):
        _write_wav(out / "wav" / p, x)
    return utterances


def _write_speakers(out: Path, jobs: list[tuple[int, int]], speakers: int, seconds: float,
                    seed: int, progress: Callable[[int], None] | None, knobs: dict,
                    duration_jitter: float, num_trials: int, workers: int) -> None:
    """Audio, wav.scp / utt2spk of train and test, and the trial list.

    ``jobs`` holds (speaker index, utterances) pairs; the first ``speakers`` are the training ones.
    """
    total = len(jobs)
    job = functools.partial(_speaker_audio, out, seed, seconds=seconds,
                            duration_jitter=duration_jitter, knobs=knobs)
    pool = None
    if workers > 1 and total > 1:
        # fork: the children inherit the imported modules (no second torch import).
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        done = pool.map(job, jobs) if pool is not None else map(job, jobs)
        for written in done:
            if progress is not None:
                progress(written)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    lists: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for position, (index, utterances) in enumerate(jobs):
        paths = _layout(seed, index, utterances, seconds, duration_jitter)[2]
        part = lists["train" if position < speakers else "test"]
        part[0].extend(paths)
        part[1].extend(p.split("/", 1)[0] for p in paths)
    for name, (paths, spks) in lists.items():
        _write_list(out / name, paths, spks)
    write_trials(out / "test" / "trials.txt",
                 make_trials(lists["test"][0], lists["test"][1], num_trials, seed))


_README = """Synthetic speaker corpus written by kdcache (kdcache.data.synthetic).

Source-filter speech: per-speaker pitch, vocal-tract length, formants, spectral tilt, breathiness;
per-session channel, background noise and pitch/effort shifts. Not real speech: use it for demos
and tests only.

wav/<speaker>/<session>/<nnnnn>.wav   16 kHz mono PCM16
train/wav.scp, train/utt2spk           training speakers (paths relative to train/)
test/wav.scp, test/utt2spk             other speakers (ids = paths relative to wav/)
test/trials.txt                        VoxCeleb format: "1|0 enroll test"
noise/*.wav, rir/*.wav                 augmentation material (--noise-dir / --reverb-dir)

Generated with:
{params}
"""
