"""Fbank settings recorded in outside documents (cache attributes, a model's config.json), validated."""

from __future__ import annotations

from kdcache.data.features import _WINDOWS, FeatureConfig
from kdcache.errors import KdcacheError
from kdcache.fields import Fields

FEATURE_FIELDS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "window_type", "dither", "cmn")
WINDOWS = _WINDOWS


def parse_features(fields: Fields) -> FeatureConfig:
    """A recorded fbank config (cache attributes or a model's config.json) -> FeatureConfig."""
    fields.only(FEATURE_FIELDS)
    defaults = FeatureConfig()
    values = {
        "sample_rate": fields.integer("sample_rate", 1000, 384_000, default=defaults.sample_rate),
        "num_mel_bins": fields.integer("num_mel_bins", 1, 1024, default=defaults.num_mel_bins),
        "frame_length_ms": fields.number("frame_length_ms", 0, 1000, min_open=True, default=defaults.frame_length_ms),
        "frame_shift_ms": fields.number("frame_shift_ms", 0, 1000, min_open=True, default=defaults.frame_shift_ms),
        "window_type": fields.string("window_type", choices=WINDOWS,
                                     default=defaults.window_type),
        "dither": fields.number("dither", 0, 1e4, default=defaults.dither),
        "cmn": fields.boolean("cmn", default=defaults.cmn),
    }
    try:
        config = FeatureConfig(**values)
    except KdcacheError as bad:
        fields.fail(f"{fields.where}: {bad}")
    if config.window_size < 2 or config.window_shift < 1:
        fields.fail(f"{fields.where}: a frame of {config.frame_length_ms} ms every {config.frame_shift_ms} ms "
                    f"at {config.sample_rate} Hz holds no samples")
    return config


