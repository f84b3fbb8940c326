"""A deterministic synthetic speaker corpus (source-filter speech), written as a VoxCeleb tree.

Layout under ``out``::

    wav/<spk>/<session>/<nnnnn>.wav   16 kHz mono PCM16 (spk ``id10000``..., session 11 chars)
    train/wav.scp, train/utt2spk       the training speakers (paths ``../wav/...``)
    test/wav.scp, test/utt2spk         other speakers; ids = paths relative to ``wav/``
    test/trials.txt                    VoxCeleb format ``1|0 enroll test``, half target
    noise/*.wav, rir/*.wav             augmentation material (coloured / babble / hum noise; RIRs)
    README.txt

Signal model. Each speaker has a voice: mean pitch (male / female ranges), intonation depth, jitter,
shimmer, source spectral tilt, breathiness (aspiration noise), vocal-tract length (scales all
formants), per-formant offsets and bandwidths, a fixed high-frequency resonance, speaking rate, a
preferred vowel distribution and fricative colouring. An utterance is a sequence of syllables
(optional pause, optional fricative or plosive burst, a vowel whose F1-F3 targets come from a shared
inventory shifted by the speaker's formant scales) with a pitch contour (declination, slow drift,
accents). The glottal pulse train is filtered in the STFT domain by the time-varying formant
envelope; aspiration, frication and background noise are shaped noise added in the same domain.
Each session (video) adds a channel (band limits and random EQ bumps), background noise of a random
colour at a random SNR, and shifts of pitch, effort (tilt), articulation (formants), breathiness and
rate; each utterance varies those slightly and gets a random level.

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
import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import string
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from kdcache.data.trials import Trial, write_trials
from kdcache.errors import KdcacheError

SR = 16000
N_FFT = 320  # 20 ms frames: enough for 80 Hz formant bandwidths, and cheap
HOP = 160
FRAME_RATE = SR / HOP
_FREQS = np.arange(N_FFT // 2 + 1) * SR / N_FFT
# sqrt-Hann analysis and synthesis windows: their product (Hann) overlap-adds to 1 at 50% overlap.
_WINDOW = torch.hann_window(N_FFT, dtype=torch.float32).sqrt()

# Shared vowel inventory: F1-F3 of an adult male voice (Hz), after Peterson & Barney (1952).
VOWELS = np.array([
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410],
    [660, 1720, 2410], [490, 1350, 1690], [440, 1020, 2240], [390, 1990, 2550], [520, 1190, 2390],
], dtype=np.float64)
FORMANT_BW = np.array([80.0, 100.0, 140.0])  # Hz, scaled per speaker
# Consonants: (centre Hz, width in octaves, is a plosive burst, relative gain dB).
CONSONANTS = np.array([
    [5500, 0.45, 0, 0], [3000, 0.45, 0, 0], [4500, 1.5, 0, -8],  # s, sh, f
    [900, 1.0, 1, 3], [4000, 0.8, 1, 3], [1800, 0.5, 1, 3],  # p, t, k
])

_TAG_VOICE, _TAG_SESSION, _TAG_UTT, _TAG_TRIALS, _TAG_NOISE, _TAG_RIR, _TAG_LAYOUT = range(1, 8)
_TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


@dataclass(frozen=True)
class Voice:
    """Per-speaker parameters (all multiplicative factors are relative to an adult male)."""

    female: bool
    f0: float  # Hz, mean pitch
    f0_range: float  # octaves, intonation depth
    jitter: float  # relative pitch perturbation per frame
    shimmer: float  # relative amplitude perturbation per frame
    tilt: float  # dB/octave, glottal source slope (radiation +6 added separately)
    breath: float  # aspiration noise amplitude relative to the pulses
    formant_scale: np.ndarray  # [3] vocal-tract length x per-formant offsets
    bw_scale: float
    high_formants: np.ndarray  # [2] F4, F5 (Hz)
    peak: np.ndarray  # [3] extra resonance: frequency Hz, gain dB, width octaves
    rate: float  # syllables per second
    vowel_p: np.ndarray  # [len(VOWELS)] vowel preference
    fric_scale: float  # consonant centre-frequency factor
    fric_db: float  # consonant level relative to vowels


def make_voice(seed: int, index: int, spread: float = 1.0) -> Voice:
    """The voice of speaker ``index``; ``spread`` scales every deviation from the population mean."""
    r = _rng(seed, _TAG_VOICE, index)
    s = spread
    female = bool(r.random() < 0.5)
    vtl = (1.17 if female else 1.0) * np.exp(0.05 * s * r.standard_normal())
    return Voice(
        female=female,
        f0=float((205.0 if female else 118.0) * np.exp(0.13 * s * r.standard_normal())),
        f0_range=float(np.clip(0.12 * np.exp(0.35 * s * r.standard_normal()), 0.03, 0.4)),
        jitter=float(0.012 * np.exp(0.4 * s * r.standard_normal())),
        shimmer=float(0.06 * np.exp(0.4 * s * r.standard_normal())),
        tilt=float(-12.0 + 2.5 * s * r.standard_normal()),
        breath=float(np.clip(0.12 * np.exp(0.7 * s * r.standard_normal()), 0.01, 0.8)),
        formant_scale=vtl * np.exp(0.04 * s * r.standard_normal(3)),
        bw_scale=float(np.exp(0.2 * s * r.standard_normal())),
        high_formants=np.array([3500.0, 4500.0]) * vtl * np.exp(0.04 * s * r.standard_normal(2)),
        peak=np.array([r.uniform(2500, 6500), max(0.0, 6.0 + 3.0 * s * r.standard_normal()),
                       r.uniform(0.15, 0.4)]),
        rate=float(4.5 * np.exp(0.15 * s * r.standard_normal())),
        vowel_p=_softmax(0.6 * s * r.standard_normal(len(VOWELS))),
        fric_scale=float(np.sqrt(vtl) * np.exp(0.04 * s * r.standard_normal())),
        fric_db=float(-12.0 + 3.0 * s * r.standard_normal()),
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@dataclass(frozen=True)
class Session:
    """Per-session recording conditions."""

    highpass: float  # Hz
    lowpass: float  # Hz
    eq: np.ndarray  # [K, 3] bumps: centre Hz, width octaves, gain dB
    noise_slope: float  # dB/octave of the background noise
    snr: float  # dB
    f0_shift: float  # octaves
    tilt_shift: float  # dB/octave (vocal effort)
    formant_shift: np.ndarray  # [3] log factors (articulation)
    breath_shift: float  # log factor
    rate_shift: float  # log factor


def make_session(seed: int, speaker: int, session: int, variability: float,
                 snr_db: tuple[float, float]) -> Session:
    """Recording conditions and voice shifts of one session; ``variability`` scales them."""
    r = _rng(seed, _TAG_SESSION, speaker, session)
    v = variability
    k = 3
    return Session(
        highpass=float(60.0 * np.exp(r.uniform(0, np.log(5.0)) * min(v, 1.5))),
        lowpass=float(7800.0 / np.exp(r.uniform(0, np.log(2.2)) * min(v, 1.5))),
        eq=np.stack([np.exp(r.uniform(np.log(200), np.log(6000), k)), r.uniform(0.3, 1.2, k),
                     4.0 * v * r.standard_normal(k)], axis=1),
        noise_slope=float(r.uniform(-6.0, 0.0)),
        snr=float(r.uniform(*snr_db)),
        f0_shift=float(0.06 * v * r.standard_normal()),
        tilt_shift=float(1.5 * v * r.standard_normal()),
        formant_shift=0.025 * v * r.standard_normal(3),
        breath_shift=float(0.3 * v * r.standard_normal()),
        rate_shift=float(0.08 * v * r.standard_normal()),
    )


def _shifted_voice(voice: Voice, sess: Session, r: np.random.Generator, v: float) -> Voice:
    """The voice in one utterance: session shifts plus a little per-utterance variation."""
    return dataclasses.replace(
        voice,
        f0=voice.f0 * 2.0 ** (sess.f0_shift + 0.02 * v * r.standard_normal()),
        tilt=voice.tilt + sess.tilt_shift,
        formant_scale=voice.formant_scale * np.exp(sess.formant_shift
                                                   + 0.01 * v * r.standard_normal(3)),
        breath=voice.breath * np.exp(sess.breath_shift),
        rate=voice.rate * np.exp(sess.rate_shift),
    )


def _utterance_tracks(r: np.random.Generator, voice: Voice, n_frames: int) -> dict[str, np.ndarray]:
    """Frame-level controls ([n_frames] each; ``formants`` [3, n_frames])."""
    seconds = n_frames / FRAME_RATE
    m = int(seconds * voice.rate * 1.6) + 4
    pause = np.where(r.random(m) < 0.12, r.uniform(0.08, 0.3, m), 0.0)
    pause[0] = r.uniform(0.05, 0.25)  # leading silence
    cons = r.integers(0, len(CONSONANTS), m)
    burst = CONSONANTS[cons, 2] > 0
    has_cons = r.random(m) < 0.7
    cons_len = np.where(burst, r.uniform(0.05, 0.09, m), r.uniform(0.06, 0.13, m)) * has_cons
    vowel = r.choice(len(VOWELS), m, p=voice.vowel_p)
    vowel_len = r.uniform(0.5, 0.9, m) / voice.rate
    accent = r.standard_normal(m)

    # Segments in order: pause, consonant, vowel for each syllable; kind 0/1/2.
    dur = np.stack([pause, cons_len, vowel_len], axis=1).reshape(-1)
    kind = np.tile(np.arange(3), m)
    syl = np.repeat(np.arange(m), 3)
    ends = np.round(np.cumsum(dur) * FRAME_RATE).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    frames = np.arange(n_frames)
    seg = np.minimum(np.searchsorted(ends, frames, side="right"), len(ends) - 1)
    seg_len = np.maximum(ends[seg] - starts[seg], 1)
    pos = (frames - starts[seg] + 0.5) / seg_len  # 0..1 inside the segment
    k, s = kind[seg], syl[seg]

    voiced = np.where(k == 2, np.sin(np.pi * np.clip(pos, 0, 1)) ** 0.6, 0.0)
    voiced *= 10.0 ** (accent[s] * 3.0 / 20.0)  # accents: +-3 dB
    c_burst = burst[s]
    fric = np.where(c_burst, (pos > 0.6) * np.exp(-np.clip(pos - 0.6, 0, None) * seg_len / 1.5),
                    np.sin(np.pi * np.clip(pos, 0, 1)))
    fric = np.where((k == 1) & has_cons[s], fric, 0.0)

    formants = VOWELS[vowel[s]].T * voice.formant_scale[:, None]  # [3, F]
    formants = np.stack([_smooth(f, 7) for f in formants])  # coarticulation

    t = frames / FRAME_RATE
    nu = r.uniform(0.2, 1.5, 3)
    drift = (r.standard_normal(3)[:, None] * 0.5
             * np.cos(2 * np.pi * nu[:, None] * t + r.uniform(0, 2 * np.pi, 3)[:, None])).sum(0)
    accent_f = _smooth(np.where(k == 2, accent[s], 0.0), 11)
    octave = (voice.f0_range * (drift + 0.6 * accent_f - 1.2 * t / max(seconds, 1.0))
              + voice.jitter * r.standard_normal(n_frames) / np.log(2))
    f0 = voice.f0 * 2.0 ** octave
    return dict(voiced=voiced, fric=fric, formants=formants, f0=f0,
                fric_centre=CONSONANTS[cons[s], 0] * voice.fric_scale,
                fric_width=CONSONANTS[cons[s], 1], fric_gain=10 ** (CONSONANTS[cons[s], 3] / 20),
                shimmer=np.exp(voice.shimmer * r.standard_normal(n_frames)))


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Hann-weighted moving average over ``width`` (odd) frames, edges held."""
    k = np.hanning(width + 2)[1:-1]
    h = width // 2
    return np.convolve(np.concatenate([np.full(h, x[0]), x, np.full(h, x[-1])]), k / k.sum(), "valid")


