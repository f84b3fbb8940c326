"""--num-avg on train-student: the student (and its head) is the mean of its last epochs."""

from __future__ import annotations

import torch

from kdcache.models.checkpoint import load_model_dir, read_config
from kdcache.teacher.build import BuildConfig, build_teacher_cache
from kdcache.train.student import StudentTrainConfig, train_student


def test_student_weights_are_the_mean_of_the_last_epochs(tiny_corpus, tiny_teacher, tmp_path):
    cache = tmp_path / "cache.zarr"
    build_teacher_cache(BuildConfig(data=str(tiny_corpus / "train"), teacher=str(tiny_teacher), out=str(cache),
                                    crops_per_utt=1, crop_seconds=1.0, shard_rows=16, chunk_rows=8, batch_size=16,
                                    num_workers=0, device="cpu", show_progress=False))
    out = tmp_path / "student"
    train_student(StudentTrainConfig(
        cache=str(cache), data=str(tiny_corpus / "train"), student="xvector", loss="dkd", out=str(out),
        model_args={"hid_dim": 16, "stats_dim": 32, "embed_dim": 16}, epochs=3, batch_size=8, lr=0.05,
        num_workers=0, device="cpu", show_progress=False, num_avg=2))
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("model_*.pt")) == ["model_2.pt", "model_3.pt"]
    e2, e3 = (torch.load(ckpt / f"model_{e}.pt", weights_only=True) for e in (2, 3))
    final = torch.load(out / "model.pt", weights_only=True)
    assert sorted(final) == sorted(e3)  # the speaker model and its head, no adapter or wrapper prefix
    for key in ("frame_1.conv_1d.weight", "projection.weight", "frame_2.bn.running_mean"):
        torch.testing.assert_close(final[key], (e2[key] + e3[key]) / 2, rtol=0, atol=1e-7)
    assert read_config(out).extra["averaged"] == {"epochs": [2, 3], "num": 2}
    load_model_dir(out)
