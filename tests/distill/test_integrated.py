"""IML-KD's integrated inputs against hand-computed values; the mode a cache records."""

from __future__ import annotations

import pytest
import torch

from kdcache.distill.integrated import cached_mode, integrated_inputs
from kdcache.errors import KdcacheError


def test_weighted_scales_each_bin_by_one_plus_its_share_of_the_peak() -> None:
    feats = torch.tensor([[[1.0, -2.0], [3.0, 4.0]]])  # [B=1, T=2, F=2]
    maps = torch.tensor([[[[0.0, 2.0], [-4.0, 1.0]], [[0.0, 2.0], [-4.0, 3.0]]]])  # two durations
    # mean map [[0, 2], [-4, 2]], peak |A| 4: factors [[1, 1.5], [2, 1.5]]
    expected = torch.tensor([[[1.0, -3.0], [6.0, 6.0]]])
    torch.testing.assert_close(integrated_inputs(feats, maps, "weighted"), expected)
    torch.testing.assert_close(integrated_inputs(feats, maps), expected)  # the default


def test_attribution_is_the_mean_map_at_the_fbank_rms() -> None:
    feats = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # rms sqrt(25 / 4) = 2.5
    maps = torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]]])  # rms sqrt(2 / 4)
    scale = 2.5 / (0.5 ** 0.5)
    torch.testing.assert_close(integrated_inputs(feats, maps, "attribution"), maps[:, 0] * scale)


def test_bad_mode_and_shapes_are_refused() -> None:
    with pytest.raises(KdcacheError, match="choose one of"):
        integrated_inputs(torch.zeros(1, 2, 2), torch.zeros(1, 1, 2, 2), "raw")
    with pytest.raises(KdcacheError, match="does not fit"):
        integrated_inputs(torch.zeros(1, 2, 2), torch.zeros(1, 1, 3, 2))


def test_cached_mode_defaults_to_attribution_for_caches_that_did_not_record_it() -> None:
    assert cached_mode({"saliency": {"integrated_input": "weighted"}}) == "weighted"
    assert cached_mode({"saliency": {"steps": 50}}) == "attribution"
    assert cached_mode({}) == "attribution"
