"""A tiny teacher in WeSpeaker's model-folder layout, for the recipe tests.

WeSpeaker's released models (and ``exp/<run>/`` after its training) are a folder holding
``avg_model.pt``, a plain state_dict whose AAM head is ``projection.weight``, and ``config.yaml``
(``model: ResNet34``, ``model_args``, ``projection_args``, ... as examples/voxceleb/v2/conf/resnet.yaml plus
the ``embed_dim`` / ``num_class`` that its train.py adds). When kdcache has ``export --format wespeaker``
that writes the folder; otherwise this helper writes the same layout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

from kdcache.models.checkpoint import load_state_dict_file, read_config
from kdcache.train.teacher import TeacherTrainConfig, train_teacher

TEACHER_ARGS = {"m_channels": 4, "embed_dim": 32}


def has_command(name: str, option: str | None = None) -> bool:
    from cli.main import main

    cmd = main.commands.get(name)
    return cmd is not None and (option is None or any(option in p.opts for p in cmd.params))


def import_reads_model_folder() -> bool:
    """``import-wespeaker`` reads a WeSpeaker model folder's config.yaml (it no longer requires --arch)."""
    from cli.main import main

    cmd = main.commands.get("import-wespeaker")
    return cmd is not None and not any(p.name == "arch" and p.required for p in cmd.params)


def train_tiny_teacher(train_data: Path, out: Path) -> Path:
    """A ResNet34 with m_channels 4 and 32-dim embeddings, 2 epochs of 1 s crops (a kdcache model dir)."""
    train_teacher(TeacherTrainConfig(
        data=str(train_data), arch="resnet34", out=str(out), epochs=2, batch_size=8, crop_seconds=1.0,
        num_workers=0, device="cpu", model_args=dict(TEACHER_ARGS), show_progress=False,
    ))
    return out


def write_wespeaker_folder(model_dir: Path, out: Path, speed_perturb: bool = True) -> Path:
    """``out/{avg_model.pt,config.yaml}`` from a kdcache ResNet34 model directory.

    ``speed_perturb``: as WeSpeaker's speed-perturbed recipes, the head gets 3 x S rows (speeds 1.0, 0.9,
    1.1: the first S rows are the speakers) and the config says ``speed_perturb: True``.
    """
    env_python = [sys.executable, "-m", "cli.main"]
    if has_command("export", "--format"):
        subprocess.run([*env_python, "export", str(model_dir), "--format", "wespeaker", "--out", str(out)],
                       check=True, capture_output=True, text=True)
        config = yaml.safe_load((out / "config.yaml").read_text())
        state = load_state_dict_file(out / "avg_model.pt")
    else:
        kd = read_config(model_dir)
        state = load_state_dict_file(model_dir / "model.pt")
        args = kd.model_args
        config = {
            "model": "ResNet34",
            "model_init": None,
            "model_args": {"feat_dim": 80, "embed_dim": int(args["embed_dim"]), "pooling_func": "TSTP",
                           "two_emb_layer": False, "m_channels": int(args["m_channels"])},
            "projection_args": {"project_type": "arc_margin", "scale": 32.0, "easy_margin": False,
                                "embed_dim": int(args["embed_dim"]), "num_class": len(kd.speakers)},
            "margin_scheduler": "MarginScheduler",
            "margin_update": {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 20,
                              "fix_start_epoch": 40, "update_margin": True, "increase_type": "exp"},
            "dataset_args": {"speed_perturb": False, "num_frms": 200, "aug_prob": 0.6,
                             "fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25,
                                            "dither": 1.0}},
        }
    if speed_perturb:
        head = state["projection.weight"]
        g = torch.Generator().manual_seed(0)
        state["projection.weight"] = torch.cat([head, *(head + 0.1 * torch.randn(head.shape, generator=g)
                                                        for _ in range(2))])
        config["dataset_args"]["speed_perturb"] = True
        config["projection_args"]["num_class"] = int(state["projection.weight"].shape[0])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "avg_model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out