def _pulses(f0: np.ndarray, n: int) -> np.ndarray:
    """Glottal pulse train ([n] float32, unit impulses) following the frame-level pitch ``f0`` (Hz)."""
    f0_t = np.interp(np.arange(n), np.arange(len(f0)) * HOP, f0)
    phase = np.cumsum(f0_t / SR)
    return np.diff(np.floor(phase), prepend=0.0).astype(np.float32)


def _resonance(f: torch.Tensor, centre: torch.Tensor | float, bw: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """|H(f)| of a two-pole resonance at ``centre`` with bandwidth ``bw`` (Hz), 1 at DC.

    |H|^-2 = ((f - F)^2 + b^2)((f + F)^2 + b^2) / (F^2 + b^2)^2 = ((f^2 + C)^2 - 4 f^2 F^2) / C^2
    with b = bw / 2 and C = F^2 + b^2: few passes over the [U, B, F] grid.
    """
    c = centre * centre + (bw / 2) ** 2
    f2 = f * f
    out = torch.add(f2, c, out=out) if out is not None else f2 + c
    out.square_().sub_(4 * f2 * (centre * centre))
    return out.rsqrt_().mul_(c)


def _log_bump(f: np.ndarray, centre: float, width_oct: float) -> np.ndarray:
    return np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / width_oct) ** 2)


