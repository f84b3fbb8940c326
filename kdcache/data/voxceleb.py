"""Prepare local VoxCeleb copies for kdcache (WeSpeaker's ``data/`` folder, made by one call).

Reads, as distributed:

- VoxCeleb1 (eval): ``<vox1>/wav/idNNNNN/<video>/<n>.wav`` (16 kHz mono PCM16, used in place);
- VoxCeleb2-dev (train): ``<vox2_dev>/aac/idNNNNN/<video>/<n>.m4a``, converted once to 16 kHz wav/flac
  (see :mod:`kdcache.data.m4a` for why);
- MUSAN ``<musan>/{noise,music,speech}/...`` and ``<rirs>/simulated_rirs/...`` (RIRS_NOISES), optional;
- the trial lists ``veri_test2.txt`` (Vox1-O), ``list_test_all2.txt`` (E), ``list_test_hard2.txt`` (H).

Writes under ``out``::

    vox2_dev/{wav.scp,utt2spk,spk2id}   training corpus; spk2id = sorted speakers, WeSpeaker's class order
    vox2_dev_cohort/{wav.scp,utt2spk}   up to N utterances per speaker: AS-norm cohort and scoring mean
    vox1/{wav.scp,utt2spk}              evaluation corpus; ids = ``idNNNNN/<video>/<n>.wav`` as in the trials
    musan/wav.scp, rirs/wav.scp         augmentation lists (``--augment-noise out/musan`` reads them)
    trials/vox1_{O,E,H}.txt             the trial lists found, checked against vox1
    prepare.json                        sources, counts and settings

Every input is checked before anything is written; a bad m4a file stops the conversion, which removes
what this call wrote. An interrupted conversion (Ctrl-C, a killed job) keeps its finished files, and a
rerun skips them. Utterance ids are paths relative to a tree root, as in VoxCeleb's trial lists.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from kdcache.data.corpus import audio_info
from kdcache.data.m4a import convert_m4a
from kdcache.data.trials import Trial, read_trials, write_trials
from kdcache.errors import KdcacheError
from kdcache.progress import progress_bar

SPEAKER_ID = re.compile(r"^id\d{5}$")
_AUDIO = (".wav", ".flac", ".m4a", ".aac", ".mp3", ".ogg", ".opus")
# Trial lists by set, cleaned lists ("2") first, as VoxCeleb publishes them.
TRIAL_FILES = {"O": ("veri_test2.txt", "veri_test.txt"),
               "E": ("list_test_all2.txt", "list_test_all.txt"),
               "H": ("list_test_hard2.txt", "list_test_hard.txt")}
MUSAN_PARTS = ("noise", "music", "speech")


@dataclass
class PrepareConfig:
    """Sources and settings of :func:`prepare_voxceleb` (paths as given by the user)."""

    vox1: str
    vox2_dev: str
    out: str
    musan: str | None = None
    rirs: str | None = None
    trials_dir: str | None = None  # default: the vox1 folder
    audio_dir: str | None = None  # converted VoxCeleb2 audio; default out/vox2_dev_audio
    audio_format: str = "wav"  # wav | flac
    jobs: int = 1
    cohort_per_speaker: int = 10  # 0: every utterance
    show_progress: bool = True


def find_tree(root: Path, containers: Sequence[str], suffix: str, what: str) -> tuple[Path, list[str]]:
    """The tree root (``root`` or ``root/<container>``) and its ``idNNNNN/<video>/<n><suffix>`` files,
    as sorted relative paths. KdcacheError naming the first thing out of place."""
    expected = f"{root}/{containers[0]}/idNNNNN/<video>/<n>{suffix}"
    if not root.is_dir():
        raise KdcacheError(f"{root}: {what} folder not found")
    tree = next((root / c for c in containers if (root / c).is_dir()), root)
    speakers = sorted((e for e in os.scandir(tree) if not e.name.startswith(".")), key=lambda e: e.name)
    if not any(e.is_dir() and SPEAKER_ID.match(e.name) for e in speakers):
        raise KdcacheError(f"{root}: not a {what} folder: no speaker folders idNNNNN (expected {expected})")
    files = []
    for spk in speakers:
        if not (spk.is_dir() and SPEAKER_ID.match(spk.name)):
            raise KdcacheError(f"{spk.path}: unexpected {'folder' if spk.is_dir() else 'file'} in the {what} "
                               f"tree (expected speaker folders idNNNNN: {expected})")
        for video in sorted(os.scandir(spk.path), key=lambda e: e.name):
            if video.name.startswith("."):
                continue
            if not video.is_dir():
                raise KdcacheError(f"{video.path}: file directly in a speaker folder (expected {expected})")
            for utt in sorted(os.scandir(video.path), key=lambda e: e.name):
                if utt.name.startswith("."):
                    continue
                if utt.is_dir():
                    raise KdcacheError(f"{utt.path}: folder inside a video folder (expected {expected})")
                ext = os.path.splitext(utt.name)[1].lower()
                if ext == suffix:
                    files.append(f"{spk.name}/{video.name}/{utt.name}")
                elif ext in _AUDIO:
                    raise KdcacheError(f"{utt.path}: {ext} audio in the {what} tree, expected {suffix} files "
                                       f"({expected})")
    if not files:
        raise KdcacheError(f"{root}: no {suffix} files in the {what} tree (expected {expected})")
    return tree, files


def _list_augment(root: Path, parts: Sequence[str], what: str, show_progress: bool) -> dict[str, Path]:
    """``{name: path}`` of the readable .wav files under ``root/<part>`` (names relative to ``root``)."""
    found: dict[str, Path] = {}
    for part in parts:
        for dirpath, dirnames, filenames in os.walk(root / part, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.lower().endswith((".wav", ".flac")) and not f.startswith("."):
                    p = Path(dirpath) / f
                    found[p.relative_to(root).as_posix()] = p
    if not found:
        raise KdcacheError(f"{root}: no .wav files in the {what} folder(s) {', '.join(parts)}")
    for name, p in progress_bar(found.items(), desc=f"checking {what}", unit="file", disable=not show_progress,
                        mininterval=1.0):
        try:
            info = sf.info(str(p))
        except (RuntimeError, OSError) as e:
            raise KdcacheError(f"{p}: cannot read audio: {' '.join(str(e).split())}") from None
        if info.frames <= 0:
            raise KdcacheError(f"{p}: no samples")
    return found


def musan_files(musan: Path, show_progress: bool = False) -> dict[str, Path]:
    """MUSAN's ``noise/``, ``music/``, ``speech/`` files, named ``<part>/...`` (the Augmenter picks each
    part's SNR range from that first component)."""
    parts = [p for p in MUSAN_PARTS if (musan / p).is_dir()]
    if not musan.is_dir() or not parts:
        raise KdcacheError(f"{musan}: not a MUSAN folder (expected {musan}/noise, music and speech)")
    return _list_augment(musan, parts, "MUSAN", show_progress)


