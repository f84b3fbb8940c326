"""The fingerprint covers every setting the cached values depend on: the base fields and the setting
of each teacher output (schema.OUTPUTS), as listed in FINGERPRINT_FIELDS."""

from __future__ import annotations

from kdcache.cache.fingerprint import FINGERPRINT_FIELDS, cache_fingerprint, fingerprint_inputs
from kdcache.cache.schema import OUTPUTS

SETTINGS = {"teacher": {"weights_sha256": "ab", "arch": "x"}, "features": {"num_mel_bins": 80},
            "crop_plan": {"seconds": 2.0}, "corpus": {"sha256": "cd"}, "augment": None, "saliency": None,
            "logits": "dense", "created": "today", "tool_version": "1"}


def test_fingerprint_inputs_are_the_listed_fields_and_every_output_setting():
    assert list(fingerprint_inputs(SETTINGS)) == list(FINGERPRINT_FIELDS)
    assert {o.setting for o in OUTPUTS if o.setting} <= set(FINGERPRINT_FIELDS)
    assert fingerprint_inputs(SETTINGS)["logits"] == "dense"
    assert fingerprint_inputs(SETTINGS)["teacher_weights_sha256"] == "ab"


def test_each_input_changes_the_fingerprint_and_provenance_alone_does_not():
    base = cache_fingerprint(SETTINGS)
    assert cache_fingerprint(SETTINGS | {"created": "tomorrow", "tool_version": "2"}) == base
    for key, value in [("logits", "uint8"), ("saliency", {"steps": 50}), ("augment", {"noise": []}),
                       ("crop_plan", {"seconds": 1.0}), ("features", {"num_mel_bins": 40}),
                       ("corpus", {"sha256": "ef"}), ("teacher", {"weights_sha256": "00"})]:
        assert cache_fingerprint(SETTINGS | {key: value}) != base, key
