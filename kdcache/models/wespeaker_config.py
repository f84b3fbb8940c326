"""WeSpeaker's ``config.yaml``: model names, ``model_args``, ``projection_args`` and fbank settings.

A WeSpeaker model folder (a released pretrained model, or ``exp/<run>`` after training) holds
``avg_model.pt`` (a plain state_dict, AAM head as ``projection.weight``) and ``config.yaml``, which
WeSpeaker loads as ``get_speaker_model(config['model'])(**config['model_args'])``. kdcache's six
architectures carry WeSpeaker's parameter names, so only the names and arguments need mapping here.

kdcache's narrow CPU variants add one argument WeSpeaker's named constructors do not take:
``m_channels`` of the ResNets (WeSpeaker fixes 32) and ``channels`` of ECAPA-TDNN (fixed by the name,
512 or 1024). They are written into ``model_args`` all the same (kdcache reads them back), and
:func:`to_wespeaker` reports them so the caller can warn that stock WeSpeaker cannot build that model.
"""

from __future__ import annotations

from typing import Any

from kdcache.data.features import FeatureConfig
from kdcache.errors import KdcacheError

# WeSpeaker model name -> kdcache architecture
WESPEAKER_TO_KDCACHE = {
    "XVEC": "xvector",
    "ResNet34": "resnet34",
    "ResNet293": "resnet293",
    "ECAPA_TDNN_GLOB_c512": "ecapa_c512",
    "ECAPA_TDNN_GLOB_c1024": "ecapa_c1024",
    "CAMPPlus": "campplus",
}
KDCACHE_TO_WESPEAKER = {v: k for k, v in WESPEAKER_TO_KDCACHE.items()}

# The arguments WeSpeaker's named constructors take (wespeaker/models/*.py).
_WESPEAKER_ARGS = {
    "xvector": ("feat_dim", "hid_dim", "stats_dim", "embed_dim", "pooling_func"),
    "resnet34": ("feat_dim", "embed_dim", "pooling_func", "two_emb_layer"),
    "resnet293": ("feat_dim", "embed_dim", "pooling_func", "two_emb_layer"),
    "ecapa_c512": ("feat_dim", "embed_dim", "pooling_func", "emb_bn"),
    "ecapa_c1024": ("feat_dim", "embed_dim", "pooling_func", "emb_bn"),
    "campplus": ("feat_dim", "embed_dim", "pooling_func", "growth_rate", "bn_size", "init_channels", "config_str"),
}


def known_models() -> str:
    """'XVEC (xvector), ResNet34 (resnet34), ...' for error messages."""
    return ", ".join(f"{w} ({k})" for w, k in WESPEAKER_TO_KDCACHE.items())


