"""Import a WeSpeaker checkpoint (``avg_model.pt``) as a kdcache model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def import_wespeaker(
    checkpoint: str | Path,
    arch: str,
    speakers_file: str | Path,
    out: str | Path,
    model_args: dict[str, Any] | None = None,
) -> ModelConfig:
    """Check the checkpoint against ``arch`` and write ``out/{model.pt,config.json}``.

    WeSpeaker's speed-perturbed recipes train ``3 * len(speakers)`` classes (speeds 1.0, 0.9, 1.1); the
    rows of speed 1.0 (the first ``len(speakers)``) are kept, as the other speeds are not speakers.
    """
    checkpoint = Path(checkpoint)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KdcacheError(f"{out}: exists and is not an empty folder; choose another --out (an import never "
                           "overwrites a model)")
    state = strip_prefix(load_state_dict_file(checkpoint))
    speakers = read_speaker_list(Path(speakers_file))
    if "projection.weight" not in state:
        raise KdcacheError(f"{checkpoint}: no 'projection.weight' (the AAM head) in the state_dict")
    head = state["projection.weight"]
    num_rows = head.shape[0]
    if num_rows == 3 * len(speakers):
        state["projection.weight"] = head[: len(speakers)].clone()
    elif num_rows != len(speakers):
        raise KdcacheError(
            f"{checkpoint}: head has {num_rows} classes but {speakers_file} lists {len(speakers)} speakers"
        )
    args = default_model_args(arch) | dict(model_args or {})
    build_model(arch, **args)  # validates arch and arguments before anything is written
    config = ModelConfig(
        arch=arch,
        model_args=args,
        embed_dim=int(head.shape[1]),
        speakers=speakers,
        features=FeatureConfig().to_dict(),
        extra={"imported_from": {"file": checkpoint.name, "format": "wespeaker"}},
    )
    model = build_speaker_model(config)
    load_weights(model, state, str(checkpoint))
    save_model_dir(out, model, config)
    return config
