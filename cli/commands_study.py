"""Study commands: saliency-eval (deletion / insertion curves), ig-steps (how many IG steps a saliency cache
needs) and compare (paired EER differences)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import INTEGRATED_INPUT_MODES, Count, Real, device_option, real_list, seed_option
from kdcache.errors import KdcacheError


@click.command("saliency-eval")
@click.option("--model", "models", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Model directory; repeat to compare (the first is the reference, e.g. the teacher).")
@click.option("--label", "labels", multiple=True, help="Name of each --model in the table and plot [default: folder names].")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Corpus of speakers the models know (the training corpus): the target is the utterance's speaker.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for saliency_eval.json and saliency_eval.png.")
@click.option("--utterances", default=32, show_default=True, type=Count(1, 1_000_000), help="Utterances drawn (seeded) from --data.")
@click.option("--crop-seconds", default=2.0, show_default=True, type=Real(0.1, 60), help="Centre crop of each utterance.")
@seed_option(help="Seed of the utterance draw.")
@click.option("--ig-steps", default=50, show_default=True, type=Count(2, 10_000), help="Riemann steps of integrated gradients.")
@click.option("--points", default=21, show_default=True, type=Count(2, 10_000), help="Fractions of frames from 0 to 1 on each curve.")
@click.option("--frame-score", type=click.Choice(["sum", "abs"]), default="sum", show_default=True,
              help="Frame saliency: sum of IG over the mel bins (evidence for the target) or of |IG|.")
@click.option("--batch-size", default=8, show_default=True, type=Count(1, 1 << 16), help="Crops per IG batch.")
@click.option("--ig-internal-batch-size", default=64, show_default=True, type=Count(1, 1 << 20),
              help="Bound on IG's internal batch of path points (memory).")
@device_option(default="cpu")
def saliency_eval_cmd(models, labels, data, out, utterances, crop_seconds, seed, ig_steps, points, frame_score,
                      batch_size, ig_internal_batch_size, device) -> None:
    """Deletion and insertion curves of each model's own integrated-gradient map (IML-KD's temporal fidelity).

    The most salient fbank frames are removed first (set to 0, the CMN mean and the IG baseline) or
    inserted first into an all-zero input; the curve is the target-speaker probability (softmax of the
    margin-free AAM logits) against the fraction of frames. Lower deletion AUC and higher insertion AUC
    mean a more faithful map. All models see the same crops.
    """
    from kdcache.evaluate.saliency_report import JSON_FILE, PNG_FILE, SaliencyEvalConfig, run_saliency_eval

    summary = run_saliency_eval(SaliencyEvalConfig(
        models=[str(m) for m in models], labels=list(labels), data=str(data), out=str(out), utterances=utterances,
        crop_seconds=crop_seconds, seed=seed, ig_steps=ig_steps, points=points, frame_score=frame_score,
        batch_size=batch_size, ig_internal_batch_size=ig_internal_batch_size, device=device,
    ))
    for m in summary["models"]:
        d, i = m["auc_deletion"], m["auc_insertion"]
        line = f"{m['label']}: deletion AUC {d['mean']:.4f} ± {d['ci95']:.4f}, insertion AUC {i['mean']:.4f} ± {i['ci95']:.4f}"
        if "vs_reference" in m:
            v = m["vs_reference"]
            line += (f"; vs {v['reference']}: curve gaps {v['mean_abs_deletion_gap']:.4f} / {v['mean_abs_insertion_gap']:.4f},"
                     f" frame-saliency r {v['frame_saliency_correlation']:.3f}")
        click.echo(line)
    click.echo(f"written {Path(out) / JSON_FILE} and {Path(out) / PNG_FILE}")


def _step_counts(_ctx, _param, text: str) -> tuple[int, ...]:
    """``--steps``: whole numbers, comma-separated (IgStepsConfig.check wants two or more distinct, each >= 2)."""
    try:
        values = real_list(text, "--steps", minimum=1.0, maximum=100_000)
    except KdcacheError as err:
        raise click.BadParameter(str(err)) from None
    if any(v != int(v) for v in values):
        raise click.BadParameter(f"{text!r}: step counts are whole numbers")
    return tuple(int(v) for v in values)


@click.command("ig-steps")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Model directory (the teacher of a saliency cache).")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Corpus of speakers the model knows (its training corpus): the target is the utterance's speaker.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for ig_steps.json and ig_steps.png.")
@click.option("--steps", default="5,10,25,50", show_default=True, callback=_step_counts,
              help="Step counts to compare, comma-separated; the largest is the reference.")
@click.option("--utterances", default=32, show_default=True, type=Count(1, 1_000_000), help="Utterances drawn (seeded) from --data.")
@click.option("--crop-seconds", default=1.0, show_default=True, type=Real(0.1, 60),
              help="Centre crop of each utterance (the cache's --crop-seconds).")
@click.option("--ig-durations", default="1.0", show_default=True,
              help="Segment durations (s) of the maps, as build-teacher-cache's --ig-durations.")
@click.option("--integrated-input", type=INTEGRATED_INPUT_MODES, default="weighted", show_default=True,
              help="IML-KD's integrated input, as build-teacher-cache's --integrated-input.")
@seed_option(help="Seed of the utterance draw.")
@click.option("--batch-size", default=8, show_default=True, type=Count(1, 1 << 16), help="Crops per IG batch.")
@click.option("--ig-internal-batch-size", default=64, show_default=True, type=Count(1, 1 << 20),
              help="Bound on IG's internal batch of path points (memory).")
@click.option("--label", default="", help="The model's name in the plot [default: its folder name].")
@device_option(default="cpu")
def ig_steps_cmd(model, data, out, steps, utterances, crop_seconds, ig_durations, integrated_input, seed, batch_size,
                 ig_internal_batch_size, label, device) -> None:
    """How many integrated-gradient steps a saliency cache needs (build-teacher-cache --ig-steps).

    For the same crops and each step count: IG's completeness error (the Riemann sum's miss of
    f(x) - f(0) for the target logit), the map's correlation with the map at the most steps, and what
    imlkd students are taught from it (the model's top-1 on the integrated input, and the KL of its
    softmax there to that at the most steps), with the CPU seconds per crop. Maps are made as the
    cache builder makes them.
    """
    from kdcache.evaluate.ig_steps import JSON_FILE, PNG_FILE, IgStepsConfig, run_ig_steps

    summary = run_ig_steps(IgStepsConfig(
        model=str(model), data=str(data), out=str(out), steps=steps, utterances=utterances, crop_seconds=crop_seconds,
        ig_durations=real_list(ig_durations, "--ig-durations", maximum=60.0), integrated_input=integrated_input,
        seed=seed, batch_size=batch_size, ig_internal_batch_size=ig_internal_batch_size, device=device, label=label,
    ))
    click.echo(f"{summary['label']}: {len(summary['utterances'])} crops, reference {summary['reference_steps']} steps")
    click.echo("steps  completeness error (rel.)  map r vs ref  integrated top-1  KL vs ref (nats)  CPU s/crop")
    for r in summary["rows"]:
        click.echo(f"{r['steps']:>5}  {r['completeness_error_relative']['mean']:>25.4f}  {r['map_correlation']['mean']:>12.4f}"
                   f"  {100 * r['integrated_top1']['mean']:>15.1f}%  {r['integrated_kl']['mean']:>16.4f}"
                   f"  {r['cpu_seconds_per_crop']['mean']:>10.3f}")
    click.echo(f"written {Path(out) / JSON_FILE} and {Path(out) / PNG_FILE}")


def _speaker_map(data: Path | None):
    from kdcache.evaluate.compare import voxceleb_speaker

    if data is None:
        return voxceleb_speaker
    from kdcache.data.corpus import load_corpus

    corpus = load_corpus(data)
    return lambda utt: corpus.by_id(utt).speaker


@click.command("compare")
@click.option("--a", "runs_a", required=True, multiple=True, type=click.Path(path_type=Path),
              help="System A: a run directory (holding its score file) or a score file; repeat once per seed.")
@click.option("--b", "runs_b", required=True, multiple=True, type=click.Path(path_type=Path),
              help="System B, likewise.")
@click.option("--name-a", default="A", show_default=True)
@click.option("--name-b", default="B", show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Corpus of the trial utterances, for their speakers [default: the first part of a VoxCeleb id].")
@click.option("--replicates", default=1000, show_default=True, type=Count(1, 1_000_000), help="Bootstrap draws of test speakers.")
@seed_option(help="Seed of the bootstrap.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the result as JSON here.")
def compare_cmd(runs_a, runs_b, name_a, name_b, data, replicates, seed, out_path) -> None:
    """EER(A) - EER(B) on the same trials: a paired bootstrap interval over test speakers, and a
    t-interval over seeds (paired when both systems have the same seeds).

    Score files are WeSpeaker's: `enroll test score target|nontarget` per line.
    """
    from kdcache.evaluate.compare import compare_runs

    result = compare_runs(list(runs_a), list(runs_b), _speaker_map(data), replicates, seed, (name_a, name_b))
    sp = result["over_speakers"]
    click.echo(f"EER {name_a} {100 * sp['eer_a']:.2f}% vs {name_b} {100 * sp['eer_b']:.2f}% "
               f"({sp['seeds_a']} and {sp['seeds_b']} seeds, {sp['num_trials']} trials, {sp['num_speakers']} speakers)")
    click.echo(f"difference {100 * sp['difference']:+.2f} points ({100 * sp['relative']:+.1f}% relative); "
               f"95% CI over test speakers [{100 * sp['low']:+.2f}, {100 * sp['high']:+.2f}]")
    seeds = result["over_seeds"]
    if "skipped" in seeds:
        click.echo(f"over seeds: skipped ({seeds['skipped']})")
    else:
        click.echo(f"95% CI over seeds ({seeds['method']}): [{100 * seeds['low']:+.2f}, {100 * seeds['high']:+.2f}] points")
        if "note" in seeds:
            click.echo(f"note: {seeds['note']}")
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        click.echo(f"written {out_path}")


COMMANDS = [saliency_eval_cmd, ig_steps_cmd, compare_cmd]
