"""A small VoxCeleb-shaped tree from the synthetic speaker corpus, for tests and demos of the recipe.

Layout under ``out`` (as the real corpora are distributed)::

    voxceleb2/dev/aac/idNNNNN/<video>/<n>.m4a        AAC-LC, 16 kHz mono (training speakers id000NN)
    voxceleb1/wav/idNNNNN/<video>/<n>.wav            PCM16, 16 kHz mono (evaluation speakers id1NNNN)
    voxceleb1/{veri_test2,list_test_all2,list_test_hard2}.txt   trials "1 enroll test", VoxCeleb's format
    musan/{noise/free-sound,music/fma,speech/librivox}/*.wav
    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/RoomNNN-NNNNN.wav

As in VoxCeleb: Vox1-O uses a few test speakers, Vox1-E every VoxCeleb1 speaker, and Vox1-H's
non-target pairs share the speakers' gender (VoxCeleb's H pairs share nationality and gender).
The audio comes from :func:`kdcache.data.synthetic.synthesize_speaker`; same arguments, same audio
(the AAC bytes also depend on the FFmpeg build of PyAV).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import soundfile as sf

from kdcache.data.m4a import encode_m4a
from kdcache.data.synthetic import make_noises, make_rirs, make_trials
from kdcache.data.trials import Trial, write_trials
from kdcache.data.voices import SR, make_voice, synthesize_speaker
from kdcache.errors import KdcacheError

_TOKEN = string.ascii_letters + string.digits + "-_"
_TAG = 0x566F78  # "Vox": separates these draws from the synthetic corpus' own


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_TAG, *map(int, key)]))


def _speaker_files(seed: int, index: int, spk: str, utterances: int, seconds: float) -> tuple[list[int], list[int], list[str]]:
    """(session, length in samples, ``spk/video/n``) of each utterance: 1-3 videos of 11-character ids,
    utterances numbered from 00001 within each video."""
    r = _rng(seed, index)
    n_videos = int(r.integers(1, min(3, utterances) + 1))
    sessions = sorted(list(range(n_videos)) + r.integers(0, n_videos, utterances - n_videos).tolist())
    videos = ["".join(_TOKEN[i] for i in r.integers(0, len(_TOKEN), 11)) for _ in range(n_videos)]
    lengths = [int(round(seconds * SR * r.uniform(0.8, 1.2))) for _ in sessions]
    counts: dict[int, int] = {}
    names = []
    for s in sessions:
        counts[s] = counts.get(s, 0) + 1
        names.append(f"{spk}/{videos[s]}/{counts[s]:05d}")
    return sessions, lengths, names


def _hard_trials(ids: list[str], speakers: list[str], female: dict[str, bool], num: int, seed: int) -> list[Trial]:
    """Half target pairs, half non-target pairs of two speakers of the same gender (no repeated pair)."""
    r = _rng(seed, 1 << 20)
    by_spk: dict[str, list[str]] = {}
    for u, s in zip(ids, speakers):
        by_spk.setdefault(s, []).append(u)
    spks = sorted(by_spk)
    same = [(a, b) for i, a in enumerate(spks) for b in spks[i + 1:] if female[a] == female[b]]
    if not same:
        raise KdcacheError("synthetic VoxCeleb: Vox1-H needs two VoxCeleb1 speakers of the same gender")
    chosen: dict[tuple[str, str], bool] = {}
    for target in (True, False):
        for _ in range(50 * num):
            if sum(v == target for v in chosen.values()) >= num // 2:
                break
            if target:
                s = spks[int(r.integers(len(spks)))]
                a, b = r.choice(len(by_spk[s]), 2, replace=False)
                pair = (by_spk[s][a], by_spk[s][b])
            else:
                sa, sb = same[int(r.integers(len(same)))]
                pair = (by_spk[sa][int(r.integers(len(by_spk[sa])))], by_spk[sb][int(r.integers(len(by_spk[sb])))])
            chosen.setdefault(tuple(sorted(pair)), target)
    return sorted((Trial(a, b, t) for (a, b), t in chosen.items()), key=lambda t: (t.enroll, t.test))


def _music(seed: int, k: int, seconds: float) -> np.ndarray:
    """A few seconds of chords: harmonic tones with note envelopes; [N] float64, peak 0.5."""
    r = _rng(seed, 2 << 20, k)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n)
    beat = r.uniform(0.25, 0.6)
    for start in np.arange(0.0, seconds, beat):
        env = np.where(t >= start, np.exp(-(t - start) * r.uniform(2, 6)), 0.0)
        for f in 110.0 * 2 ** (r.integers(0, 36, 3) / 12):
            out += env * sum(np.sin(2 * np.pi * f * h * t) / h ** 1.5 for h in range(1, 5))
    return 0.5 * out / np.max(np.abs(out))


def _write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = x if x.dtype == np.int16 else np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    sf.write(str(path), pcm, SR, subtype="PCM_16")


def make_synthetic_voxceleb(out: str | Path, vox2_speakers: int = 8, vox1_speakers: int = 6,
                            vox1_o_speakers: int = 3, utterances_per_speaker: int = 4, seconds: float = 1.5,
                            num_trials: int = 60, seed: int = 0) -> Path:
    """Write the tree (module docstring) under ``out``; returns ``out``."""
    out = Path(out)
    if vox2_speakers < 2 or vox1_speakers < 3 or not 2 <= vox1_o_speakers <= vox1_speakers:
        raise KdcacheError("synthetic VoxCeleb: need >= 2 VoxCeleb2 speakers, >= 3 VoxCeleb1 speakers and "
                           "2 <= Vox1-O speakers <= VoxCeleb1 speakers")
    if utterances_per_speaker < 2 or seconds <= 0:
        raise KdcacheError("synthetic VoxCeleb: need >= 2 utterances per speaker and seconds > 0")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KdcacheError(f"{out}: exists and is not an empty folder (old files would mix in)")
    vox1: dict[str, list[str]] = {"ids": [], "speakers": []}
    female: dict[str, bool] = {}
    for index in range(vox2_speakers + vox1_speakers):
        is_vox2 = index < vox2_speakers
        spk = f"id{12 + index:05d}" if is_vox2 else f"id{10001 + index - vox2_speakers:05d}"
        sessions, lengths, names = _speaker_files(seed, index, spk, utterances_per_speaker, seconds)
        waves = synthesize_speaker(seed, index, sessions, lengths)
        for name, x in zip(names, waves):
            if is_vox2:
                path = out / "voxceleb2" / "dev" / "aac" / f"{name}.m4a"
                path.parent.mkdir(parents=True, exist_ok=True)
                encode_m4a(path, x)
            else:
                _write_wav(out / "voxceleb1" / "wav" / f"{name}.wav", x)
                vox1["ids"].append(f"{name}.wav")
                vox1["speakers"].append(spk)
        if not is_vox2:
            female[spk] = make_voice(seed, index, 2.5).female
    o_spk = sorted(female)[:vox1_o_speakers]
    o = [(u, s) for u, s in zip(vox1["ids"], vox1["speakers"]) if s in o_spk]
    v1 = out / "voxceleb1"
    write_trials(v1 / "veri_test2.txt", make_trials([u for u, _ in o], [s for _, s in o], num_trials, seed))
    write_trials(v1 / "list_test_all2.txt", make_trials(vox1["ids"], vox1["speakers"], num_trials, seed + 1))
    write_trials(v1 / "list_test_hard2.txt", _hard_trials(vox1["ids"], vox1["speakers"], female, num_trials, seed))

    noises = make_noises(seed, seconds=3.0)
    for k, name in enumerate(sorted(noises)):
        _write_wav(out / "musan" / "noise" / "free-sound" / f"noise-free-sound-{k:04d}.wav", noises[name])
    for k in range(3):
        _write_wav(out / "musan" / "music" / "fma" / f"music-fma-{k:04d}.wav", _music(seed, k, 4.0))
        (x,) = synthesize_speaker(seed + 7919, 200000 + k, [0], [int(4.0 * SR)], noise_snr_db=(40.0, 40.0))
        _write_wav(out / "musan" / "speech" / "librivox" / f"speech-librivox-{k:04d}.wav", x)
    rirs = make_rirs(seed, count=6)
    for k, name in enumerate(sorted(rirs)):
        room = ("smallroom", "mediumroom", "largeroom")[k // 2]
        _write_wav(out / "RIRS_NOISES" / "simulated_rirs" / room / "Room001" / f"Room001-{k % 2 + 1:05d}.wav",
                   rirs[name])
    params = dict(vox2_speakers=vox2_speakers, vox1_speakers=vox1_speakers, vox1_o_speakers=vox1_o_speakers,
                  utterances_per_speaker=utterances_per_speaker, seconds=seconds, num_trials=num_trials, seed=seed)
    (out / "README.txt").write_text(
        "A VoxCeleb-shaped tree of synthetic speakers written by kdcache (kdcache.data.voxceleb_synthetic).\n"
        "Not real speech: for tests and demos of recipes/voxceleb only.\n\nGenerated with:\n"
        + json.dumps(params, indent=2) + "\n")
    return out
