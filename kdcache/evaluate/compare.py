"""Paired comparisons of two systems: the EER difference with confidence intervals.

Two intervals answer two questions:

- **Over test speakers** (:func:`speaker_bootstrap`): the same trials scored by systems A and B (WeSpeaker
  score files, ``enroll test score target|nontarget``). Test speakers are drawn with replacement; a
  target trial of speaker s counts n(s) times, a non-target trial of speakers (e, t) n(e) * n(t) times
  (n = how often the speaker was drawn), so the trials of a speaker drawn twice come twice. Both
  systems get the same draw, so the interval is paired. EER only depends on the target and non-target
  score distributions, so the weights need not keep the classes' proportions. Percentile interval.
- **Over seeds** (:func:`seed_interval`): per-seed EERs of A and B. With the same seeds on both sides
  the seeds are paired (same initialisation and data order): a t-interval of the mean per-seed
  difference; otherwise Welch's t-interval of the difference of means.

EERs are fractions; differences are A - B (negative: A has the lower EER).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdcache.data.text import read_text_lines
from kdcache.errors import KdcacheError
from kdcache.evaluate.metrics import compute_eer
from kdcache.evaluate.stats import t_quantile

__all__ = ["ScoreList", "read_scores", "align", "voxceleb_speaker", "trial_weights", "speaker_bootstrap",
           "t_quantile_975", "seed_interval", "find_score_file", "run_seed", "compare_runs"]

_LABELS = {"target": True, "nontarget": False}

@dataclass(frozen=True)
class ScoreList:
    """Trials of a score file: ``enroll[i], test[i]``, ``scores [N]`` float64, ``labels [N]`` bool."""

    enroll: tuple[str, ...]
    test: tuple[str, ...]
    scores: np.ndarray
    labels: np.ndarray


def read_scores(path: str | Path) -> ScoreList:
    """Read a WeSpeaker score file: ``enroll test score target|nontarget`` per line (blank lines skipped)."""
    path = Path(path)
    enroll, test, scores, labels = [], [], [], []
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(read_text_lines(path, "score file"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or parts[3] not in _LABELS:
            raise KdcacheError(f"{path}:{number}: expected 'enroll test score target|nontarget', got {line!r}")
        try:
            score = float(parts[2])
        except ValueError:
            raise KdcacheError(f"{path}:{number}: score {parts[2]!r} is not a number") from None
        if not math.isfinite(score):
            raise KdcacheError(f"{path}:{number}: score {parts[2]!r} is not finite")
        if (parts[0], parts[1]) in seen:
            raise KdcacheError(f"{path}:{number}: trial {parts[0]} {parts[1]} appears twice")
        seen.add((parts[0], parts[1]))
        enroll.append(parts[0])
        test.append(parts[1])
        scores.append(score)
        labels.append(_LABELS[parts[3]])
    if not scores:
        raise KdcacheError(f"{path}: no trials")
    return ScoreList(tuple(enroll), tuple(test), np.array(scores, dtype=np.float64), np.array(labels, dtype=bool))


def align(a: ScoreList, b: ScoreList, names: tuple[str, str] = ("A", "B")) -> tuple[ScoreList, np.ndarray]:
    """``(a, scores of b in a's trial order)``; refuses score files of different trials or labels."""
    index = {pair: i for i, pair in enumerate(zip(b.enroll, b.test))}
    pairs = list(zip(a.enroll, a.test))
    missing = [p for p in pairs if p not in index]
    if missing or len(pairs) != len(index):
        example = missing[0] if missing else next(p for p in index if p not in set(pairs))
        raise KdcacheError(f"{names[0]} and {names[1]} were scored on different trials "
                           f"({len(pairs)} and {len(index)}; e.g. {' '.join(example)}): not a paired comparison")
    order = np.array([index[p] for p in pairs], dtype=np.int64)
    if not np.array_equal(a.labels, b.labels[order]):
        raise KdcacheError(f"{names[0]} and {names[1]} label the same trials differently (different trial lists?)")
    return a, b.scores[order]


def voxceleb_speaker(utt_id: str) -> str:
    """The speaker of a VoxCeleb-style id ``spk/session/nnnnn.wav``: its first path component."""
    return utt_id.split("/", 1)[0]


def trial_weights(enroll_speaker: np.ndarray, test_speaker: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[N] int64 multiplicity of each trial when speaker k was drawn ``counts[k]`` times: n(s) for a
    target trial (one speaker), n(e) * n(t) for a trial of two speakers."""
    same = enroll_speaker == test_speaker
    return np.where(same, counts[enroll_speaker], counts[enroll_speaker] * counts[test_speaker]).astype(np.int64)


def speaker_bootstrap(
    trials: ScoreList,
    systems_a: Sequence[np.ndarray],
    systems_b: Sequence[np.ndarray],
    speaker_of: Callable[[str], str] = voxceleb_speaker,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """EER(A) - EER(B) on the same trials, with a paired bootstrap interval over test speakers.

    ``trials`` gives the trial ids and labels; ``systems_a`` / ``systems_b`` hold one score array [N]
    per seed of each system, in the trials' order (:func:`align`). EER(A) is the mean EER over A's
    seeds (one seed: its EER); every replicate applies the same speaker draw to every array. Returns
    ``eer_a``, ``eer_b``, ``difference``, ``relative`` (difference / EER(B)), ``low``, ``high`` and
    ``p_a_not_better`` (share of replicates where A's EER is not below B's), plus counts. Replicates
    in which a class has no trials are drawn again.
    """
    if replicates < 1 or not 0 < level < 1:
        raise KdcacheError(f"bootstrap: need replicates >= 1 and 0 < level < 1, got {replicates}, {level}")
    if not systems_a or not systems_b:
        raise KdcacheError("bootstrap: each system needs at least one score list")
    y = trials.labels
    arrays_a = [np.asarray(s, dtype=np.float64) for s in systems_a]
    arrays_b = [np.asarray(s, dtype=np.float64) for s in systems_b]

    def mean_eer(arrays: list[np.ndarray], weight: np.ndarray | None) -> float:
        if weight is None:
            return float(np.mean([compute_eer(s, y) for s in arrays]))
        yw = np.repeat(y, weight)
        return float(np.mean([compute_eer(np.repeat(s, weight), yw) for s in arrays]))

    eer_a, eer_b = mean_eer(arrays_a, None), mean_eer(arrays_b, None)
    speakers = sorted({speaker_of(u) for u in trials.enroll} | {speaker_of(u) for u in trials.test})
    position = {s: i for i, s in enumerate(speakers)}
    e = np.array([position[speaker_of(u)] for u in trials.enroll])
    t = np.array([position[speaker_of(u)] for u in trials.test])
    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    attempts = 0
    while len(diffs) < replicates:
        attempts += 1
        if attempts > 100 * replicates:
            raise KdcacheError(f"bootstrap: too few speakers ({len(speakers)}) to draw both target and non-target trials")
        n = np.bincount(rng.integers(0, len(speakers), len(speakers)), minlength=len(speakers))
        weight = trial_weights(e, t, n)
        drawn = y[weight > 0]
        if drawn.all() or not drawn.any():
            continue
        diffs.append(mean_eer(arrays_a, weight) - mean_eer(arrays_b, weight))
    spread = np.array(diffs)
    tail = (1 - level) / 2
    return {
        "eer_a": eer_a, "eer_b": eer_b, "difference": eer_a - eer_b,
        "relative": (eer_a - eer_b) / eer_b if eer_b else math.nan,
        "low": float(np.quantile(spread, tail)), "high": float(np.quantile(spread, 1 - tail)),
        "p_a_not_better": float(np.mean(spread >= 0)), "level": level, "replicates": replicates,
        "num_trials": int(y.size), "num_speakers": len(speakers), "seeds_a": len(arrays_a), "seeds_b": len(arrays_b),
    }


def t_quantile_975(df: float) -> float:
    """t_{0.975, df} (:func:`kdcache.evaluate.stats.t_quantile`); a fractional df (Welch) is rounded down,
    which widens the interval slightly."""
    if not df >= 1:
        raise KdcacheError(f"t-interval: need at least 1 degree of freedom, got {df}")
    return t_quantile(0.975, int(math.floor(min(df, 1e9))))


def seed_interval(eers_a: Sequence[float], eers_b: Sequence[float],
                  seeds_a: Sequence[int] | None = None, seeds_b: Sequence[int] | None = None) -> dict[str, float | str]:
    """Mean EER(A) - mean EER(B) over seeds with a 95% t-interval.

    Paired (the mean of per-seed differences, df n - 1) when both sides have the same seeds; otherwise
    Welch (df by Welch-Satterthwaite). Needs at least 2 seeds a side (2 pairs when paired).
    """
    a, b = np.asarray(eers_a, dtype=np.float64), np.asarray(eers_b, dtype=np.float64)
    paired = seeds_a is not None and seeds_b is not None and sorted(seeds_a) == sorted(seeds_b) \
        and len(set(seeds_a)) == len(seeds_a)
    if paired:
        order_b = {s: i for i, s in enumerate(seeds_b)}
        d = a - b[[order_b[s] for s in seeds_a]]
        if d.size < 2:
            raise KdcacheError("seed interval: need at least 2 seeds on each side")
        df, se, mean = d.size - 1, d.std(ddof=1) / math.sqrt(d.size), float(d.mean())
    else:
        if a.size < 2 or b.size < 2:
            raise KdcacheError(f"seed interval: need at least 2 seeds on each side, got {a.size} and {b.size}")
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se, mean = math.sqrt(va + vb), float(a.mean() - b.mean())
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if va + vb > 0 else a.size + b.size - 2
    half = t_quantile_975(df) * se
    result = {"method": "paired t" if paired else "Welch t", "difference": mean, "low": mean - half,
              "high": mean + half, "df": float(df), "num_a": int(a.size), "num_b": int(b.size)}
    if se < 1e-12:  # EER moves in steps (1/targets), so a few seeds can agree exactly
        result["note"] = ("every seed gives the same difference: an interval of width 0, which says nothing "
                          "about how seeds spread; run more seeds")
    return result


SCORE_FILE_NAMES = ("scores.txt", "scores", "score.txt", "trials.score")


def find_score_file(path: str | Path) -> Path:
    """A score file itself, or the one score file in a run directory (``scores.txt``, ``scores``,
    ``score.txt``, ``trials.score``, else the only file whose name holds "score" and is not JSON/PNG)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise KdcacheError(f"{path}: no such score file or run directory")
    for name in SCORE_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.glob("*score*") if p.is_file() and p.suffix not in (".json", ".png", ".md"))
    if len(found) != 1:
        what = "no score file" if not found else f"{len(found)} score files ({', '.join(p.name for p in found)})"
        raise KdcacheError(f"{path}: {what}; give the score file (enroll test score target|nontarget) itself")
    return found[0]


def run_seed(path: str | Path) -> int | None:
    """The training seed recorded in a run directory's config.json (``extra.training.seed``), if any."""
    import json

    path = Path(path)
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        seed = json.loads(config.read_text(encoding="utf-8"))["extra"]["training"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(seed) if isinstance(seed, int) else None


def compare_runs(
    runs_a: Sequence[str | Path],
    runs_b: Sequence[str | Path],
    speaker_of: Callable[[str], str] = voxceleb_speaker,
    replicates: int = 1000,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """Compare system A (one run directory or score file per seed) with system B on the same trials.

    Returns ``{"a", "b", "score_files", "eers", "seeds", "over_speakers": speaker_bootstrap(...),
    "over_seeds": seed_interval(...) or {"skipped": why}}``.
    """
    if not runs_a or not runs_b:
        raise KdcacheError("compare: give at least one run for each system")
    files_a = [find_score_file(p) for p in runs_a]
    files_b = [find_score_file(p) for p in runs_b]
    reference = read_scores(files_a[0])
    aligned_a, aligned_b = [], []
    for target, files, name in ((aligned_a, files_a, names[0]), (aligned_b, files_b, names[1])):
        for f in files:
            target.append(align(reference, read_scores(f), (f"{names[0]} ({files_a[0]})", f"{name} ({f})"))[1])
    eers_a = [compute_eer(s, reference.labels) for s in aligned_a]
    eers_b = [compute_eer(s, reference.labels) for s in aligned_b]
    seeds_a = [run_seed(p) for p in runs_a]
    seeds_b = [run_seed(p) for p in runs_b]
    known = all(s is not None for s in seeds_a + seeds_b)
    if len(eers_a) >= 2 and len(eers_b) >= 2:
        over_seeds = seed_interval(eers_a, eers_b, seeds_a if known else None, seeds_b if known else None)
    else:
        over_seeds = {"skipped": "needs at least 2 seeds of each system"}
    return {
        "a": names[0], "b": names[1],
        "score_files": {"a": [str(f) for f in files_a], "b": [str(f) for f in files_b]},
        "eers": {"a": eers_a, "b": eers_b}, "seeds": {"a": seeds_a, "b": seeds_b},
        "over_speakers": speaker_bootstrap(reference, aligned_a, aligned_b, speaker_of, replicates, seed),
        "over_seeds": over_seeds,
    }