def rir_files(rirs: Path, show_progress: bool = False) -> dict[str, Path]:
    """RIRS_NOISES' simulated RIRs, named relative to ``simulated_rirs/``."""
    root = rirs / "simulated_rirs" if (rirs / "simulated_rirs").is_dir() else rirs
    if not root.is_dir() or root.name != "simulated_rirs":
        raise KdcacheError(f"{rirs}: not a RIRS_NOISES folder (expected {rirs}/simulated_rirs)")
    rooms = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not rooms:
        raise KdcacheError(f"{root}: no room folders (expected e.g. smallroom/Room001/*.wav)")
    return _list_augment(root, rooms, "RIRS_NOISES", show_progress)


def check_trials(path: Path, utterances: set[str], corpus_name: str) -> list[Trial]:
    """The trials of ``path``; KdcacheError at the first line naming an utterance not in ``utterances``."""
    trials = read_trials(path)
    for line, t in enumerate(trials, start=1):
        for utt in (t.enroll, t.test):
            if utt not in utterances:
                raise KdcacheError(f"{path}:{line}: utterance {utt!r} is not in {corpus_name}")
    return trials


def find_trial_lists(folder: Path) -> dict[str, Path]:
    """``{"O"|"E"|"H": path}`` of the VoxCeleb1 trial lists present in ``folder``."""
    found = {}
    for name, candidates in TRIAL_FILES.items():
        for c in candidates:
            if (folder / c).is_file():
                found[name] = folder / c
                break
    return found


