"""Training commands: train-teacher (and train-student, the phase-2 trainer)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import device_option, workers_option
from kdcache.errors import KdcacheError


def parse_model_args(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as bad:
        raise KdcacheError(f"--model-args: not JSON ({bad})") from None
    if not isinstance(value, dict):
        raise KdcacheError("--model-args: expected a JSON object, e.g. '{\"m_channels\": 8}'")
    return value


def augment_options(func):
    func = click.option("--augment-prob", default=0.6, show_default=True, type=click.FloatRange(0, 1),
                        help="Probability that a crop is augmented (reverb or noise).")(func)
    func = click.option("--augment-reverb", type=click.Path(exists=True, file_okay=False), default=None,
                        help="Folder of room impulse responses (.wav) for reverberation.")(func)
    func = click.option("--augment-noise", type=click.Path(exists=True, file_okay=False), default=None,
                        help="Folder of noise recordings (.wav), added at a random SNR of 0-15 dB.")(func)
    return func


def augment_config(noise, reverb, prob):
    if not noise and not reverb:
        return None
    from kdcache.data.augment import AugmentConfig

    return AugmentConfig(noise_dir=noise, reverb_dir=reverb, prob=prob)


@click.command("train-teacher")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training corpus (VoxCeleb tree or wav.scp folder).")
@click.option("--arch", default="resnet34", show_default=True,
              help="xvector, resnet34, resnet293, ecapa_c512, ecapa_c1024 or campplus.")
@click.option("--model-args", default="{}", show_default=True,
              help="JSON of architecture arguments, e.g. '{\"m_channels\": 16}' for a narrow ResNet on CPU.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model directory to write.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--crop-seconds", default=2.0, show_default=True, type=click.FloatRange(0.1), help="Random crop length (2.0 s = 200 frames).")
@click.option("--crops-per-utt", default=1, show_default=True, type=click.IntRange(1), help="Random crops of each utterance per epoch.")
@click.option("--lr", default=0.1, show_default=True, type=click.FloatRange(0, min_open=True), help="Initial learning rate (decays exponentially to 5e-5).")
@click.option("--margin", default=0.2, show_default=True, type=click.FloatRange(0), help="Final AAM margin (ramped from 0).")
@click.option("--seed", default=0, show_default=True, type=int)
@augment_options
@workers_option()
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@device_option()
def train_teacher_cmd(data, arch, model_args, out, epochs, batch_size, crop_seconds, crops_per_utt, lr, margin, seed,
                      augment_noise, augment_reverb, augment_prob, num_workers, resume, device) -> None:
    """Train a speaker model with AAM-softmax on fresh random crops (WeSpeaker's recipe, scaled to
    --epochs): SGD Nesterov, exponential LR with warm-up, margin 0 -> 0.2, checkpoint every epoch."""
    from kdcache.train.teacher import TeacherTrainConfig, train_teacher

    out_dir = train_teacher(TeacherTrainConfig(
        data=str(data), arch=arch, out=str(out), epochs=epochs, batch_size=batch_size, crop_seconds=crop_seconds,
        lr=lr, margin=margin, num_workers=num_workers, device=device, seed=seed, resume=resume,
        crops_per_utt=crops_per_utt, model_args=parse_model_args(model_args),
        augment=augment_config(augment_noise, augment_reverb, augment_prob),
    ))
    click.echo(f"model written to {out_dir}")


COMMANDS = [train_teacher_cmd]
