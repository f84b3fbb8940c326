"""Model commands: average (checkpoint averaging) and export (WeSpeaker folder or ONNX)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import Count


def num_avg_option(func):
    """``--num-avg N`` of train-teacher and train-student."""
    return click.option(
        "--num-avg", default=None, type=Count(1, 100_000),
        help="Average the weights of the last N epoch checkpoints into the final model, as WeSpeaker's "
             "average_model.py (10 of 150 epochs) [default: round(--epochs / 15), at least 1: no averaging "
             "below 23 epochs].",
    )(func)


@click.command("average")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--num", default=None, type=Count(1, 100_000),
              help="Average the last N epoch checkpoints [default: the training run's --num-avg; 10 (WeSpeaker's "
                   "recipe) for a folder of model_<epoch>.pt].")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Write here instead: a model directory (for a kdcache model) or a .pt file (for a folder of "
                   "model_<epoch>.pt) [default: MODEL_DIR itself, or MODEL_DIR/avg_model.pt].")
def average_cmd(model_dir: Path, num: int | None, out: Path | None) -> None:
    """Average the weights of the last N epoch checkpoints, as WeSpeaker's average_model.py.

    \b
    MODEL_DIR is a kdcache model directory (its checkpoints/model_<epoch>.pt; model.pt is replaced)
    or a folder of model_<epoch>.pt files such as WeSpeaker's exp/<run>/models (writes avg_model.pt).
    Every floating-point entry is the mean over the N checkpoints, batch-norm running statistics
    included; integer counters (num_batches_tracked) are the last checkpoint's.
    """
    from kdcache.models.average import average_model_folder

    if num is None:
        num = _recorded_num_avg(model_dir) or 10
    target, epochs = average_model_folder(model_dir, num, out)
    click.echo(f"averaged epochs {', '.join(map(str, epochs))} ({len(epochs)} checkpoints) -> {target}")


def _recorded_num_avg(model_dir: Path) -> int | None:
    import json

    try:
        training = json.loads((Path(model_dir) / "config.json").read_text()).get("extra", {}).get("training", {})
        if training.get("num_avg"):
            return int(training["num_avg"])
        from kdcache.models.average import default_num_avg

        return default_num_avg(int(training["epochs"])) if training.get("epochs") else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


@click.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["wespeaker", "onnx"]), required=True,
              help="wespeaker: a folder with avg_model.pt + config.yaml (WeSpeaker's layout); onnx: the "
                   "embedding model, input feats [B, T, 80] (fbank after CMN), output embs, dynamic B and T.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder to write (wespeaker) or .onnx file (onnx).")
def export_cmd(model_dir: Path, fmt: str, out: Path) -> None:
    """Export a model directory for WeSpeaker or for an ONNX runtime.

    \b
    Examples:
      kdcache export demo/student-dkd --format wespeaker --out deploy/student
      kdcache export demo/student-dkd --format onnx --out deploy/student.onnx
      kdcache evaluate --model deploy/student.onnx --data demo/test --trials demo/test/trials.txt
    """
    from kdcache.models.export import export_model

    target, warnings = export_model(model_dir, fmt, out)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"exported {model_dir} as {fmt} to {target}")


COMMANDS = [average_cmd, export_cmd]