def _write_text(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def write_kaldi_lists(folder: Path, ids: Sequence[str], paths: Sequence[Path], speakers: Sequence[str]) -> None:
    """``wav.scp`` (absolute paths) and ``utt2spk`` in ``folder``, sorted by id."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    for i in order:
        if any(c.isspace() for c in f"{ids[i]}{paths[i]}"):
            raise KdcacheError(f"{paths[i]}: spaces in an utterance id or path cannot go into wav.scp")
    _write_text(folder / "wav.scp", [f"{ids[i]} {Path(paths[i]).absolute()}" for i in order])
    _write_text(folder / "utt2spk", [f"{ids[i]} {speakers[i]}" for i in order])


def cohort_subset(ids: Sequence[str], per_speaker: int) -> list[str]:
    """The first ``per_speaker`` ids (sorted) of each speaker (the first path component); all if 0."""
    taken: dict[str, int] = {}
    keep = []
    for utt in sorted(ids):
        spk = utt.split("/", 1)[0]
        if per_speaker == 0 or taken.get(spk, 0) < per_speaker:
            taken[spk] = taken.get(spk, 0) + 1
            keep.append(utt)
    return keep


def _convert_all(jobs: list[tuple[Path, Path]], workers: int, show_progress: bool) -> list[Path]:
    """Convert (src, dst) pairs; returns the files written. On an error, removes them and re-raises."""
    written: list[Path] = []
    bar = progress_bar(total=len(jobs), desc="m4a -> 16 kHz", unit="utt", disable=not show_progress, mininterval=1.0)
    try:
        if workers <= 1:
            for src, dst in jobs:
                convert_m4a(src, dst)
                written.append(dst)
                bar.update(1)
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                step = 256
                for start in range(0, len(jobs), step):
                    batch = jobs[start:start + step]
                    futures = {pool.submit(convert_m4a, src, dst): dst for src, dst in batch}
                    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    wait(futures)  # the others of the batch finish (and are removed below on error)
                    for f in futures:
                        if f.exception() is None:
                            written.append(futures[f])
                            bar.update(1)
                    for f in futures:
                        if f.exception() is not None:
                            raise f.exception()
    except KdcacheError:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return written


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def prepare_voxceleb(cfg: PrepareConfig) -> dict[str, Any]:
    """Check every source, convert VoxCeleb2-dev once, write the lists; returns the summary written to
    ``out/prepare.json``. See the module docstring for the layout."""
    if cfg.audio_format not in ("wav", "flac"):
        raise KdcacheError(f"--audio-format {cfg.audio_format}: choose wav or flac")
    if cfg.cohort_per_speaker < 0:
        raise KdcacheError("--cohort-per-speaker must be >= 0 (0: every utterance)")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise KdcacheError(f"{out}: exists and is not a folder")
    vox1_root, vox2_root = Path(cfg.vox1), Path(cfg.vox2_dev)
    audio_dir = Path(cfg.audio_dir) if cfg.audio_dir else out / "vox2_dev_audio"

    # 1. Check everything; nothing is written before this is done.
    vox1_tree, vox1_ids = find_tree(vox1_root, ("wav",), ".wav", "VoxCeleb1")
    vox2_tree, vox2_src = find_tree(vox2_root, ("aac", "dev/aac"), ".m4a", "VoxCeleb2-dev")
    for utt in progress_bar(vox1_ids, desc="checking VoxCeleb1", unit="utt", disable=not cfg.show_progress, mininterval=1.0):
        audio_info(vox1_tree / utt)
    trials_dir = Path(cfg.trials_dir) if cfg.trials_dir else vox1_root
    if not trials_dir.is_dir():
        raise KdcacheError(f"{trials_dir}: trial folder not found")
    lists = find_trial_lists(trials_dir)
    if not lists:
        raise KdcacheError(f"{trials_dir}: no VoxCeleb1 trial list (expected veri_test2.txt, list_test_all2.txt "
                           "or list_test_hard2.txt)")
    known = set(vox1_ids)
    trials = {name: check_trials(p, known, f"VoxCeleb1 ({vox1_tree})") for name, p in lists.items()}
    musan = musan_files(Path(cfg.musan), cfg.show_progress) if cfg.musan else None
    rirs = rir_files(Path(cfg.rirs), cfg.show_progress) if cfg.rirs else None

    # 2. Convert VoxCeleb2-dev (finished files of an interrupted run are kept and skipped).
    suffix = f".{cfg.audio_format}"
    vox2_ids = [str(Path(rel).with_suffix(suffix).as_posix()) for rel in vox2_src]
    vox2_paths = [audio_dir / utt for utt in vox2_ids]
    todo = [(vox2_tree / src, dst) for src, dst in zip(vox2_src, vox2_paths) if not dst.exists()]
    out_existed, audio_existed = out.exists(), audio_dir.exists()
    try:
        _convert_all(todo, cfg.jobs, cfg.show_progress)
    except KdcacheError:
        if not out_existed:
            shutil.rmtree(out, ignore_errors=True)
        if not audio_existed:
            shutil.rmtree(audio_dir, ignore_errors=True)
        else:
            _remove_empty_dirs(audio_dir)
        raise

    # 3. Lists.
    vox2_spk = [utt.split("/", 1)[0] for utt in vox2_ids]
    write_kaldi_lists(out / "vox2_dev", vox2_ids, vox2_paths, vox2_spk)
    speakers = sorted(set(vox2_spk))
    _write_text(out / "vox2_dev" / "spk2id", [f"{s} {i}" for i, s in enumerate(speakers)])
    cohort = cohort_subset(vox2_ids, cfg.cohort_per_speaker)
    index = {utt: i for i, utt in enumerate(vox2_ids)}
    write_kaldi_lists(out / "vox2_dev_cohort", cohort, [vox2_paths[index[u]] for u in cohort],
                      [vox2_spk[index[u]] for u in cohort])
    write_kaldi_lists(out / "vox1", vox1_ids, [vox1_tree / u for u in vox1_ids], [u.split("/", 1)[0] for u in vox1_ids])
    for name, files in (("musan", musan), ("rirs", rirs)):
        if files is not None:
            _write_text(out / name / "wav.scp", [f"{k} {Path(p).absolute()}" for k, p in sorted(files.items())])
    (out / "trials").mkdir(parents=True, exist_ok=True)
    for name, ts in trials.items():
        write_trials(out / "trials" / f"vox1_{name}.txt", ts)
    summary = {
        "config": asdict(cfg) | {"out": str(out.absolute()), "audio_dir": str(audio_dir.absolute())},
        "vox2_dev": {"utterances": len(vox2_ids), "speakers": len(speakers), "converted_now": len(todo)},
        "vox2_dev_cohort": {"utterances": len(cohort)},
        "vox1": {"utterances": len(vox1_ids), "speakers": len({u.split('/', 1)[0] for u in vox1_ids})},
        "trials": {f"vox1_{k}": {"source": str(lists[k]), "trials": len(v)} for k, v in trials.items()},
        "musan": len(musan) if musan is not None else None,
        "rirs": len(rirs) if rirs is not None else None,
    }
    _write_text(out / "prepare.json", [json.dumps(summary, indent=1)])
    return summary
