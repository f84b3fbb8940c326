"""Commands for data and models: make-synthetic-corpus, evaluate, import-wespeaker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import Count, Real, device_option, seed_option


@click.command("make-synthetic-corpus")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--speakers", default=200, show_default=True, type=Count(2, 10_000), help="Training speakers.")
@click.option("--utterances-per-speaker", default=20, show_default=True, type=Count(2, 1000),
              help="At least 2: trials pair two utterances of a speaker.")
@click.option("--seconds", default=3.0, show_default=True, type=Real(0.5, 60), help="Utterance length (s).")
@click.option("--test-speakers", default=40, show_default=True, type=Count(2, 10_000), help="Held-out speakers for the trials.")
@seed_option(help="Same seed, same bytes.")
def make_synthetic_corpus_cmd(out: Path, speakers: int, utterances_per_speaker: int, seconds: float, test_speakers: int, seed: int) -> None:
    """Write a deterministic synthetic speaker corpus to OUT.

    \b
    OUT/wav/<spk>/<session>/<nnnnn>.wav   16 kHz mono PCM16 (a VoxCeleb tree)
    OUT/train/{wav.scp,utt2spk}           training speakers
    OUT/test/{wav.scp,utt2spk,trials.txt} held-out speakers, VoxCeleb-format trials
    OUT/noise/*.wav, OUT/rir/*.wav        small MUSAN/RIRS-like augmentation sets
    """
    from tqdm import tqdm

    from kdcache.data.synthetic import make_synthetic_corpus

    total = (speakers + test_speakers) * utterances_per_speaker
    with tqdm(total=total, desc="synthesising", unit="utt", mininterval=1.0) as bar:
        make_synthetic_corpus(
            out, speakers=speakers, utterances_per_speaker=utterances_per_speaker, seconds=seconds,
            test_speakers=test_speakers, seed=seed, progress=bar.update,
        )
    click.echo(f"wrote {total} utterances of {speakers + test_speakers} speakers to {out}")


@click.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Model directory.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Corpus holding the trial utterances.")
@click.option("--trials", required=True, type=click.Path(path_type=Path), help="Trial list (VoxCeleb or Kaldi format).")
@click.option("--score-norm", type=click.Choice(["none", "asnorm"]), default="none", show_default=True)
@click.option("--cohort", type=click.Path(path_type=Path), default=None, help="Cohort corpus (mean subtraction; AS-norm cohort).")
@click.option("--top-n", default=300, show_default=True, type=Count(1, 10_000_000), help="AS-norm top-N cohort size.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write metrics as JSON here.")
@device_option(default="cpu")
def evaluate_cmd(model_dir, data, trials, score_norm, cohort, top_n, out_path, device) -> None:
    """Score a trial list with a model: cosine (optionally AS-norm), EER and minDCF(0.01)."""
    from kdcache.evaluate.verification import EvalConfig, evaluate_model, write_metrics

    metrics = evaluate_model(EvalConfig(
        model=str(model_dir), data=str(data), trials=str(trials), score_norm=score_norm,
        cohort=str(cohort) if cohort else None, top_n=top_n, device=device,
    ))
    click.echo(f"EER {100 * metrics['eer']:.2f}%  minDCF(0.01) {metrics['min_dcf']:.4f}  ({metrics['num_trials']} trials)")
    if out_path:
        write_metrics(metrics, out_path)
        click.echo(f"metrics written to {out_path}")


@click.command("import-wespeaker")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--arch", required=True, help="Architecture: xvector, resnet34, resnet293, ecapa_c512, ecapa_c1024, campplus.")
@click.option("--speakers", "speakers_file", required=True, type=click.Path(path_type=Path),
              help="Speaker list, one id per line, in class-index order (WeSpeaker's spk2id order).")
@click.option("--model-args", default="{}", help="JSON of architecture arguments that differ from WeSpeaker's defaults.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model directory to write.")
def import_wespeaker_cmd(checkpoint, arch, speakers_file, model_args, out) -> None:
    """Turn a WeSpeaker avg_model.pt (a state_dict with projection.weight) into a model directory."""
    from kdcache.errors import KdcacheError
    from kdcache.models.wespeaker_import import import_wespeaker

    try:
        args = json.loads(model_args)
    except json.JSONDecodeError as bad:
        raise KdcacheError(f"--model-args: not JSON ({bad})") from None
    config = import_wespeaker(checkpoint, arch, speakers_file, out, model_args=args)
    click.echo(f"imported {arch} ({config.num_classes} speakers, embedding {config.embed_dim}) to {out}")


COMMANDS = [make_synthetic_corpus_cmd, evaluate_cmd, import_wespeaker_cmd]
