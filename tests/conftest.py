"""Shared test setup: one intra-op thread (2-core machine; see README, Performance)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