def _channel(sess: Session, r: np.random.Generator, variability: float) -> np.ndarray:
    """Channel magnitude response [B] of one utterance (session response, slightly varied)."""
    f = _FREQS
    hp = sess.highpass * np.exp(0.1 * variability * r.standard_normal())
    lp = sess.lowpass * np.exp(0.05 * variability * r.standard_normal())
    mag = (f / hp) ** 2 / np.sqrt(1 + (f / hp) ** 4) / np.sqrt(1 + (f / lp) ** 8)
    gain_db = np.zeros_like(f)
    for c, w, g in sess.eq:
        gain_db += (g + variability * r.standard_normal()) * _log_bump(f, c, w)
    return mag * 10 ** (gain_db / 20)


def synthesize_speaker(seed: int, index: int, sessions: Sequence[int], lengths: Sequence[int], *,
                       speaker_spread: float = 2.5, session_variability: float = 0.7,
                       noise_snr_db: tuple[float, float] = (5.0, 30.0),
                       utt_keys: Sequence[int] | None = None) -> list[np.ndarray]:
    """Utterances of speaker ``index``: one [n] int16 array per (session, length in samples) pair.

    ``utt_keys`` (default 0, 1, ...) seed each utterance; ``sessions`` seed the session conditions.
    All filtering happens in one STFT domain: pulses are transformed, noise fields (aspiration,
    frication, background) are drawn there directly, and one inverse STFT gives the waveform.
    """
    voice = make_voice(seed, index, speaker_spread)
    keys = list(range(len(lengths))) if utt_keys is None else list(utt_keys)
    sess = {s: make_session(seed, index, s, session_variability, noise_snr_db) for s in set(sessions)}
    timbre = 10 ** (voice.peak[1] * _log_bump(_FREQS, voice.peak[0], voice.peak[2]) / 20)
    for fk, bw in zip(voice.high_formants, (180.0, 250.0)):
        timbre = timbre * _resonance(torch.from_numpy(_FREQS), float(fk),
                                     bw * voice.bw_scale).numpy()
    u, n_max, n_bins = len(lengths), max(lengths), len(_FREQS)
    n_frames = n_max // HOP + 1
    src = np.zeros((u, n_max), dtype=np.float32)
    formants = np.zeros((u, 3, n_frames), dtype=np.float32)
    ctrl = np.zeros((u, 4, n_frames), dtype=np.float32)  # voicing, frication, log2 centre, 1/width
    static = np.zeros((u, n_bins), dtype=np.float32)  # timbre x tilt x channel
    bg = np.zeros((u, n_bins), dtype=np.float32)  # background noise colour x channel
    # One noise field in the STFT domain carries aspiration, frication and background noise (their
    # spectral shapes add): uniform real / imaginary parts; near Gaussian after overlap-add.
    white = torch.zeros((u, n_bins, n_frames), dtype=torch.complex64)
    active = np.zeros(u)
    snr, level, breath, pulse_power = np.zeros(u), np.zeros(u), np.zeros(u), np.zeros(u)
    win_power = float(_WINDOW.square().sum())
    for i, (s, n, key) in enumerate(zip(sessions, lengths, keys)):
        r = _rng(seed, _TAG_UTT, index, key)
        ss = sess[s]
        nf = n // HOP + 1
        uv = _shifted_voice(voice, ss, r, session_variability)
        tr = _utterance_tracks(r, uv, nf)
        src[i, :n] = _pulses(tr["f0"], n)
        formants[i, :, :nf] = tr["formants"]
        formants[i, :, nf:] = tr["formants"][:, -1:]
        ctrl[i, 0, :nf] = tr["voiced"] * tr["shimmer"]
        ctrl[i, 1, :nf] = tr["fric"] * tr["fric_gain"]
        ctrl[i, 2, :nf], ctrl[i, 3, :nf] = np.log2(tr["fric_centre"]), 1.0 / tr["fric_width"]
        ctrl[i, 2:, nf:] = ctrl[i, 2:, nf - 1:nf]
        tilt = uv.tilt + 6.0  # + radiation
        breath[i], pulse_power[i] = uv.breath, win_power * uv.f0 / SR
        chan = _channel(ss, r, session_variability)
        static[i] = timbre * (np.maximum(_FREQS, 100.0) / 100.0) ** (tilt / 6.02) * chan
        bg[i] = chan * (np.maximum(_FREQS, 100.0) / 1000.0) ** (ss.noise_slope / 6.02)
        g = torch.Generator().manual_seed(int(r.integers(2**63)))
        white[i, :, :nf] = torch.rand((n_bins, nf), dtype=torch.complex64, generator=g)
        white[i, :, :nf] -= 0.5 + 0.5j
        active[i] = nf / n_frames
        snr[i] = np.clip(ss.snr + 2.0 * r.standard_normal(), *noise_snr_db)
        level[i] = r.uniform(0.25, 0.9)

    # Expected powers (E|w|^2 = 1 for the noise, E|STFT(pulses)|^2 = sum(win^2) f0 / SR), reduced
    # in numpy on every other frame: cheap, and independent of torch's thread count.
    f = torch.from_numpy(_FREQS.astype(np.float32)).view(1, -1, 1)
    stat = torch.from_numpy(static)[:, :, None]
    c = torch.from_numpy(ctrl)
    env = stat * c[:, 0:1]  # [U, B, F] voiced amplitude x timbre x tilt x channel
    fm = torch.from_numpy(formants)
    buf = torch.empty_like(env)
    for j in range(3):
        env *= _resonance(f, fm[:, j:j + 1], float(FORMANT_BW[j] * voice.bw_scale), buf)
    fric = torch.log2(f.clamp_min(1.0)) - c[:, 2:3]
    fric *= c[:, 3:4]
    fric.square_().mul_(-0.5).exp_()
    fric *= c[:, 1:2] * stat
    p_voiced = _mean_square(env) * pulse_power * (1 + breath**2)
    gain = np.sqrt(p_voiced / np.maximum(_mean_square(fric), 1e-20) * 10 ** (voice.fric_db / 10))
    p_speech = p_voiced * (1 + 10 ** (voice.fric_db / 10))
    p_noise = np.mean(bg.astype(np.float64) ** 2, axis=1) * active
    scale = np.sqrt(p_speech / np.maximum(p_noise, 1e-20) / 10 ** (snr / 10))
    unit = np.sqrt(6.0)  # E|w|^2 = 2 / 12 for w uniform in [-0.5, 0.5) + [-0.5, 0.5) j
    noise_amp = fric.mul_(_col(gain * unit))
    noise_amp += env * _col(breath * np.sqrt(pulse_power) * unit)
    noise_amp += torch.from_numpy((bg * (scale * unit)[:, None]).astype(np.float32))[:, :, None]
    spec = torch.stft(torch.from_numpy(src), N_FFT, HOP, window=_WINDOW, return_complex=True)
    spec *= env
    spec += white.mul_(noise_amp)
    wave = _istft(spec, n_max).numpy()
    out = []
    for i, n in enumerate(lengths):
        x = wave[i, :n].astype(np.float64)
        x *= level[i] / max(np.max(np.abs(x)), 1e-9)
        out.append(np.round(x * 32767).astype(np.int16))
    return out


