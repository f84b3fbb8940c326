"""Import a WeSpeaker model (``avg_model.pt``, with or without its folder's ``config.yaml``) as a
kdcache model directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdcache.data.features import FeatureConfig
from kdcache.data.text import read_text_lines
from kdcache.errors import KdcacheError
from kdcache.models import build_model, default_model_args
from kdcache.models.checkpoint import (
    ModelConfig,
    build_speaker_model,
    load_state_dict_file,
    load_weights,
    save_model_dir,
    strip_prefix,
)
from kdcache.models.wespeaker_config import from_wespeaker

WESPEAKER_WEIGHTS = "avg_model.pt"
WESPEAKER_CONFIG = "config.yaml"
EXPORTED_SPEAKERS = "speakers.txt"  # written by `kdcache export --format wespeaker`


def read_speaker_list(path: Path) -> list[str]:
    """Speaker ids in class-index order: one per line, either ``speaker`` (the line order is the class
    order) or WeSpeaker's ``spk2id`` lines ``speaker index`` (the indices, 0 to n-1 once each, give the
    order). KdcacheError naming the file and line for anything else."""
    speakers: list[str] = []
    indices: list[int | None] = []
    for line_no, line in enumerate(read_text_lines(path, "speaker list"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise KdcacheError(f"{path}:{line_no}: expected 'speaker' or 'speaker index', got {line.strip()!r}")
        speakers.append(fields[0])
        indices.append(int(fields[1]) if len(fields) == 2 else None)
    if not speakers:
        raise KdcacheError(f"{path}: empty speaker list")
    if len(set(speakers)) != len(speakers):
        duplicate = next(s for s in speakers if speakers.count(s) > 1)
        raise KdcacheError(f"{path}: duplicate speaker id {duplicate!r}")
    if any(i is not None for i in indices):
        if None in indices or sorted(indices) != list(range(len(speakers))):  # type: ignore[type-var]
            raise KdcacheError(f"{path}: the indices must number the {len(speakers)} speakers 0 to "
                               f"{len(speakers) - 1}, once each, on every line")
        speakers = [s for _, s in sorted(zip(indices, speakers))]  # type: ignore[arg-type]
    return speakers


def speakers_from_utt2spk(path: Path) -> list[str]:
    """The sorted distinct speakers of a Kaldi ``utt2spk`` file: WeSpeaker's class order (``spk2id``)."""
    speakers = set()
    for line_no, line in enumerate(read_text_lines(path, "utt2spk file"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise KdcacheError(f"{path}:{line_no}: expected 'utterance speaker', got {line.strip()!r}")
        speakers.add(fields[1])
    if not speakers:
        raise KdcacheError(f"{path}: no utterances")
    return sorted(speakers)


def _fit_head(state: dict[str, torch.Tensor], speakers: list[str], source: str, speakers_source: str,
              log: Callable[[str], None]) -> None:
    """Check the head against the speakers; keep the first S rows of a speed-perturbed 3S-row head."""
    if "projection.weight" not in state:
        raise KdcacheError(f"{source}: no 'projection.weight' (the AAM head) in the state_dict")
    head = state["projection.weight"]
    rows, count = int(head.shape[0]), len(speakers)
    if rows == 3 * count:
        # WeSpeaker's speed perturbation (0.9, 1.1) makes each speed a class of its own; its LM stage
        # (wespeaker/utils/checkpoint.py) keeps the first rows, the classes of speed 1.0.
        state["projection.weight"] = head[:count].clone()
        log(f"{source}: head has {rows} rows = 3 x {count} speakers (speed-perturbed training): kept the first "
            f"{count} (speed 1.0), as WeSpeaker's large-margin fine-tuning does")
    elif rows != count:
        raise KdcacheError(f"{source}: head has {rows} classes but {speakers_source} lists {count} speakers "
                           f"(a speed-perturbed head would have 3 x {count} = {3 * count})")


def _write(state: dict[str, torch.Tensor], source: str, arch: str, args: dict[str, Any], speakers: list[str],
           out: str | Path, features: FeatureConfig, scale: float, margin: float,
           provenance: dict[str, Any]) -> ModelConfig:
    build_model(arch, **args)  # validates arch and arguments before anything is written
    config = ModelConfig(
        arch=arch, model_args=args, embed_dim=int(state["projection.weight"].shape[1]), speakers=speakers,
        features=features.to_dict(), head_scale=scale, head_margin=margin,
        extra={"imported_from": provenance},
    )
    model = build_speaker_model(config)
    load_weights(model, state, source)
    save_model_dir(out, model, config)
    return config


def import_wespeaker(
    checkpoint: str | Path,
    arch: str,
    speakers_file: str | Path,
    out: str | Path,
    model_args: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    speakers: list[str] | None = None,
) -> ModelConfig:
    """Check the checkpoint against ``arch`` and write ``out/{model.pt,config.json}``.

    The speakers are read from ``speakers_file`` unless given as ``speakers`` (then ``speakers_file``
    only names their source in messages). WeSpeaker's speed-perturbed recipes train
    ``3 * len(speakers)`` classes (speeds 1.0, 0.9, 1.1); the rows of speed 1.0 (the first
    ``len(speakers)``) are kept, as the other speeds are not speakers.
    """
    checkpoint = Path(checkpoint)
    out = _empty_out(out)
    state = strip_prefix(load_state_dict_file(checkpoint))
    if speakers is None:
        speakers = read_speaker_list(Path(speakers_file))
    _fit_head(state, speakers, str(checkpoint), str(speakers_file), log)
    args = default_model_args(arch) | dict(model_args or {})
    return _write(state, str(checkpoint), arch, args, speakers, out, FeatureConfig(), 32.0, 0.2,
                  {"file": checkpoint.name, "format": "wespeaker"})


def _empty_out(out: str | Path) -> Path:
    """``out`` if it is absent or an empty folder; an import never overwrites a model."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KdcacheError(f"{out}: exists and is not an empty folder; choose another --out (an import never "
                           "overwrites a model)")
    return out


def read_wespeaker_config(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise KdcacheError(f"{path}: not found (a WeSpeaker model folder holds {WESPEAKER_WEIGHTS} and {WESPEAKER_CONFIG})")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as bad:
        raise KdcacheError(f"{path}: not valid YAML ({' '.join(str(bad).split())[:200]})") from None


def import_wespeaker_dir(
    model_dir: str | Path,
    out: str | Path,
    speakers: list[str] | None = None,
    speakers_source: str = "",
    arch: str | None = None,
    model_args: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> ModelConfig:
    """Import a WeSpeaker model folder (``avg_model.pt`` + ``config.yaml``).

    The architecture, ``model_args``, head scale, final margin and fbank settings come from
    ``config.yaml``; ``arch`` overrides its model name and ``model_args`` update its arguments.
    ``speakers`` are the class order (WeSpeaker: the sorted training speaker ids); without them the
    folder's ``speakers.txt`` (written by ``kdcache export``) is used.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise KdcacheError(f"{model_dir}: WeSpeaker model folder not found")
    out = _empty_out(out)
    config_path = model_dir / WESPEAKER_CONFIG
    weights = model_dir / WESPEAKER_WEIGHTS
    settings = from_wespeaker(read_wespeaker_config(config_path), str(config_path), arch=arch)
    if speakers is None:
        listed = model_dir / EXPORTED_SPEAKERS
        if not listed.is_file():
            raise KdcacheError(f"{model_dir}: give the training speakers with --speakers, --utt2spk or --data "
                               "(WeSpeaker's class order is the sorted speaker ids of its training utt2spk)")
        speakers, speakers_source = read_speaker_list(listed), str(listed)
    state = strip_prefix(load_state_dict_file(weights))
    _fit_head(state, speakers, str(weights), speakers_source or "the speaker list", log)
    args = default_model_args(settings["arch"]) | settings["model_args"] | dict(model_args or {})
    return _write(state, str(weights), settings["arch"], args, speakers, out, settings["features"],
                  settings["scale"], settings["margin"],
                  {"folder": model_dir.name, "file": WESPEAKER_WEIGHTS, "format": "wespeaker",
                   "wespeaker_model": settings["wespeaker_model"]})
