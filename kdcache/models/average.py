"""Checkpoint averaging as WeSpeaker's ``wespeaker/bin/average_model.py`` does it.

WeSpeaker sorts the epoch checkpoints ``model_<epoch>.pt`` by epoch, takes the last ``--num`` and
divides the sum of **every** state_dict entry by N, batch-norm running means and variances included.
Its integer ``num_batches_tracked`` counters become floats there (``torch.true_divide``); here integer
and boolean entries are kept from the last checkpoint instead, so the result loads into a model with
the same dtypes. Sums are taken in float64 and cast back to each entry's dtype.

kdcache's training loop writes the same files (``OUT/checkpoints/model_<epoch>.pt``, plain state_dicts
of the speaker model with its ``projection`` head), so a kdcache run and a WeSpeaker ``exp/*/models``
folder are averaged alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kdcache.errors import KdcacheError

CHECKPOINT_DIR = "checkpoints"
EPOCH_FILE = re.compile(r"^model_(\d+)\.pt$")

# WeSpeaker's VoxCeleb recipe averages the last 10 of 150 epochs.
_RECIPE_NUM_AVG = 10
_RECIPE_EPOCHS = 150


def default_num_avg(epochs: int) -> int:
    """WeSpeaker's 10 of 150 epochs scaled to the run: round(epochs / 15), at least 1.

    A 6-epoch run averages nothing (1), 30 epochs average 2, 150 epochs average 10."""
    return max(1, round(_RECIPE_NUM_AVG * int(epochs) / _RECIPE_EPOCHS))


def check_num_avg(num_avg: int, epochs: int, option: str = "--num-avg") -> None:
    """Refuse an average over more epochs than the run has, before anything is written."""
    if num_avg < 1:
        raise KdcacheError(f"{option} {num_avg}: must be at least 1")
    if num_avg > epochs:
        raise KdcacheError(f"{option} {num_avg} is larger than the number of epochs ({epochs}): "
                           f"there will be only {epochs} epoch checkpoints to average")


def epoch_file(folder: Path, epoch: int) -> Path:
    return Path(folder) / f"model_{int(epoch)}.pt"


def epoch_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``model_<epoch>.pt`` in ``folder``, sorted by epoch."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = EPOCH_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def last_checkpoints(folder: str | Path, num: int) -> list[tuple[int, Path]]:
    """The last ``num`` epoch checkpoints of ``folder``; one line naming the folder if there are fewer."""
    found = epoch_checkpoints(folder)
    if num < 1:
        raise KdcacheError(f"--num {num}: must be at least 1")
    if num > len(found):
        have = f"epochs {found[0][0]}-{found[-1][0]}" if found else "none"
        raise KdcacheError(
            f"{folder}: asked to average the last {num} epoch checkpoints (model_<epoch>.pt) but there are "
            f"{len(found)} ({have})")
    return found[-num:]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of every floating-point entry over ``states`` (same keys and shapes in each).

    Integer and boolean entries (``num_batches_tracked``) come from the last state unchanged.
    """
    if not states:
        raise KdcacheError("no checkpoints to average")
    keys = list(states[-1])
    for index, state in enumerate(states):
        if set(state) != set(keys):
            extra = sorted(set(state) ^ set(keys))[:3]
            raise KdcacheError(f"checkpoint {index + 1} of {len(states)} has different entries (e.g. {extra})")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        last = states[-1][key]
        if not (last.is_floating_point() or last.is_complex()):
            out[key] = last.clone()
            continue
        total = torch.zeros(last.shape, dtype=torch.float64)
        for state in states:
            if tuple(state[key].shape) != tuple(last.shape):
                raise KdcacheError(f"{key}: shapes differ between checkpoints "
                                   f"({tuple(state[key].shape)} vs {tuple(last.shape)})")
            total += state[key].detach().to("cpu", torch.float64)
        out[key] = (total / len(states)).to(last.dtype)
    return out


def average_checkpoint_files(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Load the plain state_dicts ``paths`` (no unpickling) and average them."""
    from kdcache.models.checkpoint import load_state_dict_file, strip_prefix

    return average_state_dicts([strip_prefix(load_state_dict_file(Path(p))) for p in paths])


def save_epoch_weights(model: nn.Module, folder: Path, epoch: int, keep: int) -> Path:
    """Write ``folder/model_<epoch>.pt`` (the plain state_dict of ``model``) atomically, then delete
    the epoch files older than the last ``keep`` (disk stays bounded by ``keep`` models)."""
    from kdcache.models.checkpoint import strip_prefix

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = epoch_file(folder, epoch)
    tmp = path.with_suffix(".pt.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in strip_prefix(model.state_dict()).items()}
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old_epoch, old in epoch_checkpoints(folder)[:-max(int(keep), 1)]:
        if old_epoch != epoch:
            old.unlink(missing_ok=True)
    return path


def average_into(model: nn.Module, folder: Path, num: int) -> list[int]:
    """Load the average of the last ``num`` epoch checkpoints of ``folder`` into ``model`` (strictly).

    Returns the averaged epochs."""
    chosen = last_checkpoints(folder, num)
    state = average_checkpoint_files([p for _, p in chosen])
    from kdcache.models.checkpoint import load_weights

    load_weights(model, state, f"{folder} (average of epochs {chosen[0][0]}-{chosen[-1][0]})")
    return [e for e, _ in chosen]


def average_model_folder(model_dir: str | Path, num: int, out: str | Path | None = None) -> tuple[Path, list[int]]:
    """``kdcache average``: average the last ``num`` epoch checkpoints of a model folder.

    - a kdcache model directory (``config.json``; checkpoints in ``checkpoints/``): writes a model
      directory, ``out`` or ``model_dir`` itself (``model.pt`` replaced, the epochs recorded in
      ``config.json`` under ``extra.averaged``);
    - a folder of ``model_<epoch>.pt`` files (WeSpeaker's ``exp/*/models``): writes the averaged
      state_dict to ``out`` or ``model_dir/avg_model.pt``.

    Returns the path written and the averaged epochs. Nothing is written on error.
    """
    from kdcache.models.checkpoint import CONFIG_FILE, build_speaker_model, read_config, save_model_dir

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise KdcacheError(f"{model_dir}: model folder not found")
    if (model_dir / CONFIG_FILE).is_file():
        config = read_config(model_dir)
        model = build_speaker_model(config)
        epochs = average_into(model, model_dir / CHECKPOINT_DIR, num)
        config.extra["averaged"] = {"epochs": epochs, "num": len(epochs)}
        target = Path(out) if out is not None else model_dir
        save_model_dir(target, model, config)
        return target, epochs
    chosen = last_checkpoints(model_dir, num)
    state = average_checkpoint_files([p for _, p in chosen])
    target = Path(out) if out is not None else model_dir / "avg_model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target, [e for e, _ in chosen]
