"""Training commands: train-teacher (and train-student, the phase-2 trainer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from cli.commands_model import num_avg_option
from cli.config_file import RESOLVED_NAME, config_option, save_settings_next_to
from cli.options import (Count, MethodsHelpCommand, Real, device_option, method_choice, real_list, seed_option,
                         workers_option)
from kdcache.errors import KdcacheError


def parse_json_object(text: str, option: str, example: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as bad:
        raise KdcacheError(f"{option}: not JSON ({bad})") from None
    if not isinstance(value, dict):
        raise KdcacheError(f"{option}: expected a JSON object, e.g. '{example}'")
    return value


def parse_model_args(text: str) -> dict:
    return parse_json_object(text, "--model-args", '{"m_channels": 8}')


def margin_options(func):
    func = click.option("--margin-full-epoch", default=None, type=Count(1, 100_000),
                        help="1-based epoch from which the margin is final [default: 40/150 of --epochs].")(func)
    func = click.option("--margin-start-epoch", default=None, type=Count(1, 100_000),
                        help="1-based epoch where the margin ramp starts [default: 20/150 of --epochs]. Short CPU "
                             "runs learn better with the margin late, or with --margin 0.")(func)
    return func


def grad_clip_option(func):
    return click.option(
        "--grad-clip", default=0.0, show_default=True, type=Real(0, 1e6),
        help="Clip the gradients' global L2 norm to this before each step (0: no clipping). A tiny student "
             "under dkd --beta 8 can collapse to a constant in its first steps; 5 kept it training (README).",
    )(func)


def augment_options(func):
    func = click.option("--augment-prob", default=0.6, show_default=True, type=Real(0, 1),
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
@config_option
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training corpus (VoxCeleb tree or wav.scp folder).")
@click.option("--arch", default="resnet34", show_default=True,
              help="xvector, resnet34, resnet293, ecapa_c512, ecapa_c1024 or campplus.")
@click.option("--model-args", default="{}", show_default=True,
              help="JSON of architecture arguments, e.g. '{\"m_channels\": 16}' for a narrow ResNet on CPU.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model directory to write.")
@click.option("--epochs", default=10, show_default=True, type=Count(1, 100_000))
@click.option("--batch-size", default=64, show_default=True, type=Count(1, 1 << 16))
@click.option("--crop-seconds", default=2.0, show_default=True, type=Real(0.1, 60), help="Random crop length (2.0 s = 200 frames).")
@click.option("--crops-per-utt", default=1, show_default=True, type=Count(1, 1000), help="Random crops of each utterance per epoch.")
@click.option("--lr", default=0.1, show_default=True, type=Real(0, 100, min_open=True), help="Initial learning rate.")
@click.option("--final-lr", default=5e-5, show_default=True, type=Real(0, 100, min_open=True),
              help="Learning rate at the end (exponential decay from --lr; WeSpeaker: 5e-5 after 150 epochs).")
@click.option("--margin", default=0.2, show_default=True, type=Real(0, 1.5), help="Final AAM margin (radians; ramped from 0).")
@margin_options
@grad_clip_option
@num_avg_option
@seed_option()
@augment_options
@workers_option()
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@device_option()
def train_teacher_cmd(data, arch, model_args, out, epochs, batch_size, crop_seconds, crops_per_utt, lr, final_lr, margin,
                      margin_start_epoch, margin_full_epoch, grad_clip, num_avg, seed,
                      augment_noise, augment_reverb, augment_prob, num_workers, resume, device) -> None:
    """Train a speaker model with AAM-softmax on fresh random crops (WeSpeaker's recipe, scaled to
    --epochs): SGD Nesterov, exponential LR with warm-up, margin 0 -> 0.2, checkpoint every epoch."""
    from kdcache.train.teacher import TeacherTrainConfig, train_teacher

    out_dir = train_teacher(TeacherTrainConfig(
        data=str(data), arch=arch, out=str(out), epochs=epochs, batch_size=batch_size, crop_seconds=crop_seconds,
        lr=lr, final_lr=final_lr, margin=margin, margin_start_epoch=margin_start_epoch,
        margin_full_epoch=margin_full_epoch, grad_clip=grad_clip, num_workers=num_workers, device=device, seed=seed,
        resume=resume, crops_per_utt=crops_per_utt, model_args=parse_model_args(model_args),
        augment=augment_config(augment_noise, augment_reverb, augment_prob), num_avg=num_avg,
    ))
    save_settings_next_to(Path(out_dir) / RESOLVED_NAME)
    click.echo(f"model written to {out_dir}")


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    return real_list(text, option, maximum=1e3)


@click.command("train-student", cls=MethodsHelpCommand)
@config_option
@click.option("--cache", default=None, help="Teacher cache: a path, file://, http(s):// or s3:// URL.")
@click.option("--online-teacher", default=None, type=click.Path(path_type=Path),
              help="Instead of --cache: a teacher model directory, run in memory on each batch's fresh random "
                   "crops (online KD, for comparison with the cache; docs/online.md).")
@click.option("--crop-seconds", default=None, type=Real(0.1, 60),
              help="--online-teacher only: random crop length [default: 2.0, as build-teacher-cache].")
@click.option("--crops-per-utt", default=None, type=Count(1, 1000),
              help="--online-teacher only: fresh crops of each utterance per epoch [default: 1]; with K, an epoch "
                   "has the steps of a cache built with --crops-per-utt K.")
@click.option("--allow-unknown-speakers", is_flag=True,
              help="--online-teacher only: train on corpus speakers the teacher never saw (label -1), as the build.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="The corpus the cache was built from (crops are replayed from it); with --online-teacher, the corpus to crop.")
@click.option("--student", default="xvector", show_default=True,
              help="xvector, resnet34, resnet293, ecapa_c512, ecapa_c1024 or campplus.")
@click.option("--model-args", default="{}", show_default=True, help="JSON of student architecture arguments (narrow CPU variants).")
@click.option("--loss", type=method_choice(), default="dkd", show_default=True,
              help="The training method (its options: --loss-args; list below).")
@click.option("--loss-args", default="{}", show_default=True,
              help="JSON of the method's options, e.g. '{\"beta\": 8, \"temperature\": 2, \"logit_stand\": true}'. "
                   "The flags below set the same options.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Student model directory.")
@click.option("--epochs", default=10, show_default=True, type=Count(1, 100_000))
@click.option("--batch-size", default=128, show_default=True, type=Count(1, 1 << 16),
              help="Rows per batch: a multiple of the cache's --chunk-rows (64), or a divisor of it; "
                   "another size is rounded down to one, with a note.")
@click.option("--lr", default=0.1, show_default=True, type=Real(0, 100, min_open=True), help="Initial learning rate.")
@click.option("--final-lr", default=5e-5, show_default=True, type=Real(0, 100, min_open=True),
              help="Learning rate at the end (exponential decay from --lr).")
@click.option("--margin", default=0.2, show_default=True, type=Real(0, 1.5), help="Student AAM margin (radians; ramped from 0).")
@margin_options
@grad_clip_option
@num_avg_option
@click.option("--kd-weight", default=None, type=Real(0, 1e4), help="Option kd_weight of embedding and kd [default: 1].")
@click.option("--temperature", default=None, type=Real(0, 1e3, min_open=True),
              help="Option temperature T of kd and dkd [default: 1] (ENSKD: 1, with beta 2; mdistiller: 4, with beta 8).")
@click.option("--alpha", default=None, type=Real(0, 1e4), help="Option alpha of dkd: weight of TCKD [default: 1].")
@click.option("--beta", default=None, type=Real(0, 1e4, min_open=True),
              help="Option beta of dkd: weight of NCKD [default: 2] (ENSKD: 2; mdistiller: 8).")
@click.option("--kd-warmup-epochs", default=None, type=Real(0, 1e5),
              help="Option kd_warmup_epochs of dkd: the weight ramps linearly per step over this many epochs, "
                   "min(progress/warmup, 1) [default: ENSKD's 20/150 of --epochs; 0: full weight from the first step].")
@click.option("--teacher-margin", default=None, type=Real(0, 1.5),
              help="Option teacher_margin of dkd: AAM margin put back on the cached margin-free teacher target logit "
                   "[default: the margin the teacher was trained with, from the cache's provenance; ENSKD: 0.2].")
@click.option("--temperatures", default=None,
              help="Option temperatures of mlkd and imlkd, each in (0, 1000] [default: 1,2,3,4,5].")
@click.option("--eta", default=None, type=Real(0, 1e4, min_open=True), help="Option eta of imlkd: weight of the KD terms [default: 1].")
@click.option("--embedding-weight", default=None, type=Real(0, 1e4),
              help="Option embedding_weight of imlkd: weight of ||P e_s - e_t||^2 [default: 1].")
@click.option("--verify-inputs", default=0, show_default=True, type=Count(0, 1 << 31),
              help="Recompute the input crc of N random rows and refuse to train if the corpus changed.")
@click.option("--allow-incomplete", is_flag=True, help="Train on the finished shards of an incomplete cache.")
@click.option("--trials", type=click.Path(path_type=Path), default=None, help="Evaluate at the end on this trial list...")
@click.option("--eval-data", type=click.Path(path_type=Path), default=None, help="...whose utterances are in this corpus.")
@seed_option()
@augment_options
@workers_option()
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@device_option()
def train_student_cmd(cache, online_teacher, crop_seconds, crops_per_utt, allow_unknown_speakers, data, student, model_args, loss, loss_args, out, epochs, batch_size, lr, final_lr, margin,
                      margin_start_epoch, margin_full_epoch, grad_clip, num_avg, kd_weight, temperature, alpha,
                      beta, kd_warmup_epochs, teacher_margin, temperatures, eta, embedding_weight, verify_inputs,
                      allow_incomplete, trials, eval_data, seed, augment_noise, augment_reverb, augment_prob, num_workers,
                      resume, device) -> None:
    """Train a student against a teacher cache; the teacher itself is never loaded. (With
    --online-teacher DIR instead of --cache, the teacher runs on each batch's fresh crops: online KD,
    for comparison with the cache.)

    \b
    Example (NSKD / decoupled KD with beta 8):
      kdcache train-student --cache demo/cache.zarr --data demo/train --student xvector \\
          --loss dkd --beta 8 --out demo/student-dkd --trials demo/test/trials.txt --eval-data demo/test
    """
    from kdcache.train.student import StudentTrainConfig, train_student

    if (cache is None) == (online_teacher is None):
        raise KdcacheError("give exactly one of --cache CACHE and --online-teacher DIR")
    if cache is not None and (crop_seconds is not None or crops_per_utt is not None or allow_unknown_speakers):
        raise KdcacheError("--crop-seconds, --crops-per-utt and --allow-unknown-speakers go with --online-teacher; "
                           "a cache's crops were fixed when it was built")
    if online_teacher is not None and (verify_inputs or allow_incomplete):
        raise KdcacheError("--verify-inputs and --allow-incomplete go with --cache; --online-teacher reads no cache")
    if (trials is None) != (eval_data is None):
        raise KdcacheError("--trials and --eval-data go together")
    if trials is not None:  # before training: a bad list must not cost the epochs
        from kdcache.evaluate.verification import check_trials

        check_trials(trials, eval_data)
    online = {} if online_teacher is None else {
        "online_teacher": str(online_teacher), "crop_seconds": 2.0 if crop_seconds is None else crop_seconds,
        "crops_per_utt": crops_per_utt or 1, "allow_unknown_speakers": allow_unknown_speakers}
    result = train_student(StudentTrainConfig(
        cache=None if cache is None else str(cache), **online, data=str(data), student=student, loss=loss, out=str(out), model_args=parse_model_args(model_args),
        epochs=epochs, batch_size=batch_size, lr=lr, final_lr=final_lr, margin=margin,
        margin_start_epoch=margin_start_epoch, margin_full_epoch=margin_full_epoch, grad_clip=grad_clip,
        num_workers=num_workers, device=device, seed=seed, resume=resume, kd_weight=kd_weight, temperature=temperature,
        alpha=alpha, beta=beta, loss_args=parse_json_object(loss_args, "--loss-args", '{"beta": 8}'),
        kd_warmup_epochs=kd_warmup_epochs, teacher_margin=teacher_margin,
        temperatures=None if temperatures is None else parse_floats(temperatures, "--temperatures"), eta=eta,
        embedding_weight=embedding_weight,
        verify_inputs=verify_inputs, allow_incomplete=allow_incomplete,
        augment=augment_config(augment_noise, augment_reverb, augment_prob), num_avg=num_avg,
    ))
    save_settings_next_to(Path(out) / RESOLVED_NAME)
    source = "online teacher" if online_teacher is not None else "cache"
    click.echo(f"student written to {out} ({source} fingerprint {result['cache_fingerprint'][:16]})")
    if trials is not None and int(os.environ.get("RANK", "0")) == 0:
        from kdcache.evaluate.verification import EvalConfig, evaluate_model, write_metrics

        metrics = evaluate_model(EvalConfig(model=str(out), data=str(eval_data), trials=str(trials)))
        metrics["cache_fingerprint"] = result["cache_fingerprint"]
        metrics["teacher_source"] = source  # "cache" or "online teacher"
        metrics["loss"] = loss
        write_metrics(metrics, Path(out) / "metrics.json")
        click.echo(f"EER {100 * metrics['eer']:.2f}%  minDCF(0.01) {metrics['min_dcf']:.4f}  -> {Path(out) / 'metrics.json'}")


COMMANDS = [train_teacher_cmd, train_student_cmd]