def _col(x: np.ndarray) -> torch.Tensor:
    """[U] numpy -> [U, 1, 1] float32 tensor, to scale [U, B, F] grids."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32))[:, None, None]


def _istft(spec: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``torch.stft(center=True)`` with ``_WINDOW`` at hop N_FFT / 2: [U, B, F] -> [U, n]."""
    frames = torch.fft.irfft(spec.transpose(1, 2), n=N_FFT) * _WINDOW  # [U, F, N_FFT]
    u, f = frames.shape[:2]
    out = torch.zeros(u, f + 1, HOP)
    out[:, :f] += frames[..., :HOP]
    out[:, 1:] += frames[..., HOP:]
    return out.reshape(u, -1)[:, N_FFT // 2:N_FFT // 2 + n]


def _mean_square(x: torch.Tensor) -> np.ndarray:
    """[U] mean of x^2 over every other frame of a real [U, B, F] tensor."""
    a = x[:, :, ::2].numpy()
    return np.einsum("ubf,ubf->u", a, a, dtype=np.float64) / (a.shape[1] * a.shape[2])


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
                          workers: int | None = None) -> Path:
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
    wav_bytes = (speakers + test_speakers) * utterances_per_speaker * seconds * (1 + duration_jitter) * SR * 2
    _check_free_space(out, wav_bytes)  # PCM16 at the longest jittered length
    if workers is None:  # a pool only pays off for more than a few speakers
        workers = min(2, os.cpu_count() or 1) if speakers + test_speakers >= 16 else 1
    _write_speakers(out, speakers, test_speakers, utterances_per_speaker, seconds, seed, progress,
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


def _speaker_audio(out: Path, seed: int, index: int, utterances: int, seconds: float,
                   duration_jitter: float, knobs: dict) -> None:
    sessions, lengths, paths = _layout(seed, index, utterances, seconds, duration_jitter)
    # One intra-op thread: the per-speaker tensors are small, and two threads measured 2.5x more
    # CPU time (75 s vs 29 s for the default corpus). The bytes do not depend on it.
    with _torch_threads(1):
        waves = synthesize_speaker(seed, index, sessions, lengths, **knobs)
    for p, x in zip(paths, waves):
        _write_wav(out / "wav" / p, x)


def _write_speakers(out: Path, speakers: int, test_speakers: int, utterances: int, seconds: float,
                    seed: int, progress: Callable[[int], None] | None, knobs: dict,
                    duration_jitter: float, num_trials: int, workers: int) -> None:
    """Audio, wav.scp / utt2spk of train and test, and the trial list."""
    total = speakers + test_speakers
    job = functools.partial(_speaker_audio, out, seed, utterances=utterances, seconds=seconds,
                            duration_jitter=duration_jitter, knobs=knobs)
    pool = None
    if workers > 1 and total > 1:
        # fork: the children inherit the imported modules (no second torch import).
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        done = pool.map(job, range(total)) if pool is not None else map(job, range(total))
        for _ in done:
            if progress is not None:
                progress(utterances)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    lists: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for index in range(total):
        paths = _layout(seed, index, utterances, seconds, duration_jitter)[2]
        part = lists["train" if index < speakers else "test"]
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
