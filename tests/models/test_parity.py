"""Parity with WeSpeaker: names, shapes, parameter counts and embeddings on rule-filled weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcache.models import MODEL_NAMES, build_model, count_parameters
from tests.models.wespeaker_fill import (
    fixture_input,
    load_fixture,
    relative_error,
    wespeaker_fill,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=MODEL_NAMES)
def case(request):
    """(name, meta, reference arrays, model with fixture weights in eval mode, filled state)."""
    name = request.param
    meta, ref = load_fixture(name)
    model = build_model(name, **meta["model_args"])
    state = wespeaker_fill(meta["state_dict"])
    model.load_state_dict(state, strict=True)
    model.eval()
    return name, meta, ref, model, state


def test_state_dict_keys_shapes_dtypes(case):
    _, meta, _, model, _ = case
    got = sorted(
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in model.state_dict().items()
    )
    assert got == meta["state_dict"]
    assert len(got) == meta["num_state_dict_entries"]


def test_parameter_and_buffer_counts(case):
    _, meta, _, model, _ = case
    assert count_parameters(model) == meta["num_params"]
    assert sum(b.numel() for b in model.buffers()) == meta["num_buffer_elements"]


def test_fill_rule_spot_checks(case):
    _, meta, _, _, state = case
    for key, first4 in meta["init_spot_checks"].items():
        np.testing.assert_allclose(state[key].flatten()[:4].double().numpy(), first4,
                                   rtol=0, atol=1e-7)


@pytest.mark.parametrize("frames", [200, 150])
def test_embeddings_match_reference(case, frames):
    name, meta, ref, model, _ = case
    inputs = meta["inputs"]
    seed = inputs["seed"] if frames == 200 else inputs["variable_length"]["seed"]
    x = fixture_input(seed, frames)
    np.testing.assert_allclose(x.flatten()[:4].numpy(), inputs[f"x{frames}_first4"],
                               rtol=0, atol=1e-7)
    with torch.no_grad():
        emb = model(x)
    assert isinstance(emb, torch.Tensor)
    expected = ref[f"emb_{frames}"]
    assert tuple(emb.shape) == expected.shape == (2, model.embed_dim)
    err = relative_error(emb.numpy(), expected)
    assert err < TOLERANCE, f"{name} T={frames}: relative error {err:.3g}"
