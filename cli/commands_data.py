"""Commands for data and models: make-synthetic-corpus, evaluate, import-wespeaker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.config_file import config_option, save_settings_next_to
from cli.options import SCORE_NORMS, Count, Real, device_option, seed_option


@click.command("make-synthetic-corpus")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--speakers", default=200, show_default=True, type=Count(2, 10_000), help="Training speakers.")
@click.option("--utterances-per-speaker", default=20, show_default=True, type=Count(2, 1000),
              help="At least 2: trials pair two utterances of a speaker.")
@click.option("--seconds", default=3.0, show_default=True, type=Real(0.5, 60), help="Utterance length (s).")
@click.option("--test-speakers", default=40, show_default=True, type=Count(2, 10_000), help="Held-out speakers for the trials.")
@seed_option(help="Same seed, same bytes.")
@click.option("--test-speaker-offset", default=None, type=Count(0, 1_000_000),
              help="Speaker index of the first test speaker [default: --speakers]. Corpora with the same offset "
                   "(and seed, seconds, test options) share byte-identical test speakers and trials, whatever "
                   "their --speakers.")
@click.option("--test-utterances-per-speaker", default=None, type=Count(2, 1000),
              help="Utterances of each test speaker [default: --utterances-per-speaker].")
def make_synthetic_corpus_cmd(out: Path, speakers: int, utterances_per_speaker: int, seconds: float, test_speakers: int, seed: int,
                              test_speaker_offset: int | None, test_utterances_per_speaker: int | None) -> None:
    """Write a deterministic synthetic speaker corpus to OUT.

    \b
    OUT/wav/<spk>/<session>/<nnnnn>.wav   16 kHz mono PCM16 (a VoxCeleb tree)
    OUT/train/{wav.scp,utt2spk}           training speakers
    OUT/test/{wav.scp,utt2spk,trials.txt} held-out speakers, VoxCeleb-format trials
    OUT/noise/*.wav, OUT/rir/*.wav        small MUSAN/RIRS-like augmentation sets
    """
    from kdcache.data.synthetic import make_synthetic_corpus
    from kdcache.progress import progress_bar

    total = speakers * utterances_per_speaker + test_speakers * (test_utterances_per_speaker or utterances_per_speaker)
    with progress_bar(total=total, desc="synthesising", unit="utt", mininterval=1.0) as bar:
        make_synthetic_corpus(
            out, speakers=speakers, utterances_per_speaker=utterances_per_speaker, seconds=seconds,
            test_speakers=test_speakers, seed=seed, progress=bar.update,
            test_speaker_offset=test_speaker_offset, test_utterances_per_speaker=test_utterances_per_speaker,
        )
    click.echo(f"wrote {total} utterances of {speakers + test_speakers} speakers to {out}")


@click.command("evaluate")
@config_option
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model directory, or an ONNX file written by `kdcache export --format onnx`.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Corpus holding the trial utterances.")
@click.option("--trials", required=True, type=click.Path(path_type=Path), help="Trial list (VoxCeleb or Kaldi format).")
@click.option("--score-norm", type=SCORE_NORMS, default="none", show_default=True)
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
        save_settings_next_to(Path(out_path).with_suffix(".config.yaml"))
        click.echo(f"metrics written to {out_path} (settings: {Path(out_path).with_suffix('.config.yaml')})")


@click.command("import-wespeaker")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--arch", default=None,
              help="Architecture: xvector, resnet34, resnet293, ecapa_c512, ecapa_c1024, campplus [default: the "
                   "model named in the folder's config.yaml; required for a bare avg_model.pt].")
@click.option("--speakers", "speakers_file", default=None, type=click.Path(path_type=Path),
              help="Speaker list, one id per line, in class-index order (WeSpeaker's spk2id order), used as given.")
@click.option("--utt2spk", default=None, type=click.Path(path_type=Path),
              help="The training utt2spk: its sorted distinct speakers, WeSpeaker's class order.")
@click.option("--data", default=None, type=click.Path(path_type=Path),
              help="The training corpus (wav.scp + utt2spk folder or VoxCeleb tree): its sorted speakers.")
@click.option("--model-args", default="{}", help="JSON of architecture arguments that differ from the config's "
                                               "(or, for a bare avg_model.pt, from WeSpeaker's defaults).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model directory to write.")
def import_wespeaker_cmd(source, arch, speakers_file, utt2spk, data, model_args, out) -> None:
    """Turn a WeSpeaker model into a kdcache model directory.

    \b
    SOURCE is a WeSpeaker model folder (avg_model.pt + config.yaml: the architecture, model_args, head
    scale, margin and fbank settings are read from config.yaml), or a bare avg_model.pt (then --arch).
    The speakers are the head's class order: WeSpeaker numbers the sorted training speaker ids, so pass
    --utt2spk or --data of the training set (or --speakers, a list used as given). A speed-perturbed
    model's head (3 x the speakers) keeps its first rows, the classes of speed 1.0.
    \b
    Example:
      kdcache import-wespeaker voxceleb_resnet34 --utt2spk data/vox2_dev/utt2spk --out teacher
    """
    from kdcache.errors import KdcacheError
    from kdcache.models.wespeaker_import import (
        import_wespeaker,
        import_wespeaker_dir,
        read_speaker_list,
        speakers_from_utt2spk,
    )

    try:
        args = json.loads(model_args)
    except json.JSONDecodeError as bad:
        raise KdcacheError(f"--model-args: not JSON ({bad})") from None
    if not isinstance(args, dict):
        raise KdcacheError("--model-args: expected a JSON object")
    given = [name for name, value in (("--speakers", speakers_file), ("--utt2spk", utt2spk), ("--data", data)) if value]
    if len(given) > 1:
        raise KdcacheError(f"{' and '.join(given)}: give one source of speakers")
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    bare = not Path(source).is_dir()
    if bare and (arch is None or not given):
        raise KdcacheError(f"{source}: a bare checkpoint needs --arch and the speakers (--speakers, --utt2spk or "
                           "--data); or pass the WeSpeaker folder holding avg_model.pt and config.yaml")
    speakers, where = None, ""
    if speakers_file:
        speakers, where = read_speaker_list(speakers_file), str(speakers_file)
    elif utt2spk:
        speakers, where = speakers_from_utt2spk(utt2spk), f"{utt2spk} (sorted)"
    elif data:
        from kdcache.data.corpus import load_corpus

        speakers, where = load_corpus(data).speakers, f"{data} (sorted)"
    if bare:
        config = import_wespeaker(source, arch, where, out, model_args=args, log=log, speakers=speakers)
    else:
        config = import_wespeaker_dir(source, out, speakers=speakers, speakers_source=where, arch=arch,
                                      model_args=args, log=log)
    click.echo(f"imported {config.arch} ({config.num_classes} speakers, embedding {config.embed_dim}) to {out}")


COMMANDS = [make_synthetic_corpus_cmd, evaluate_cmd, import_wespeaker_cmd]
