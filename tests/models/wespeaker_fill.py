"""Test helper: the deterministic weight-fill rule of the WeSpeaker parity fixtures.

See tests/fixtures/wespeaker/README.md ("Weight rule and inputs"). Not library code.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wespeaker"

# kdcache model name -> fixture stem
FIXTURE_OF = {
    "xvector": "xvec_tstp_emb512",
    "resnet34": "resnet34_tstp_emb256",
    "resnet293": "resnet293_tstp_emb256",
    "ecapa_c512": "ecapa_tdnn_glob_c512_astp_emb192",
    "ecapa_c1024": "ecapa_tdnn_glob_c1024_astp_emb192",
    "campplus": "campplus_tstp_emb512",
}

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def load_fixture(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON metadata, {'emb_200': [2, D], 'emb_150': [2, D]}) of model `name`."""
    stem = FIXTURE_OF[name]
    meta = json.loads((FIXTURES / f"{stem}.json").read_text())
    with np.load(FIXTURES / f"{stem}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


def fill_value(key: str, shape: list[int], dtype: str) -> torch.Tensor:
    """The fixture value of one state_dict entry (seeded by crc32 of its key)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=_DTYPES[dtype])
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        noise = 0.1 * torch.randn(shape, generator=g)
        return 1.0 + noise if key.endswith(".weight") else noise
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def wespeaker_fill(keys_shapes: list[list[Any]]) -> dict[str, torch.Tensor]:
    """State dict from the fixture's [[key, shape, dtype], ...] list."""
    return {key: fill_value(key, shape, dtype) for key, shape, dtype in keys_shapes}


def fixture_input(seed: int, frames: int) -> torch.Tensor:
    """The fixture input [2, frames, 80]."""
    return torch.randn(2, frames, 80, generator=torch.Generator().manual_seed(seed))


def relative_error(emb: np.ndarray, ref: np.ndarray) -> float:
    """max|emb - ref| / max row L2 norm of ref."""
    return float(np.abs(emb - ref).max() / np.linalg.norm(ref, axis=1).max())
