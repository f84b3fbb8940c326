"""VoxCeleb preparation: layouts, m4a decoding, lists, trials, augmentation lists, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdcache.data.augment import AugmentConfig, Augmenter
from kdcache.data.corpus import load_corpus
from kdcache.data.m4a import decode_m4a, encode_m4a
from kdcache.data.trials import read_trials
from kdcache.data.voxceleb import PrepareConfig, cohort_subset, find_tree, prepare_voxceleb
from kdcache.data.voxceleb_synthetic import make_synthetic_voxceleb
from kdcache.errors import KdcacheError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_synthetic_voxceleb(tmp_path_factory.mktemp("vox") / "tree", vox2_speakers=3, vox1_speakers=4,
                                   vox1_o_speakers=2, utterances_per_speaker=3, seconds=1.0, num_trials=20)


def _config(tree: Path, out: Path, **kw) -> PrepareConfig:
    base = dict(vox1=str(tree / "voxceleb1"), vox2_dev=str(tree / "voxceleb2" / "dev"), out=str(out),
                musan=str(tree / "musan"), rirs=str(tree / "RIRS_NOISES"), show_progress=False)
    return PrepareConfig(**(base | kw))


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "data"
    prepare_voxceleb(_config(tree, out, cohort_per_speaker=2))
    return out


def test_m4a_is_real_aac_and_decodes_to_the_signal(tmp_path):
    import av

    t = np.arange(16000) / 16000
    x = np.round(8000 * np.sin(2 * np.pi * 300 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    encode_m4a(tmp_path / "a.m4a", x)
    with av.open(str(tmp_path / "a.m4a")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].rate == 16000 and c.streams.audio[0].channels == 1
    y = decode_m4a(tmp_path / "a.m4a")
    assert y.dtype == np.int16 and abs(len(y) - len(x)) <= 1024  # encoder delay trimmed, last frame padded
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n].astype(float), y[:n].astype(float))[0, 1] > 0.99  # aligned, not shifted


def test_prepare_writes_lists_that_kdcache_reads(tree, prepared):
    train = load_corpus(prepared / "vox2_dev")
    assert len(train) == 9 and train.speakers == ["id00012", "id00013", "id00014"]
    assert all(u.path.suffix == ".wav" and u.id.endswith(".wav") for u in train)
    src = sorted(str(p.relative_to(tree / "voxceleb2" / "dev" / "aac").with_suffix(".wav"))
                 for p in (tree / "voxceleb2" / "dev" / "aac").rglob("*.m4a"))
    assert train.ids == src
    # the converted audio is the decoded m4a, sample for sample
    u = train[0]
    m4a = tree / "voxceleb2" / "dev" / "aac" / Path(u.id).with_suffix(".m4a")
    np.testing.assert_array_equal(sf.read(str(u.path), dtype="int16")[0], decode_m4a(m4a))
    spk2id = (prepared / "vox2_dev" / "spk2id").read_text().split("\n")
    assert spk2id[:3] == ["id00012 0", "id00013 1", "id00014 2"]
    cohort = load_corpus(prepared / "vox2_dev_cohort")
    assert len(cohort) == 6 and cohort.speakers == train.speakers
    vox1 = load_corpus(prepared / "vox1")
    assert len(vox1) == 12 and vox1[0].path == tree / "voxceleb1" / "wav" / vox1[0].id
    for name, src_name in (("O", "veri_test2.txt"), ("E", "list_test_all2.txt"), ("H", "list_test_hard2.txt")):
        assert read_trials(prepared / "trials" / f"vox1_{name}.txt") == read_trials(tree / "voxceleb1" / src_name)
    summary = json.loads((prepared / "prepare.json").read_text())
    assert summary["vox2_dev"] == {"utterances": 9, "speakers": 3, "converted_now": 9}


def test_augmentation_lists_equal_the_folders(tree, prepared):
    """The Augmenter reads out/musan and out/rirs (wav.scp) exactly as it reads the MUSAN and RIR folders:
    same names (so MUSAN's speech/music SNR ranges apply), same files, same manifest, same output."""
    from_list = Augmenter(AugmentConfig(noise_dir=str(prepared / "musan"), reverb_dir=str(prepared / "rirs"), prob=1.0))
    from_dirs = Augmenter(AugmentConfig(noise_dir=str(tree / "musan"),
                                        reverb_dir=str(tree / "RIRS_NOISES" / "simulated_rirs"), prob=1.0))
    assert from_list.manifest() == from_dirs.manifest()
    assert {n.split("/", 1)[0] for n, _ in from_list.noise_files} == {"noise", "music", "speech"}
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    for seed in range(6):
        np.testing.assert_array_equal(from_list.apply(wave, seed), from_dirs.apply(wave, seed))


def test_rerun_skips_converted_files(tree, prepared, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(prepared, out)
    scp = (out / "vox2_dev" / "wav.scp").read_text().replace(str(prepared), str(out))
    (out / "vox2_dev" / "wav.scp").write_text(scp)
    victim = out / "vox2_dev_audio" / load_corpus(prepared / "vox2_dev")[4].id
    victim.unlink()
    summary = prepare_voxceleb(_config(tree, out))
    assert summary["vox2_dev"]["converted_now"] == 1 and victim.is_file()


def test_cohort_subset_takes_the_first_utterances_of_each_speaker():
    ids = ["b/v/2.wav", "a/v/1.wav", "a/v/3.wav", "a/w/1.wav", "b/v/1.wav"]
    assert cohort_subset(ids, 2) == ["a/v/1.wav", "a/v/3.wav", "b/v/1.wav", "b/v/2.wav"]
    assert cohort_subset(ids, 0) == sorted(ids)


def test_find_tree_accepts_the_distributed_roots(tree):
    aac = tree / "voxceleb2" / "dev" / "aac"
    for root in (tree / "voxceleb2", tree / "voxceleb2" / "dev", aac):
        found, files = find_tree(root, ("aac", "dev/aac"), ".m4a", "VoxCeleb2-dev")
        assert found == aac and len(files) == 9


# --- bad input: one line naming the file, exit 2, nothing written ------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)


def _prepare_cli(tree: Path, out: Path, vox1: Path | None = None, vox2: Path | None = None) -> subprocess.CompletedProcess:
    return _cli("prepare-voxceleb", "--vox1", str(vox1 or tree / "voxceleb1"),
                "--vox2-dev", str(vox2 or tree / "voxceleb2" / "dev"), "--musan", str(tree / "musan"),
                "--rirs", str(tree / "RIRS_NOISES"), "--out", str(out))


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("kdcache: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _copy_tree(tree: Path, dst: Path) -> Path:
    shutil.copytree(tree, dst, ignore=shutil.ignore_patterns("musan", "RIRS_NOISES"))
    for name in ("musan", "RIRS_NOISES"):
        (dst / name).symlink_to(tree / name)
    return dst


def test_wrong_layout_is_one_line_and_writes_nothing(tree, tmp_path):
    out = tmp_path / "out"
    # VoxCeleb2's m4a where VoxCeleb1's wav tree belongs
    msg = _one_line(_prepare_cli(tree, out, vox1=tree / "voxceleb2" / "dev"))
    assert "VoxCeleb1" in msg and "wav/idNNNNN/<video>/<n>.wav" in msg and not out.exists()
    # a wav file one level too high (speaker/utt.wav, no video folder)
    bad = _copy_tree(tree, tmp_path / "bad")
    spk = next((bad / "voxceleb1" / "wav").iterdir())
    shutil.copy(next(spk.rglob("*.wav")), spk / "stray.wav")
    msg = _one_line(_prepare_cli(bad, out, vox1=bad / "voxceleb1"))
    assert str(spk / "stray.wav") in msg and not out.exists()


def test_undecodable_m4a_names_the_file_and_writes_nothing(tree, tmp_path):
    bad = _copy_tree(tree, tmp_path / "bad")
    victim = sorted((bad / "voxceleb2" / "dev" / "aac").rglob("*.m4a"))[5]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated download
    out = tmp_path / "out"
    msg = _one_line(_prepare_cli(bad, out))
    assert str(victim) in msg and "cannot decode m4a" in msg
    assert not out.exists()  # the files converted before it are gone too


def test_trial_list_naming_unknown_utterances_writes_nothing(tree, tmp_path):
    bad = _copy_tree(tree, tmp_path / "bad")
    hard = bad / "voxceleb1" / "list_test_hard2.txt"
    lines = hard.read_text().splitlines()
    lines[3] = "1 id10001/AAAAAAAAAAA/00009.wav " + lines[3].split()[2]
    hard.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    msg = _one_line(_prepare_cli(bad, out))
    assert f"{hard}:4" in msg and "id10001/AAAAAAAAAAA/00009.wav" in msg and not out.exists()


def test_missing_musan_parts_is_one_line(tree, tmp_path):
    out = tmp_path / "out"
    msg = _one_line(_cli("prepare-voxceleb", "--vox1", str(tree / "voxceleb1"), "--vox2-dev",
                         str(tree / "voxceleb2" / "dev"), "--musan", str(tree / "RIRS_NOISES"), "--out", str(out)))
    assert "not a MUSAN folder" in msg and not out.exists()


def test_synthetic_tree_refuses_a_used_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "old.txt").write_text("old")
    with pytest.raises(KdcacheError, match="not an empty folder"):
        make_synthetic_voxceleb(tmp_path / "x")
