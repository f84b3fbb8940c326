"""Shared test setup: one intra-op thread (2-core machine; see README, Performance)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

# A tiny corpus and a tiny teacher shared by the cache, training and CLI tests (built once per run).
TINY_TEACHER_ARGS = {"m_channels": 4, "embed_dim": 32}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """8 training speakers x 4 utterances of 1.5 s, 4 test speakers; noise and RIR sets."""
    from kdcache.data.synthetic import make_synthetic_corpus

    root = tmp_path_factory.mktemp("corpus")
    make_synthetic_corpus(root, speakers=8, utterances_per_speaker=4, seconds=1.5, test_speakers=4, seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_teacher(tiny_corpus, tmp_path_factory):
    """A narrow ResNet34 trained for 2 epochs on the tiny corpus (a model directory)."""
    from kdcache.train.teacher import TeacherTrainConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "model"
    train_teacher(TeacherTrainConfig(
        data=str(tiny_corpus / "train"), arch="resnet34", out=str(out), epochs=2, batch_size=8,
        crop_seconds=1.0, num_workers=0, device="cpu", model_args=dict(TINY_TEACHER_ARGS), show_progress=False,
    ))
    return out