def to_wespeaker(arch: str, model_args: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """kdcache ``arch`` and full ``model_args`` -> (WeSpeaker model name, its ``model_args``, the
    arguments stock WeSpeaker cannot take because they differ from the value its constructor fixes)."""
    from kdcache.models import default_model_args

    if arch not in KDCACHE_TO_WESPEAKER:
        raise KdcacheError(f"architecture {arch!r} has no WeSpeaker name; exportable: {', '.join(KDCACHE_TO_WESPEAKER)}")
    defaults = default_model_args(arch)
    args = {k: model_args[k] for k in _WESPEAKER_ARGS[arch] if k in model_args}
    extras = []
    for key, value in model_args.items():
        if key in args:
            continue
        if value != defaults.get(key):
            args[key] = value
            extras.append(f"{key}={value}")
    return KDCACHE_TO_WESPEAKER[arch], args, extras


def _section(config: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise KdcacheError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
    return value


def from_wespeaker(config: Any, source: str, arch: str | None = None) -> dict[str, Any]:
    """Read a WeSpeaker ``config.yaml`` (already parsed) into kdcache terms.

    Returns ``{"arch", "model_args", "scale", "margin", "num_class", "features", "speed_perturb",
    "wespeaker_model"}``;
    ``arch`` overrides the config's model name. ``num_class`` is None when the config does not say.
    """
    if not isinstance(config, dict):
        raise KdcacheError(f"{source}: expected a YAML mapping (WeSpeaker's config.yaml)")
    name = config.get("model")
    if arch is None:
        if name is None:
            raise KdcacheError(f"{source}: no 'model' (e.g. model: ResNet34); pass --arch")
        if name not in WESPEAKER_TO_KDCACHE:
            raise KdcacheError(f"{source}: model {name!r} is not an architecture kdcache has; it has {known_models()}")
        arch = WESPEAKER_TO_KDCACHE[name]
    model_args = dict(_section(config, "model_args", source))
    projection = _section(config, "projection_args", source)
    project_type = projection.get("project_type", "arc_margin")
    if project_type != "arc_margin":
        raise KdcacheError(f"{source}: projection_args.project_type {project_type!r}: kdcache's head is arc_margin "
                           "(WeSpeaker's ArcMarginProduct) only")
    dataset = _section(config, "dataset_args", source)
    frontend = dataset.get("frontend", "fbank")
    if frontend != "fbank":
        raise KdcacheError(f"{source}: dataset_args.frontend {frontend!r}: kdcache models read fbank features only")
    fbank = _section(dataset, "fbank_args", source) if "fbank_args" in dataset else {}
    features = FeatureConfig(
        sample_rate=int(dataset.get("resample_rate", 16000)),
        num_mel_bins=int(fbank.get("num_mel_bins", model_args.get("feat_dim", 80))),
        frame_length_ms=float(fbank.get("frame_length", 25)),
        frame_shift_ms=float(fbank.get("frame_shift", 10)),
        # WeSpeaker dithers (1.0) in training only; embeddings and caches are computed without it.
        dither=0.0,
    )
    margin = _section(config, "margin_update", source).get("final_margin", 0.2)
    num_class = projection.get("num_class")
    return {
        "arch": arch,
        "model_args": model_args,
        "scale": float(projection.get("scale", 32.0)),
        "margin": float(margin),
        "num_class": int(num_class) if num_class is not None else None,
        "features": features,
        "speed_perturb": bool(dataset.get("speed_perturb", False)),
        "wespeaker_model": name,
    }


def _number(value: float) -> int | float:
    """10.0 -> 10 (WeSpeaker's configs write whole milliseconds as integers)."""
    return int(value) if float(value).is_integer() else float(value)


def wespeaker_config(arch: str, model_args: dict[str, Any], embed_dim: int, num_class: int, scale: float,
                     margin: float, features: FeatureConfig, crop_frames: int = 200,
                     margin_epochs: tuple[int, int] = (20, 40)) -> tuple[dict[str, Any], list[str]]:
    """The ``config.yaml`` of a WeSpeaker model folder for a kdcache model, and the arguments stock
    WeSpeaker cannot take (see :func:`to_wespeaker`)."""
    name, args, extras = to_wespeaker(arch, model_args)
    config = {
        "model": name,
        "model_init": None,
        "model_args": args,
        "projection_args": {
            "project_type": "arc_margin", "scale": float(scale), "easy_margin": False,
            "embed_dim": int(embed_dim), "num_class": int(num_class), "do_lm": False,
        },
        "margin_scheduler": "MarginScheduler",
        "margin_update": {
            "initial_margin": 0.0, "final_margin": float(margin), "increase_start_epoch": int(margin_epochs[0]),
            "fix_start_epoch": int(margin_epochs[1]), "update_margin": True, "increase_type": "exp",
        },
        "dataset_args": {
            "resample_rate": int(features.sample_rate),
            "speed_perturb": False,
            "num_frms": int(crop_frames),
            "frontend": "fbank",
            "fbank_args": {
                "num_mel_bins": int(features.num_mel_bins), "frame_shift": _number(features.frame_shift_ms),
                "frame_length": _number(features.frame_length_ms), "dither": 1.0,
            },
        },
    }
    return config, extras
