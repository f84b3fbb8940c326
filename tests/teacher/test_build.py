"""Phase 1: the cache equals a re-run of the teacher, resumes, shards across ranks, refuses bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from kdcache.cache.reader import TeacherCache
from kdcache.cache.verify import verify_cache
from kdcache.data.corpus import load_corpus
from kdcache.errors import KdcacheError
from kdcache.models import attach_head, build_model
from kdcache.models.checkpoint import load_model_dir
from kdcache.teacher.build import BuildConfig, build_teacher_cache
from kdcache.teacher.recompute import recompute_rows
from kdcache.teacher.saliency import TargetLogit, integrated_gradients, segment_bounds
from tests.cache.helpers import set_done

ROW_ARRAYS = ["rows/utterance", "rows/start", "rows/num_samples", "rows/label", "rows/aug_seed", "rows/input_crc",
              "teacher/logits", "teacher/embedding"]


def build(corpus: Path, teacher: Path, out: Path, **overrides) -> None:
    cfg = dict(data=str(corpus / "train"), teacher=str(teacher), out=str(out), crops_per_utt=2, crop_seconds=1.0,
               shard_rows=16, chunk_rows=8, batch_size=8, num_workers=0, device="cpu", show_progress=False)
    cfg.update(overrides)
    build_teacher_cache(BuildConfig(**cfg))


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env, **kwargs)


def build_args(corpus: Path, teacher: Path, out: Path) -> list[str]:
    return ["build-teacher-cache", "--data", str(corpus / "train"), "--teacher", str(teacher), "--out", str(out),
            "--crops-per-utt", "2", "--crop-seconds", "1.0", "--shard-rows", "8", "--chunk-rows", "8",
            "--batch-size", "8", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def dense_cache(tiny_corpus, tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("caches") / "dense.zarr"
    build(tiny_corpus, tiny_teacher, out)
    return out


def test_cache_equals_a_fresh_teacher_forward_on_replayed_crops(dense_cache, tiny_corpus, tiny_teacher):
    cache = TeacherCache.open(dense_cache)
    report = recompute_rows(cache, load_corpus(tiny_corpus / "train"), str(tiny_teacher), sample=len(cache))
    assert report.rows_checked == len(cache) == 64
    assert report.crc_mismatches == []
    # float16 storage of logits of magnitude <= 32 (s): half-ulp 0.016
    assert report.max_logit_diff < 0.02
    assert report.max_embedding_rel_diff < 1e-3
    assert report.ok()


def test_cache_opens_with_plain_zarr_and_documented_names(dense_cache):
    group = zarr.open_group(str(dense_cache), mode="r")
    for name in ROW_ARRAYS + ["speakers", "utterances/id", "utterances/speaker", "utterances/num_samples",
                              "teacher/head", "progress/done"]:
        assert name in group, name
    attrs = group.attrs["kdcache"]
    for key in ("format_version", "tool_version", "teacher", "features", "crop_plan", "corpus", "created"):
        assert key in attrs, key
    assert attrs["teacher"]["weights_sha256"]
    assert group["teacher/logits"].dtype == np.float16
    assert group["teacher/logits"].shape == (64, 8)


def test_labels_are_the_teachers_label_space(dense_cache, tiny_teacher, tiny_corpus):
    cache = TeacherCache.open(dense_cache)
    _, config = load_model_dir(tiny_teacher)
    assert cache.speakers == config.speakers
    corpus = load_corpus(tiny_corpus / "train")
    rec = cache.recipes(slice(None))
    expected = [config.speakers.index(corpus.by_id(u).speaker) for u in rec["utterance_id"]]
    assert rec["label"].tolist() == expected


@pytest.mark.parametrize("mode, tol", [("uint8", 0.2), ("factorized", 0.05)])
def test_logits_modes_agree_within_their_precision(dense_cache, tiny_corpus, tiny_teacher, tmp_path, mode, tol):
    out = tmp_path / f"{mode}.zarr"
    build(tiny_corpus, tiny_teacher, out, logits=mode)
    dense = TeacherCache.open(dense_cache).logits(slice(None))
    other = TeacherCache.open(out).logits(slice(None))
    assert other.dtype == np.float32 and other.shape == dense.shape
    assert np.abs(other - dense).max() < tol


def test_rerun_skips_finished_shards_and_other_settings_are_refused(dense_cache, tiny_corpus, tiny_teacher, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(dense_cache, copy)
    before = {name: zarr.open_group(str(copy), mode="r")[name][:] for name in ROW_ARRAYS}
    build(tiny_corpus, tiny_teacher, copy)  # same settings: nothing to do
    after = zarr.open_group(str(copy), mode="r")
    for name in ROW_ARRAYS:
        np.testing.assert_array_equal(after[name][:], before[name])
    with pytest.raises(KdcacheError, match="crops_per_utt|per_utt"):
        build(tiny_corpus, tiny_teacher, copy, crops_per_utt=3)
    build(tiny_corpus, tiny_teacher, copy, crops_per_utt=3, overwrite=True)
    assert len(TeacherCache.open(copy)) == 96


def test_kill_9_at_random_points_then_resume_gives_identical_arrays(dense_cache, tiny_corpus, tiny_teacher, tmp_path):
    reference = zarr.open_group(str(dense_cache), mode="r")
    out = tmp_path / "killed.zarr"
    args = build_args(tiny_corpus, tiny_teacher, out)
    rng = np.random.default_rng(7)
    kills = 0
    done_dir = out / "progress" / "done" / "c"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
        # Kill once this attempt has written at least one more shard, at a random moment after it.
        before = len(list(done_dir.glob("*"))) if done_dir.exists() else 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if done_dir.exists() and len(list(done_dir.glob("*"))) > before:
                break
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.15)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert kills >= 1
    resumed = zarr.open_group(str(out), mode="r")
    # shard_rows differ (8 vs 16) from the reference build, values must not
    for name in ROW_ARRAYS:
        np.testing.assert_array_equal(resumed[name][:], reference[name][:], err_msg=name)
    assert verify_cache(str(out)).ok


def torchrun_build(args: list[str], port: int, ranks: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(port),
         "-m", "cli.main", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def assert_same_rows(cache: Path, reference: Path) -> None:
    got, want = zarr.open_group(str(cache), mode="r"), zarr.open_group(str(reference), mode="r")
    for name in ROW_ARRAYS:
        np.testing.assert_array_equal(got[name][:], want[name][:], err_msg=name)


def test_two_ranks_under_torchrun_equal_one_process(dense_cache, tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "ddp.zarr"
    torchrun_build(build_args(tiny_corpus, tiny_teacher, out), port=29517)
    assert_same_rows(out, dense_cache)


def test_a_resumed_torchrun_build_deals_what_is_left_to_every_rank(dense_cache, tiny_corpus, tiny_teacher,
                                                                   tmp_path):
    out = tmp_path / "resumed.zarr"
    build(tiny_corpus, tiny_teacher, out, shard_rows=8)  # 8 shards, as build_args asks
    zarr.open_group(str(out), mode="r+", use_consolidated=False)["teacher/logits"][8:16] = 0  # shard 1 lost
    set_done(out, [1, 3, 5, 7], False)  # the even shards survived a killed build
    # Dealt by s % 2 == rank, rank 0 would have nothing to do and wait for rank 1's four shards.
    result = torchrun_build(build_args(tiny_corpus, tiny_teacher, out), port=29518)
    assert result.stdout.count("2 shards written, 4 already done") == 2, result.stdout
    assert_same_rows(out, dense_cache)
    assert verify_cache(str(out)).ok


def test_ranks_wait_at_the_last_barrier_longer_than_torchs_default(tiny_corpus, tiny_teacher, tmp_path,
                                                                    monkeypatch):
    """One CPU shard with IG outlasts torch's 30-minute collective timeout; the ranks that finish first
    must not fail while the slowest writes its last shard."""
    seen = {}

    def init_process_group(backend, timeout=None, **kwargs):
        seen.update(backend=backend, timeout=timeout)
        raise RuntimeError("stop here")

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="stop here"):
        build(tiny_corpus, tiny_teacher, tmp_path / "c.zarr")
    assert seen["backend"] == "gloo" and seen["timeout"] >= timedelta(hours=12)


def test_flipped_byte_is_caught_by_verify_naming_the_shard(dense_cache, tmp_path):
    copy = tmp_path / "flip.zarr"
    shutil.copytree(dense_cache, copy)
    shard_file = copy / "teacher" / "logits" / "c" / "1" / "0"
    data = bytearray(shard_file.read_bytes())
    data[20] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    result = cli("cache", "verify", str(copy))
    assert result.returncode == 1
    assert "shard 1" in result.stderr


def test_saliency_maps_integrated_outputs_and_completeness(tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "sal.zarr"
    build(tiny_corpus, tiny_teacher, out, saliency=True, ig_steps=4, ig_durations=(1.0, 0.5), crops_per_utt=1,
          shard_rows=32)
    cache = TeacherCache.open(out)
    sal = cache.saliency(slice(0, 8))
    assert sal.shape == (8, 2, 100, 80)
    assert zarr.open_group(str(out), mode="r")["teacher/saliency"].dtype == np.float16
    assert np.abs(sal).sum() > 0
    assert cache.integrated_logits(slice(0, 8)).shape == (8, 8)
    assert cache.integrated_embeddings(slice(0, 8)).shape == (8, 32)
    assert cache.settings["saliency"]["steps"] == 4
    assert cache.settings["saliency"]["integrated_input"] == "weighted"  # the default since issue 14


def test_integrated_gradients_satisfy_completeness():
    """sum(IG) -> F(x) - F(baseline) as the number of steps grows (right Riemann sum)."""
    torch.manual_seed(0)
    model = build_model("xvector", hid_dim=32, stats_dim=48, embed_dim=16)
    attach_head(model, 6)
    forward = TargetLogit(model.eval())
    feats = torch.randn(2, 60, 80)
    targets = torch.tensor([1, 4])
    with torch.no_grad():
        gap = forward(feats)[torch.arange(2), targets] - forward(torch.zeros_like(feats))[torch.arange(2), targets]

    def error(steps: int) -> float:
        total = integrated_gradients(forward, feats, targets, steps=steps).sum(dim=(1, 2))
        return ((total - gap).abs() / gap.abs()).max().item()

    coarse, fine = error(4), error(200)
    assert fine < 0.01, fine
    assert fine < coarse


def test_segment_bounds_cover_the_crop():
    assert segment_bounds(200, 100) == [(0, 100), (100, 200)]
    assert segment_bounds(250, 100) == [(0, 100), (100, 250)]
    assert segment_bounds(200, 400) == [(0, 200)]


# ----------------------------------------------------------------------------- bad input


def test_unknown_speakers_are_refused_unless_allowed(tiny_corpus, tiny_teacher, tmp_path):
    corpus = tmp_path / "mixed"
    corpus.mkdir()
    with open(corpus / "wav.scp", "w") as scp, open(corpus / "utt2spk", "w") as u2s:
        for part, count in (("train", None), ("test", 2)):
            lines = (tiny_corpus / part / "wav.scp").read_text().splitlines()[:count]
            for line in lines:
                utt, path = line.split()
                scp.write(f"{utt} {(tiny_corpus / part / path).resolve()}\n")
            u2s.write("\n".join((tiny_corpus / part / "utt2spk").read_text().splitlines()[:count]) + "\n")
    cfg = dict(data=str(corpus), teacher=str(tiny_teacher), crops_per_utt=1, crop_seconds=1.0, shard_rows=16,
               chunk_rows=8, batch_size=8, num_workers=0, device="cpu", show_progress=False)
    with pytest.raises(KdcacheError, match="not in the teacher's speaker list.*allow-unknown-speakers"):
        build_teacher_cache(BuildConfig(out=str(tmp_path / "a.zarr"), **cfg))
    build_teacher_cache(BuildConfig(out=str(tmp_path / "b.zarr"), allow_unknown_speakers=True, **cfg))
    labels = TeacherCache.open(tmp_path / "b.zarr").recipes(slice(None))["label"]
    assert (labels == -1).sum() == 2
    # label -1 is by design: such a cache verifies and pulls (it used to fail as "labels outside [0, S)")
    from kdcache.cache.pull import check_pull, pull_cache
    from kdcache.cache.verify import verify_cache

    report = verify_cache(str(tmp_path / "b.zarr"))
    assert report.ok, report.problems
    pulled = pull_cache(str(tmp_path / "b.zarr"), tmp_path / "pulled")
    check_pull(pulled)
    assert pulled.verify.ok, pulled.verify.problems


def test_unreadable_audio_mid_build_stops_naming_the_file_and_keeps_finished_shards(
        tiny_corpus, tiny_teacher, tmp_path, monkeypatch):
    corpus_dir = tmp_path / "broken"
    shutil.copytree(tiny_corpus, corpus_dir, ignore=shutil.ignore_patterns("noise", "rir"))
    import kdcache.teacher.build as build_module

    real_load = build_module.load_corpus
    victim = {}

    def load_then_lose_a_file(path):
        corpus = real_load(path)
        # The audio disappears after the corpus was listed (a flaky network disk, say).
        victim["path"] = corpus.path(5)
        victim["path"].unlink()
        return corpus

    monkeypatch.setattr(build_module, "load_corpus", load_then_lose_a_file)
    out = tmp_path / "c.zarr"
    cfg = dict(crops_per_utt=2, crop_seconds=1.0, shard_rows=8, chunk_rows=8)
    with pytest.raises(KdcacheError) as err:
        build(corpus_dir, tiny_teacher, out, **cfg)
    assert victim["path"].name in str(err.value) and "--skip-bad-audio" in str(err.value)
    done = zarr.open_group(str(out), mode="r")["progress/done"][:]
    assert not done.all()
    monkeypatch.setattr(build_module, "load_corpus", real_load)
    shutil.copy(tiny_corpus / victim["path"].relative_to(corpus_dir), victim["path"])
    victim["path"].write_bytes(b"RIFF....not audio")
    # (the corpus listing now fails on that file: refuse up front, naming it)
    with pytest.raises(KdcacheError, match=victim["path"].name):
        build(corpus_dir, tiny_teacher, out, **cfg)
    monkeypatch.setattr(build_module, "load_corpus", load_then_lose_a_file)
    shutil.copy(tiny_corpus / victim["path"].relative_to(corpus_dir), victim["path"])
    summary = build_teacher_cache(BuildConfig(
        data=str(corpus_dir / "train"), teacher=str(tiny_teacher), out=str(out), batch_size=8, num_workers=0,
        device="cpu", show_progress=False, skip_bad_audio=True, **cfg))
    cache = TeacherCache.open(out)
    assert cache.is_complete
    rec = cache.recipes(slice(None))
    bad_rows = np.flatnonzero(rec["bad"])
    assert summary.bad_rows == len(bad_rows) == 2  # both crops of the lost utterance
    assert all(rec["utterance"][r] == 5 for r in bad_rows)


def test_output_that_is_not_a_cache_is_refused(tiny_corpus, tiny_teacher, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    result = cli(*build_args(tiny_corpus, tiny_teacher, tmp_path / "notes"))
    assert result.returncode == 2 and "not a kdcache cache" in result.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_teacher_without_a_head_is_refused(tiny_corpus, tiny_teacher, tmp_path):
    headless = tmp_path / "headless"
    shutil.copytree(tiny_teacher, headless)
    state = torch.load(headless / "model.pt", weights_only=True)
    state.pop("projection.weight")
    torch.save(state, headless / "model.pt")
    config = json.loads((headless / "config.json").read_text())
    config["extra"].pop("weights_sha256")
    (headless / "config.json").write_text(json.dumps(config))
    result = cli(*build_args(tiny_corpus, headless, tmp_path / "x.zarr"))
    assert result.returncode == 2
    assert "projection.weight" in result.stderr and "Traceback" not in result.stderr


def test_cache_of_another_format_version_is_refused(dense_cache, tmp_path):
    copy = tmp_path / "v99.zarr"
    shutil.copytree(dense_cache, copy)
    meta_path = copy / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["kdcache"]["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(KdcacheError, match="99"):
        TeacherCache.open(copy).logits(slice(0, 2))


def test_augmented_cache_replays_the_exact_inputs(tiny_corpus, tiny_teacher, tmp_path):
    """Every augmentation choice comes from the row's seed: a re-run replays the teacher's input bit for
    bit (input crc), the student needs the same noise/RIR sets, and a different set is refused."""
    from kdcache.data.augment import AugmentConfig, Augmenter
    from kdcache.train.student import StudentTrainConfig, train_student

    augment = AugmentConfig(noise_dir=str(tiny_corpus / "noise"), reverb_dir=str(tiny_corpus / "rir"), prob=1.0)
    out = tmp_path / "aug.zarr"
    build(tiny_corpus, tiny_teacher, out, augment=augment)
    cache = TeacherCache.open(out)
    assert cache.settings["augment"] == Augmenter(augment).manifest()
    report = recompute_rows(cache, load_corpus(tiny_corpus / "train"), str(tiny_teacher), sample=len(cache),
                            augmenter=Augmenter(augment))
    assert report.crc_mismatches == [] and report.ok()
    plain = recompute_rows(cache, load_corpus(tiny_corpus / "train"), str(tiny_teacher), sample=16)
    assert len(plain.crc_mismatches) == 16  # without the augmentation the inputs differ
    student = dict(cache=str(out), data=str(tiny_corpus / "train"), student="xvector", loss="kd",
                   model_args={"hid_dim": 16, "stats_dim": 24, "embed_dim": 8}, epochs=1, batch_size=16,
                   num_workers=0, device="cpu", show_progress=False, verify_inputs=8)
    train_student(StudentTrainConfig(out=str(tmp_path / "s"), augment=augment, **student))
    with pytest.raises(KdcacheError, match="augmentation"):
        train_student(StudentTrainConfig(out=str(tmp_path / "s2"), **student))
    other = AugmentConfig(noise_dir=str(tiny_corpus / "noise"), reverb_dir=None, prob=1.0)
    with pytest.raises(KdcacheError, match="augmentation"):
        train_student(StudentTrainConfig(out=str(tmp_path / "s3"), augment=other, **student))
