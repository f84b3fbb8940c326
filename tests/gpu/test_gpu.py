"""The GPU path: build and train under bf16 autocast, pinned memory with non-blocking copies, and a cache built on
the GPU equal to one built on the CPU within bf16 tolerance. Marked ``gpu``; skipped without CUDA.

Run with ``benchmarks/gpu_check.sh`` (or ``python -m pytest -m gpu tests/gpu``) on a machine with a GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdcache.cache import TeacherCache
from tests.faults.conftest import BUILD, STUDENT_ARGS, build_cache

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%). Through the tiny ResNet34 teacher the
# cosines s*cos/s stay within 0.03 of float32 and the embedding directions within 3% (measured bounds
# are recorded by the test on failure); the predicted speaker may flip only on near ties.
COS_ATOL = 0.03
EMB_REL = 0.03
LOSS_REL = 0.03


@pytest.fixture(scope="module")
def gpu_and_cpu_caches(tiny_corpus, tiny_teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    cpu = build_cache(tiny_corpus, tiny_teacher, root / "cpu.zarr")
    gpu = build_cache(tiny_corpus, tiny_teacher, root / "gpu.zarr", device="cuda", num_workers=2)
    return cpu, gpu


def test_build_on_gpu_with_autocast_equals_the_cpu_build_within_bf16_tolerance(gpu_and_cpu_caches):
    cpu, gpu = (TeacherCache.open(p) for p in gpu_and_cpu_caches)
    assert gpu.is_complete and len(gpu) == len(cpu) == 64
    rows = np.arange(len(cpu))
    scale = float(cpu.settings["teacher"]["scale"])
    lc, lg = cpu.logits(rows), gpu.logits(rows)
    assert np.isfinite(lg).all()
    cos_diff = float(np.abs(lc - lg).max() / scale)
    assert cos_diff <= COS_ATOL, f"max |cos diff| {cos_diff:.4f}"
    ec, eg = cpu.embeddings(rows), gpu.embeddings(rows)
    rel = float((np.linalg.norm(ec - eg, axis=1) / np.linalg.norm(ec, axis=1)).max())
    assert rel <= EMB_REL, f"max embedding rel. diff {rel:.4f}"
    top2 = np.sort(lc, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * COS_ATOL * scale  # not a near tie
    assert (lc.argmax(1) == lg.argmax(1))[clear].all()
    # The replayed inputs are computed on the CPU in both builds: identical crcs.
    np.testing.assert_array_equal(cpu.recipes(rows)["input_crc"], gpu.recipes(rows)["input_crc"])


def test_losses_are_float32_under_bf16_autocast():
    from kdcache.distill.losses import ce_loss, dkd_loss, multi_level_loss

    torch.manual_seed(0)
    s = torch.randn(16, 200, device="cuda")
    t = torch.randn(16, 200, device="cuda")
    y = torch.randint(0, 200, (16,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        lin = torch.nn.Linear(200, 200).cuda()
        sb = lin(s)
        assert sb.dtype == torch.bfloat16
        values = {"ce": ce_loss(sb, y), "dkd": dkd_loss(sb, t, y, temperature=2.0)}
        values |= {f"mlkd {k}": v for k, v in multi_level_loss(sb, t).items()}
    for name, v in values.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), name
        ref = {"ce": lambda: ce_loss(sb.float(), y), "dkd": lambda: dkd_loss(sb.float(), t, y, temperature=2.0)}.get(name)
        if ref is not None:
            assert torch.allclose(v, ref(), rtol=1e-5), name


def _train(cache, corpus, out, monkeypatch=None, float32: bool = False) -> list[dict]:
    import kdcache.train.student as student
    from kdcache.train.student import StudentTrainConfig, train_student

    if float32:
        monkeypatch.setattr(student, "autocast_for", lambda device: torch.autocast("cuda", enabled=False))
    train_student(StudentTrainConfig(
        cache=str(cache), data=str(corpus / "train"), student="xvector", loss="dkd", out=str(out),
        model_args=dict(STUDENT_ARGS), epochs=2, batch_size=16, lr=0.05, num_workers=1, device="cuda",
        show_progress=False, seed=5,
    ))
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_student_with_bf16_autocast_matches_float32_training(gpu_and_cpu_caches, tiny_corpus, tmp_path,
                                                                    monkeypatch):
    cpu_cache, _ = gpu_and_cpu_caches
    bf16 = _train(cpu_cache, tiny_corpus, tmp_path / "bf16")
    fp32 = _train(cpu_cache, tiny_corpus, tmp_path / "fp32", monkeypatch, float32=True)
    assert len(bf16) == len(fp32) == 2
    for a, b in zip(bf16, fp32):
        for key in ("loss", "ce"):
            if key in a:
                assert np.isfinite(a[key]) and np.isfinite(b[key])
                assert abs(a[key] - b[key]) <= LOSS_REL * abs(b[key]), (key, a[key], b[key])


def test_pinned_batches_copy_non_blocking_to_the_gpu(gpu_and_cpu_caches, tiny_corpus):
    from torch.utils.data import DataLoader

    from kdcache.cache.sampler import BlockSampler
    from kdcache.data.corpus import load_corpus
    from kdcache.data.datasets import worker_init
    from kdcache.data.features import FeatureConfig
    from kdcache.train.student import CacheBatches

    cache = TeacherCache.open(gpu_and_cpu_caches[0])
    dataset = CacheBatches(cache, load_corpus(tiny_corpus / "train"), FeatureConfig.from_dict(cache.settings["features"]),
                           None, with_saliency=False)
    loader = DataLoader(dataset, sampler=BlockSampler(len(cache), 16, block_rows=BUILD["chunk_rows"], seed=0),
                        batch_size=None, num_workers=1, worker_init_fn=worker_init, pin_memory=True)
    stream = torch.cuda.Stream()
    seen = 0
    for batch in loader:
        for name, value in batch.items():
            assert value.is_pinned(), name
            with torch.cuda.stream(stream):
                on_gpu = value.to("cuda", non_blocking=True)
            stream.synchronize()
            assert torch.equal(on_gpu.cpu(), value), name
        seen += 1
    assert seen == 4
